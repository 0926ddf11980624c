"""The invoice state machine: every row of the rules, and random rules under hypothesis."""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.bus.inbox import Inbox
from syncd.engine.machine import InvoiceMachine, mermaid
from syncd.engine.rulebook import RuleBook
from syncd.models import Outcome, RawMessage
from syncd.rules.model import Rules, load_rules, parse_rules
from syncd.store.sqlite import SqliteStore
from tests.crm import envelope

RULES = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.toml")
NOW = datetime(2026, 11, 22, tzinfo=UTC)

PAIRS = [(a, b) for a in RULES.statuses for b in RULES.statuses if a != b]


@pytest.mark.parametrize(("source", "dest"), PAIRS)
async def test_every_pair_follows_the_rules_table(source, dest):
    """DC2: the machine allows exactly the moves in [moves], from every status."""
    machine = InvoiceMachine(RULES)
    assert await machine.move("I-1", source, dest) is (
        dest in RULES.moves.get(source, ())
    )


async def test_a_refused_move_logs_no_error(caplog):
    """A refusal is the rules at work (syncd says it as a warning), not an error.

    The transitions library logged each one at ERROR ("Exception was raised while
    processing the trigger"): the chaos run's logs were full of them.
    """
    machine = InvoiceMachine(RULES)
    with caplog.at_level("DEBUG"):
        assert await machine.move("I-1", "sent", "draft") is False
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


async def test_slots_stay_few_however_many_invoices_move():
    """Invoices are not resident on the machine: attached objects stay bounded."""
    machine = InvoiceMachine(RULES)
    for n in range(500):
        await machine.move(f"I-{n}", "draft", "open")
    assert machine.attached <= 1


def test_mermaid_draws_each_move_once():
    """The diagram has one arrow per allowed move."""
    text = mermaid(RULES)
    arrows = [line for line in text.splitlines() if "-->" in line and "[*]" not in line]
    assert len(arrows) == sum(len(d) for d in RULES.moves.values())


# --- hypothesis: random rules, random event sequences --------------------------------

NAMES = ["s0", "s1", "s2", "s3", "s4", "s5"]


@st.composite
def rule_sets(draw: st.DrawFn) -> Rules:
    statuses = NAMES[: draw(st.integers(2, len(NAMES)))]
    final = draw(st.sets(st.sampled_from(statuses[1:]), max_size=2))
    moves = {
        s: draw(st.lists(st.sampled_from([t for t in statuses if t != s]), unique=True))
        for s in statuses
        if s not in final
    }
    data = {
        "statuses": {"all": statuses, "initial": statuses[0], "final": sorted(final)}
    }
    return parse_rules({**data, "moves": moves}, "random.toml")


events = st.lists(
    st.tuples(
        st.sampled_from(["I-0", "I-1", "I-2"]),
        st.sampled_from([*NAMES, "nope"]),
        st.integers(0, 12),
        st.integers(0, 3),  # 0 = a redelivery of the previous message id
    ),
    max_size=40,
)


def _reference(
    rules: Rules, sequence: list[tuple[str, str, int, int]]
) -> dict[str, Any]:
    """An independent model of what must happen (no transitions, no SQL)."""
    state: dict[str, tuple[str, int]] = {}
    seen: set[str] = set()
    reachable = rules.reachable()
    for n, (inv, status, version, dup) in enumerate(sequence):
        mid = f"m-{n - 1}" if dup == 0 and n else f"m-{n}"
        if mid in seen:
            continue
        seen.add(mid)
        if status not in rules.statuses:
            continue
        current = state.get(inv)
        if current is None:
            if status in reachable:
                state[inv] = (status, version)
        elif version > current[1] and (
            status == current[0] or status in rules.moves.get(current[0], ())
        ):
            state[inv] = (status, version)
    return state


async def _run(rules: Rules, sequence, cuts: list[int], db: Path) -> SqliteStore:
    store = SqliteStore(db)
    await store.open()
    inbox = Inbox(
        store,
        RuleBook({"t": rules}),
        prefix="p",
        max_payload_bytes=65536,
        clock=lambda: NOW,
    )
    messages = []
    for n, (inv, status, version, dup) in enumerate(sequence):
        mid = f"m-{n - 1}" if dup == 0 and n else f"m-{n}"
        data = {"invoice_id": inv, "version": version, "status": status}
        body = json.dumps(envelope("t", "invoice.upserted", data, mid, at=NOW)).encode()
        messages.append(
            RawMessage(topic="p/t/crm/invoice/upserted", payload=body, received_at=NOW)
        )
    start = 0
    for cut in [*sorted(cuts), len(messages)]:
        await inbox.handle(messages[start:cut])
        start = max(start, cut)
    return store


@given(
    rules=rule_sets(), sequence=events, cuts=st.lists(st.integers(0, 40), max_size=4)
)
def test_random_rules_never_allow_a_forbidden_move(rules, sequence, cuts):
    """DC4: no stored move is outside the rules; history replays to the stored status."""

    async def check() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = await _run(rules, sequence, cuts, Path(tmp) / "s.db")
            try:
                await _assert_consistent(store, rules, sequence)
            finally:
                await store.close()

    asyncio.run(check())


async def _assert_consistent(store: SqliteStore, rules: Rules, sequence) -> None:
    expected = _reference(rules, sequence)
    for inv in ("I-0", "I-1", "I-2"):
        stored = await store.invoice("t", inv)
        history = await store.history("t", inv)
        if stored is None:
            assert inv not in expected
            assert history == []
            continue
        assert (stored.status, stored.version) == expected[inv]
        replayed = None
        for move in history:
            assert move.from_status == replayed
            if replayed is None:
                assert move.to_status in rules.reachable()
            else:
                assert rules.allows(replayed, move.to_status)
            replayed = move.to_status
        assert replayed == stored.status
    refused = [f for f in await store.failures("t") if f.code == "move_refused"]
    outcomes = [(await store.ledger("t", f.event_id)) for f in refused if f.event_id]
    assert all(o is not None and o.outcome is Outcome.REFUSED for o in outcomes)
