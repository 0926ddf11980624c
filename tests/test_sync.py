"""The CRM side's decisions: which QBO jobs a move calls for, and what a job is about."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from syncd.engine.decide import jobs_for_move
from syncd.models import Invoice, Job, JobKind, Subject
from syncd.rules.model import SyncRules
from tests.test_inbox import RULES

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
STATUSES = ("draft", "open", "sent", "paid", "void", "deleted")
some = st.lists(st.sampled_from(STATUSES), unique=True, max_size=3).map(tuple)


def _invoice(status: str, qbo_id: str | None) -> Invoice:
    return Invoice(
        tenant="acme",
        invoice_id="I-1",
        status=status,
        version=1,
        data={},
        updated_at=NOW,
        qbo_id=qbo_id,
    )


@given(
    on=some,
    send_on=some,
    void_on=some,
    delete_on=some,
    status=st.sampled_from(STATUSES),
    synced=st.booleans(),
    entered=st.booleans(),
)
def test_jobs_follow_the_sync_rules(
    on, send_on, void_on, delete_on, status, synced, entered
):
    """RO3, OD5, OD6, PD7: each rule list calls for its job, once, pushes before sends."""
    rules = replace(
        RULES,
        sync=SyncRules(on=on, send_on=send_on, void_on=void_on, delete_on=delete_on),
    )
    inv = _invoice(status, "130" if synced else None)
    kinds = jobs_for_move(rules, inv, entered=entered)
    assert len(kinds) == len(set(kinds))
    if entered and status in send_on:
        assert kinds.index(JobKind.INVOICE_PUSH) < kinds.index(JobKind.INVOICE_SEND)
    assert (JobKind.INVOICE_SEND in kinds) == (entered and status in send_on)
    assert (JobKind.INVOICE_VOID in kinds) == (entered and status in void_on)
    assert (JobKind.INVOICE_DELETE in kinds) == (entered and status in delete_on)
    if not synced and not entered:
        assert kinds == []  # an edit of an invoice that is not in QBO stays out of it
    if synced and not entered and status not in (*void_on, *delete_on):
        assert kinds == [JobKind.INVOICE_PUSH]  # an edit updates the QBO copy


def test_a_status_outside_every_list_calls_for_nothing():
    """HS1: an invoice that never reaches a sync status never goes to QBO."""
    rules = replace(RULES, sync=SyncRules(on=("open",)))
    assert jobs_for_move(rules, _invoice("draft", None), entered=True) == []


def test_every_kind_names_what_it_is_about_and_its_queue():
    """Typed jobs: a payment queues behind its invoice; receipts and contacts alone."""
    subjects = {kind: kind.subject for kind in JobKind}
    assert subjects[JobKind.PAYMENT_PUSH] is Subject.PAYMENT
    assert subjects[JobKind.RECEIPT_PUSH] is Subject.RECEIPT
    assert subjects[JobKind.CUSTOMER_PUSH] is Subject.CONTACT
    assert {k for k, s in subjects.items() if s is Subject.INVOICE} == {
        JobKind.INVOICE_PUSH,
        JobKind.INVOICE_SEND,
        JobKind.INVOICE_VOID,
        JobKind.INVOICE_DELETE,
    }
    payment = Job(
        tenant="acme",
        kind=JobKind.PAYMENT_PUSH,
        subject="P-1",
        invoice_id="I-1",
        next_attempt_at=NOW,
    )
    receipt = replace(payment, kind=JobKind.RECEIPT_PUSH, invoice_id=None)
    contact = replace(
        payment, kind=JobKind.CUSTOMER_PUSH, subject="C-1", invoice_id=None
    )
    push = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    assert [j.queue for j in (push, payment, receipt, contact)] == [
        "I-1",
        "I-1",
        "receipt:P-1",
        "contact:C-1",
    ]
