"""The CRM-side decisions, one by one, with no files and no sockets (issue 23).

Each takes a message and the invoice as loaded and only appends to a ChangeSet: ledger
rows, jobs, refresh requests, outbound messages.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.engine import decide, money
from syncd.engine.machine import InvoiceMachine
from syncd.messages import InputRejected, StateChanged
from syncd.models import ChangeSet, Envelope, Invoice, JobKind, Outcome, SyncState
from syncd.rules.model import load_rules

RULES = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.toml")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _ctx(kind: str, data: dict[str, Any], rules=RULES) -> decide.Context:
    env = Envelope(
        id="m-1",
        type=kind,
        tenant="acme",
        occurred_at=NOW,
        data=data,
        topic="syncd/acme/crm/" + kind.replace(".", "/"),
        payload=b"{}",
    )
    return decide.Context(
        envelope=env,
        machine=InvoiceMachine(rules),
        now=NOW,
        changes=ChangeSet(),
    )


def _invoice(qbo_id: str | None = "130", state=SyncState.SYNCED) -> Invoice:
    return Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=2,
        data={"invoice_id": "I-1"},
        updated_at=NOW,
        sync_state=state,
        qbo_id=qbo_id,
    )


def _outcome(ctx: decide.Context) -> tuple[Outcome, str]:
    [entry] = ctx.changes.ledger
    return entry.outcome, entry.reason


def _rejections(ctx: decide.Context) -> list[str]:
    return [
        o.data["reason"] for o in ctx.changes.outbox if isinstance(o, InputRejected)
    ]


PAYMENT = {
    "payment_id": "P-1",
    "customer": {"name": "Acme"},
    "amount": "50.00",
    "currency": "USD",
    "date": "2026-11-27",
    "kind": "invoice",
}


def test_a_payment_of_a_known_invoice_queues_a_payment_behind_it():
    """HL5, RO4: one payment job, in the invoice's queue, carrying the payment."""
    ctx = _ctx("payment.recorded", {**PAYMENT, "invoice_id": "I-1"})
    money.apply_recorded(ctx, _invoice(), [])
    [job] = ctx.changes.jobs
    assert (job.kind, job.subject, job.invoice_id) == (
        JobKind.PAYMENT_PUSH,
        "P-1",
        "I-1",
    )
    assert job.payload["amount"] == "50.00"
    assert _outcome(ctx) == (Outcome.APPLIED, "payment.push queued")


def test_a_payment_without_an_invoice_is_a_sales_receipt():
    """HL3: no invoice_id: a receipt job of its own (no invoice queue)."""
    ctx = _ctx("payment.recorded", {**PAYMENT, "kind": "booking"})
    money.apply_recorded(ctx, None, [])
    [job] = ctx.changes.jobs
    assert (job.kind, job.invoice_id) == (JobKind.RECEIPT_PUSH, None)


def test_a_payment_of_an_unknown_invoice_is_refused_with_the_reason():
    """The invoice must come first; nothing is queued."""
    ctx = _ctx("payment.recorded", {**PAYMENT, "invoice_id": "I-9"})
    money.apply_recorded(ctx, None, [])
    assert ctx.changes.jobs == []
    assert _outcome(ctx)[0] is Outcome.REJECTED
    assert _rejections(ctx) == [
        "unknown invoice 'I-9': the payment needs its invoice first"
    ]


@pytest.mark.parametrize("push", [True, False])
def test_a_contact_is_pushed_only_when_the_rules_say_so(push):
    """PD5: `[customers] push_updates` on: a customer job; off: ignored, said why."""
    rules = dataclasses.replace(
        RULES, customers=dataclasses.replace(RULES.customers, push_updates=push)
    )
    ctx = _ctx("contact.upserted", {"contact_id": "C-9", "name": "Acme"}, rules)
    decide.apply_contact(ctx)
    if push:
        [job] = ctx.changes.jobs
        assert (job.kind, job.subject) == (JobKind.CUSTOMER_PUSH, "C-9")
        assert _outcome(ctx) == (Outcome.APPLIED, "customer.push queued")
    else:
        assert ctx.changes.jobs == []
        assert _outcome(ctx) == (Outcome.IGNORED, "[customers] push_updates is off")


def test_a_refresh_of_one_invoice_asks_for_its_qbo_copy():
    """PD8: the request names the QBO id, the message and when."""
    ctx = _ctx("command.refresh", {"invoice_id": "I-1"})
    decide.apply_refresh(ctx, _invoice())
    assert ctx.changes.refreshes == [
        {
            "tenant": "acme",
            "message_id": "m-1",
            "at": NOW.isoformat(),
            "invoice_qbo_id": "130",
        }
    ]


def test_a_refresh_of_a_contact_asks_for_its_range():
    """PD8: a contact's invoices between two dates."""
    data = {"contact_id": "C-9", "from": "2026-11-01", "to": "2026-11-30"}
    ctx = _ctx("command.refresh", data)
    decide.apply_refresh(ctx, None)
    [request] = ctx.changes.refreshes
    assert (request["contact_id"], request["from"], request["to"]) == (
        "C-9",
        "2026-11-01",
        "2026-11-30",
    )


def test_a_refresh_of_an_invoice_with_no_qbo_copy_is_refused():
    """Nothing to pull from: refused with the reason, nothing queued."""
    ctx = _ctx("command.refresh", {"invoice_id": "I-1"})
    decide.apply_refresh(ctx, _invoice(qbo_id=None, state=SyncState.NOT_SYNCED))
    assert ctx.changes.refreshes == []
    assert _rejections(ctx) == ["invoice 'I-1' has no QBO copy to refresh from"]


@pytest.mark.parametrize(
    ("command", "kinds"),
    [
        ("command.sync", [JobKind.INVOICE_PUSH]),
        ("command.send", [JobKind.INVOICE_PUSH, JobKind.INVOICE_SEND]),
        ("command.void", [JobKind.INVOICE_VOID]),
        ("command.delete", [JobKind.INVOICE_DELETE]),
    ],
)
async def test_each_command_queues_its_jobs_and_says_pending(command, kinds):
    """RO3, OD4, PD7: the manual buttons; the state goes pending and is published."""
    ctx = _ctx(command, {"invoice_id": "I-1"})
    invoice = _invoice()
    await decide.apply_command(ctx, invoice)
    assert [j.kind for j in ctx.changes.jobs] == kinds
    assert invoice.sync_state is SyncState.PENDING
    [state] = [o for o in ctx.changes.outbox if isinstance(o, StateChanged)]
    assert state.subtopic() == "sync/invoice/I-1"
    assert state.data["sync_state"] == "pending"
    assert _outcome(ctx)[0] is Outcome.APPLIED


async def test_a_command_for_an_unknown_invoice_is_refused():
    """The invoice must be known first."""
    ctx = _ctx("command.void", {"invoice_id": "I-9"})
    await decide.apply_command(ctx, None)
    assert ctx.changes.jobs == []
    assert _rejections(ctx) == ["unknown invoice 'I-9': send invoice.upserted first"]


async def test_a_failed_invoice_stays_failed_when_a_command_queues_again():
    """A retry by command keeps the failure showing until the job goes through."""
    ctx = _ctx("command.sync", {"invoice_id": "I-1"})
    invoice = _invoice(state=SyncState.FAILED)
    await decide.apply_command(ctx, invoice)
    assert invoice.sync_state is SyncState.FAILED
    assert [j.kind for j in ctx.changes.jobs] == [JobKind.INVOICE_PUSH]
