"""The engine as a state machine under random CRM moves, QBO events and redeliveries.

Hypothesis drives one invoice through `decide.apply_upsert` (CRM snapshots with random
statuses and versions, some sent twice) and `qbo_events.apply` (every QBO event the
rules map), against the shipped rules, and checks after each step what must always hold
(issue 23: a stateful property test of the engine).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from syncd.const import QBO_EVENTS
from syncd.engine import decide, qbo_events
from syncd.engine.machine import InvoiceMachine
from syncd.messages import StatusSet
from syncd.models import ChangeSet, Envelope, Invoice, Outcome
from syncd.rules.model import load_rules

RULES = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.toml")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class InvoiceLife(RuleBasedStateMachine):
    """One invoice's life: what the CRM says and what QBO does to it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.machine = InvoiceMachine(RULES)
        self.invoice: Invoice | None = None
        self.version = 0
        self.sent: list[Envelope] = []
        self.moves: list[tuple[str | None, str]] = []  # every move applied
        self.highest = 0

    def teardown(self) -> None:
        self.loop.close()

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _upsert(self, env: Envelope) -> ChangeSet:
        changes = ChangeSet()
        ctx = decide.Context(
            envelope=env, machine=self.machine, now=NOW, changes=changes
        )
        self.invoice = self._run(decide.apply_upsert(ctx, self.invoice))
        self.moves += [(h.from_status, h.to_status) for h in changes.history]
        return changes

    @rule(status=st.sampled_from(RULES.statuses), step=st.sampled_from([-1, 0, 1, 2]))
    def crm_snapshot(self, status: str, step: int) -> None:
        """The CRM says the invoice is in `status`, at a version near the last one."""
        version = max(0, self.version + step)
        data = {"invoice_id": "I-1", "version": version, "status": status}
        env = Envelope(
            id=f"m-{len(self.sent)}",
            type="invoice.upserted",
            tenant="acme",
            occurred_at=NOW,
            data=data,
            topic="p/acme/crm/invoice/upserted",
            payload=b"{}",
        )
        before = (self.invoice.status, self.invoice.version) if self.invoice else None
        changes = self._upsert(env)
        self.sent.append(env)
        [entry] = changes.ledger
        if entry.outcome is Outcome.APPLIED:
            assert self.invoice is not None
            assert (self.invoice.status, self.invoice.version) == (status, version)
            self.version = version
            self.highest = max(self.highest, version)
        else:  # ignored (stale), refused (a move the rules forbid) or rejected
            after = (
                (self.invoice.status, self.invoice.version) if self.invoice else None
            )
            assert after == before
            assert not changes.jobs

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def redelivery(self, data: st.DataObject) -> None:
        """A snapshot already applied arrives again: it changes nothing."""
        env = data.draw(st.sampled_from(self.sent))
        before = (self.invoice.status, self.invoice.version) if self.invoice else None
        changes = self._upsert(env)
        after = (self.invoice.status, self.invoice.version) if self.invoice else None
        if env.data["version"] <= self.highest:  # applied (or overtaken) before
            assert after == before
            assert not changes.jobs and not changes.history
        elif changes.ledger[0].outcome is Outcome.APPLIED:
            # refused when it came (the ledger would drop it at the inbox), allowed now
            # that QBO moved the invoice on: the engine alone applies it
            self.version = self.highest = env.data["version"]

    @precondition(lambda self: self.invoice is not None)
    @rule(event=st.sampled_from(QBO_EVENTS))
    def qbo_event(self, event: str) -> None:
        """QBO voided, paid, edited or deleted it: the mapped move, if the rules allow."""
        assert self.invoice is not None
        before = self.invoice.status
        changes = ChangeSet()
        self._run(qbo_events.apply(self.invoice, event, self.machine, NOW, changes))
        target = RULES.qbo_events.get(event, "")
        self.moves += [(h.from_status, h.to_status) for h in changes.history]
        if not target or target == before:
            assert self.invoice.status == before and not changes.history
        elif RULES.allows(before, target):
            assert self.invoice.status == target
            assert [type(o) for o in changes.outbox] == [StatusSet]
        else:
            assert self.invoice.status == before
            assert [f.code for f in changes.failures] == ["move_refused"]

    @invariant()
    def every_move_applied_was_allowed(self) -> None:
        for source, dest in self.moves:
            if source is None:
                assert self.machine.can_start_in(dest)
            elif source != dest:
                assert RULES.allows(source, dest), (source, dest)

    @invariant()
    def the_status_is_one_the_rules_know(self) -> None:
        if self.invoice is not None:
            assert self.invoice.status in RULES.statuses
            assert self.invoice.version == self.version

    @invariant()
    def a_final_status_is_never_left(self) -> None:
        seen_final = False
        for source, dest in self.moves:
            if seen_final:
                assert source not in RULES.final or source == dest
            seen_final = seen_final or dest in RULES.final


InvoiceLife.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestInvoiceLife = InvoiceLife.TestCase
