"""The CRM's payments, deleted payments, fees and refunds, decided (issue 26, HS6, HS7).

No files and no sockets: a message, the records the store holds, and what is decided.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from syncd.engine import money
from syncd.models import JobKind, MoneyKind, MoneyState, Outcome, PaymentRecord
from tests.test_decide import NOW, PAYMENT, RULES, _ctx, _invoice, _outcome, _rejections

PAID = {**PAYMENT, "invoice_id": "I-1"}


def _record(state: MoneyState = MoneyState.RECORDED, **extra: Any) -> PaymentRecord:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "kind": MoneyKind.PAYMENT,
        "payment_id": "P-1",
        "invoice_id": "I-1",
        "amount": Decimal("50.00"),
        "state": state,
        "qbo_id": "300",
        "at": NOW,
    }
    return PaymentRecord(**(fields | extra))


def _refund(**extra: Any) -> dict[str, Any]:
    return {
        "refund_id": "R-1",
        "payment_id": "P-1",
        "customer": {"name": "Acme"},
        "amount": "20.00",
        "currency": "USD",
        "date": "2026-11-28",
        "reason": "damaged",
        **extra,
    }


def test_a_payment_is_recorded_with_its_job():
    ctx = _ctx("payment.recorded", PAID)
    money.apply_recorded(ctx, _invoice(), [])
    [record] = ctx.changes.payments
    assert (record.kind, record.payment_id, record.invoice_id, record.amount) == (
        MoneyKind.PAYMENT,
        "P-1",
        "I-1",
        Decimal("50.00"),
    )
    assert record.state is MoneyState.RECORDED and record.qbo_id is None


def test_a_fee_is_booked_behind_its_payment():
    """HS6: a second job, in the same queue, carrying the fee."""
    rules = dataclasses.replace(
        RULES, payments=dataclasses.replace(RULES.payments, fee_account="Bank Charges")
    )
    fee = {"amount": "1.75", "processor": "stripe"}
    ctx = _ctx("payment.recorded", {**PAID, "fee": fee}, rules)
    money.apply_recorded(ctx, _invoice(), [])
    push, booked = ctx.changes.jobs
    assert (booked.kind, booked.subject, booked.queue) == (
        JobKind.FEE_PUSH,
        "P-1",
        "I-1",
    )
    assert booked.payload["fee"] == fee
    assert _outcome(ctx) == (Outcome.APPLIED, "payment.push queued, fee.push queued")


def test_a_fee_with_no_fee_account_is_not_booked_and_says_so():
    rules = dataclasses.replace(
        RULES, payments=dataclasses.replace(RULES.payments, fee_account="")
    )
    ctx = _ctx("payment.recorded", {**PAID, "fee": {"amount": "1.00"}}, rules)
    money.apply_recorded(ctx, _invoice(), [])
    assert [j.kind for j in ctx.changes.jobs] == [JobKind.PAYMENT_PUSH]
    assert "fee_account is empty" in _outcome(ctx)[1]


@pytest.mark.parametrize(
    ("fee", "reason"),
    [
        (
            {"amount": "1.00", "currency": "EUR"},
            "the fee is in EUR and the payment in USD: a fee is booked in the "
            "payment's currency",
        ),
        ({"amount": "50.00"}, "the fee (50.00) is not less than the payment (50.00)"),
    ],
)
def test_a_fee_that_cannot_be_booked_refuses_the_message(fee, reason):
    ctx = _ctx("payment.recorded", {**PAID, "fee": fee})
    money.apply_recorded(ctx, _invoice(), [])
    assert (ctx.changes.jobs, ctx.changes.payments) == ([], [])
    assert _rejections(ctx) == [reason]


def test_a_deleted_payment_queues_its_removal_behind_it():
    """HS7: the removal runs in the invoice's queue; the record says it is under way."""
    ctx = _ctx("payment.deleted", {"payment_id": "P-1"})
    money.apply_deleted(ctx, [_record()])
    [job] = ctx.changes.jobs
    assert (job.kind, job.queue, job.payload["amount"]) == (
        JobKind.PAYMENT_REMOVE,
        "I-1",
        "50.00",
    )
    assert ctx.changes.payments[0].state is MoneyState.REMOVING


def test_a_deleted_receipt_goes_in_the_receipts_queue():
    ctx = _ctx("payment.deleted", {"payment_id": "P-1"})
    money.apply_deleted(ctx, [_record(kind=MoneyKind.RECEIPT, invoice_id="")])
    [job] = ctx.changes.jobs
    assert (job.kind, job.queue) == (JobKind.RECEIPT_REMOVE, "receipt:P-1")


def test_a_payment_recorded_and_deleted_in_one_batch_is_removed():
    ctx = _ctx("payment.recorded", PAID)
    money.apply_recorded(ctx, _invoice(), [])
    later = dataclasses.replace(
        _ctx("payment.deleted", {"payment_id": "P-1"}), changes=ctx.changes
    )
    money.apply_deleted(later, [])
    assert [j.kind for j in ctx.changes.jobs] == [
        JobKind.PAYMENT_PUSH,
        JobKind.PAYMENT_REMOVE,
    ]


@pytest.mark.parametrize(
    ("known", "reason"),
    [
        ([], "unknown payment 'P-1': syncd never had its payment.recorded"),
        ([_record(MoneyState.REMOVING)], "payment 'P-1' was already deleted"),
        ([_record(MoneyState.REMOVED)], "payment 'P-1' was already deleted"),
    ],
)
def test_an_unknown_or_twice_deleted_payment_is_refused(known, reason):
    ctx = _ctx("payment.deleted", {"payment_id": "P-1"})
    money.apply_deleted(ctx, known)
    assert ctx.changes.jobs == []
    assert _rejections(ctx) == [reason]


def test_a_deleted_payments_id_is_not_used_again():
    ctx = _ctx("payment.recorded", PAID)
    money.apply_recorded(ctx, _invoice(), [_record(MoneyState.REMOVED)])
    assert _rejections(ctx) == ["payment 'P-1' was deleted: a payment id is used once"]


def test_a_refund_is_queued_and_counted_against_its_payment():
    ctx = _ctx("payment.refunded", _refund())
    money.apply_refunded(ctx, None, [_record()], Decimal("10.00"))
    [job] = ctx.changes.jobs
    assert (job.kind, job.subject, job.queue) == (
        JobKind.REFUND_PUSH,
        "R-1",
        "refund:R-1",
    )
    [record] = ctx.changes.payments
    assert (record.kind, record.refunds, record.amount) == (
        MoneyKind.REFUND,
        "P-1",
        Decimal("20.00"),
    )


def test_a_refund_larger_than_what_is_left_is_refused():
    ctx = _ctx("payment.refunded", _refund(amount="40.01"))
    money.apply_refunded(ctx, None, [_record()], Decimal("10.00"))
    assert ctx.changes.jobs == []
    assert _rejections(ctx) == [
        "a refund of 40.01 is more than what is left of payment 'P-1' "
        "(50.00 paid, 10.00 refunded already)"
    ]


def test_two_refunds_in_one_batch_count_together():
    first = _ctx("payment.refunded", _refund(amount="30.00"))
    money.apply_refunded(first, None, [_record()], Decimal(0))
    second = dataclasses.replace(
        _ctx("payment.refunded", _refund(refund_id="R-2", amount="30.00")),
        changes=first.changes,
    )
    money.apply_refunded(second, None, [_record()], Decimal(0))
    assert [j.subject for j in first.changes.jobs] == ["R-1"]
    assert "30.00 refunded already" in _rejections(second)[0]


def test_a_refund_seen_before_is_ignored():
    ctx = _ctx("payment.refunded", _refund())
    known = [_record(), _record(kind=MoneyKind.REFUND, payment_id="R-1")]
    money.apply_refunded(ctx, None, known, Decimal(0))
    assert ctx.changes.jobs == []
    assert _outcome(ctx) == (Outcome.IGNORED, "refund 'R-1' is already recorded")


@pytest.mark.parametrize(
    ("known", "reason"),
    [
        ([], "unknown payment 'P-1': a refund needs its payment first"),
        (
            [_record(MoneyState.REMOVED)],
            "payment 'P-1' was deleted: there is nothing to refund",
        ),
    ],
)
def test_a_refund_of_an_unknown_or_deleted_payment_is_refused(known, reason):
    ctx = _ctx("payment.refunded", _refund())
    money.apply_refunded(ctx, None, known, Decimal(0))
    assert _rejections(ctx) == [reason]


def test_a_refund_of_an_invoice_waits_behind_it():
    ctx = _ctx("payment.refunded", _refund(invoice_id="I-1"))
    money.apply_refunded(ctx, _invoice(), [_record()], Decimal(0))
    assert [j.queue for j in ctx.changes.jobs] == ["I-1"]
    unknown = _ctx("payment.refunded", _refund(invoice_id="I-9"))
    money.apply_refunded(unknown, None, [_record()], Decimal(0))
    assert _rejections(unknown) == ["unknown invoice 'I-9': a refund names a known one"]


def test_a_refund_without_a_payment_is_taken_as_it_comes():
    ctx = _ctx("payment.refunded", _refund(payment_id=None))
    money.apply_refunded(ctx, None, [], Decimal(0))
    assert [j.kind for j in ctx.changes.jobs] == [JobKind.REFUND_PUSH]


def _note_data(version: int, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "credit_note_id": "CN-1",
        "version": version,
        "status": status,
        "invoice_id": "I-1",
        "customer": {"name": "Acme"},
        "lines": [{"item": "Consulting", "amount": "20.00"}],
        "total": "20.00",
        **extra,
    }


def test_an_open_credit_note_is_kept_and_queued_behind_its_invoice():
    ctx = _ctx("credit_note.upserted", _note_data(1, "open"))
    note = money.apply_credit_note(ctx, None, _invoice())
    assert note is not None and note.sync_state.value == "pending"
    [job] = ctx.changes.jobs
    # behind its invoice's own jobs: the credit it applies is syncd's own write
    assert (job.kind, job.queue, job.payload) == (
        JobKind.CREDIT_NOTE_PUSH,
        "I-1",
        {"version": 1, "amount": "20.00"},
    )
    alone = _ctx("credit_note.upserted", _note_data(1, "open", invoice_id=None))
    money.apply_credit_note(alone, None, None)
    assert [j.queue for j in alone.changes.jobs] == ["credit_note:CN-1"]
    assert [n.version for n in ctx.changes.credit_notes] == [1]
    [state] = ctx.changes.outbox
    assert state.subtopic() == "sync/credit_note/CN-1"
    assert state.data["status"] == "open"


def test_a_draft_credit_note_stays_in_the_crm():
    ctx = _ctx("credit_note.upserted", _note_data(1, "draft"))
    money.apply_credit_note(ctx, None, _invoice())
    assert ctx.changes.jobs == []
    assert _outcome(ctx) == (Outcome.APPLIED, "kept (a draft stays in the CRM)")


def test_an_older_credit_note_version_is_ignored_and_a_voided_one_is_final():
    first = _ctx("credit_note.upserted", _note_data(2, "voided"))
    voided = money.apply_credit_note(first, None, _invoice())
    old = _ctx("credit_note.upserted", _note_data(1, "open"))
    money.apply_credit_note(old, voided, _invoice())
    assert _outcome(old) == (
        Outcome.IGNORED,
        "version 1 is not newer than the applied 2",
    )
    again = _ctx("credit_note.upserted", _note_data(3, "open"))
    money.apply_credit_note(again, voided, _invoice())
    assert _rejections(again) == [
        "credit note 'CN-1' is voided: a voided credit note is final"
    ]


def test_a_credit_note_keeps_its_invoice_and_names_a_known_one():
    first = _ctx("credit_note.upserted", _note_data(1, "open"))
    note = money.apply_credit_note(first, None, _invoice())
    moved = _ctx("credit_note.upserted", _note_data(2, "open", invoice_id="I-2"))
    money.apply_credit_note(moved, note, None)
    assert _rejections(moved)[0].startswith("unknown invoice 'I-2'")
    other = dataclasses.replace(_invoice(), invoice_id="I-2")
    known = _ctx("credit_note.upserted", _note_data(2, "open", invoice_id="I-2"))
    money.apply_credit_note(known, note, other)
    assert _rejections(known) == [
        "credit note 'CN-1' is for invoice 'I-1': it cannot move to another"
    ]
    unknown = _ctx("credit_note.upserted", _note_data(1, "open", invoice_id="I-9"))
    money.apply_credit_note(unknown, None, None)
    assert _rejections(unknown) == [
        "unknown invoice 'I-9': a credit note names a known one"
    ]


@pytest.mark.parametrize(
    ("kind", "shows"),
    [
        (JobKind.REFUND_PUSH, False),
        (JobKind.FEE_PUSH, False),
        (JobKind.PAYMENT_PUSH, True),
    ],
)
def test_only_a_write_of_the_invoice_shows_its_retries_on_it(kind, shows):
    """A refund retried in its invoice's queue left the invoice pending for good.

    Found by the replicas' chaos run: nothing of the refund's sets it synced again.
    """
    from syncd.exceptions import QboTransientError
    from syncd.models import ChangeSet, Job, SyncState
    from syncd.outbound import outcomes
    from syncd.outbound.push import JobContext

    invoice = _invoice()
    job = Job(
        tenant="acme", kind=kind, subject="R-1", invoice_id="I-1", next_attempt_at=NOW
    )
    ctx = JobContext(
        job=job,
        invoice=invoice,
        client=None,  # type: ignore[arg-type]
        connection=None,  # type: ignore[arg-type]
        rules=RULES,
        store=None,  # type: ignore[arg-type]
        now=NOW,
        unclear=False,
        changes=ChangeSet(),
    )
    outcomes.retry(ctx, QboTransientError("QBO 3001: throttled"), 1.0, now=NOW)
    assert (invoice.sync_state is SyncState.PENDING) is shows
    outcomes.fail(ctx, "6000", "refused", retryable=False, now=NOW)
    assert (invoice.sync_state is SyncState.FAILED) is shows


def test_a_payment_of_several_invoices_is_one_job_in_its_own_queue():
    shares = [
        {"invoice_id": "I-1", "amount": "30.00"},
        {"invoice_id": "I-2", "amount": "20.00"},
    ]
    known = {
        "I-1": _invoice(),
        "I-2": dataclasses.replace(_invoice(), invoice_id="I-2"),
    }
    ctx = _ctx("payment.recorded", {**PAYMENT, "invoices": shares})
    money.apply_recorded(ctx, None, [], known)
    [job] = ctx.changes.jobs
    assert (job.kind, job.queue) == (JobKind.PAYMENT_PUSH, "payment:P-1")
    assert [(r.invoice_id, r.amount) for r in ctx.changes.payments] == [
        ("I-1", Decimal("30.00")),
        ("I-2", Decimal("20.00")),
    ]
    deleted = dataclasses.replace(
        _ctx("payment.deleted", {"payment_id": "P-1"}), changes=ctx.changes
    )
    money.apply_deleted(deleted, [])
    assert ctx.changes.jobs[-1].queue == "payment:P-1"  # behind its push
    assert {r.state for r in ctx.changes.payments[-2:]} == {MoneyState.REMOVING}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (
            {"invoice_id": "I-1"},
            "a payment names invoice_id or invoices, not both",
        ),
        (
            {"invoices": [{"invoice_id": "I-1", "amount": "1.00"}] * 2},
            "a payment names each of its invoices once",
        ),
        (
            {"invoices": [{"invoice_id": "I-9", "amount": "1.00"}]},
            "unknown invoice 'I-9': the payment needs its invoices first",
        ),
    ],
)
def test_a_payment_of_several_invoices_names_each_known_one_once(extra, reason):
    data = {**PAYMENT, "invoices": [{"invoice_id": "I-1", "amount": "1.00"}], **extra}
    ctx = _ctx("payment.recorded", data)
    money.apply_recorded(ctx, _invoice(), [], {"I-1": _invoice()})
    assert ctx.changes.jobs == []
    assert _rejections(ctx) == [reason]
