"""The admin's Retry as a decision of its own, with no files or sockets (issue 23).

It lived in a web module, tested only through HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncd.messages import StateChanged
from syncd.models import Failure, Invoice, Job, JobKind, JobStatus, SyncState
from syncd.outbound import retry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _failure(operation: str = "payment.push", **extra) -> Failure:
    return Failure(
        tenant="acme",
        invoice_id="I-1",
        operation=operation,
        code="6000",
        message="refused",
        event_id=None,
        at=NOW - timedelta(hours=1),
        id=4,
        **extra,
    )


def test_the_failed_job_comes_back_with_what_it_carried():
    """A payment's amount rides along; its tries start again; it is due now."""
    earlier = Job(
        tenant="acme",
        kind=JobKind.PAYMENT_PUSH,
        subject="P-1",
        invoice_id="I-1",
        next_attempt_at=NOW - timedelta(hours=2),
        payload={"amount": "50.00"},
        id=9,
        status=JobStatus.FAILED,
        attempts=8,
        last_error="refused",
    )
    again = retry.job_again(earlier, _failure(job_id=9), NOW)
    assert again is not None
    assert (again.id, again.status, again.attempts, again.last_error) == (
        None,
        JobStatus.PENDING,
        0,
        None,
    )
    assert (again.payload, again.next_attempt_at) == ({"amount": "50.00"}, NOW)


@pytest.mark.parametrize(
    ("operation", "kind"),
    [("invoice.push", JobKind.INVOICE_PUSH), ("invoice.send", JobKind.INVOICE_SEND)],
)
def test_an_old_failure_without_its_job_retries_the_invoices_job(operation, kind):
    """Failures recorded before they named their job: an invoice job carries nothing."""
    again = retry.job_again(None, _failure(operation), NOW)
    assert again is not None and (again.kind, again.invoice_id) == (kind, "I-1")


def test_a_refused_move_is_not_a_job_to_retry():
    """Fixed in the CRM or the rules, never by Retry."""
    refused = _failure("status_move")
    assert not retry.can_retry(refused)
    assert retry.job_again(None, refused, NOW) is None
    assert retry.can_retry(_failure("invoice.push"))
    assert not retry.can_retry(_failure("invoice.push", resolved_at=NOW))


def test_the_plan_queues_resolves_and_says_pending_in_one_changeset():
    """One transaction: the job, the failure handled, the invoice pending and said."""
    invoice = Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=1,
        data={},
        updated_at=NOW,
        sync_state=SyncState.FAILED,
        pushed_body={"TotalAmt": "1"},
    )
    job = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    changes = retry.plan(_failure("invoice.push"), job, invoice, now=NOW)
    assert changes.jobs == [job]
    assert changes.resolved == [("acme", 4, NOW)]
    assert (invoice.sync_state, invoice.pushed_body) == (SyncState.PENDING, None)
    [state] = changes.outbox
    assert isinstance(state, StateChanged)
    assert state.subtopic() == "sync/invoice/I-1"
    assert state.data["error"] == "retry requested by the admin"


def test_a_refund_retried_in_an_invoices_queue_leaves_the_invoice_as_it_is():
    """Issue 26: nothing of a refund's sets its invoice synced again; none made pending."""
    invoice = Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="paid",
        version=1,
        data={},
        updated_at=NOW,
        sync_state=SyncState.SYNCED,
    )
    job = Job(
        tenant="acme",
        kind=JobKind.REFUND_PUSH,
        subject="R-1",
        invoice_id="I-1",
        next_attempt_at=NOW,
    )
    changes = retry.plan(_failure("refund.push"), job, invoice, now=NOW)
    assert changes.jobs == [job] and changes.resolved == [("acme", 4, NOW)]
    assert invoice.sync_state is SyncState.SYNCED
    assert (changes.invoices, changes.outbox) == ({}, [])
