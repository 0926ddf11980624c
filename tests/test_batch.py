"""Which due jobs go together in a QBO batch request (issue 23: its own unit test)."""

from __future__ import annotations

from datetime import UTC, datetime

from syncd.models import Job, JobKind, JobStatus
from syncd.outbound import batch
from syncd.qbo import BATCH_ITEMS, BatchItem

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _job(n: int, kind: JobKind = JobKind.INVOICE_PUSH, status=JobStatus.PENDING) -> Job:
    job = Job.for_invoice("acme", kind, f"I-{n}", NOW)
    job.id, job.status = n, status
    return job


def test_pending_pushes_go_in_batches_of_30_the_rest_alone():
    """61 pushes: 30 + 30 together, the 61st alone (a batch of one is a single write)."""
    jobs = [_job(n) for n in range(61)]
    batches, alone = batch.split(jobs)
    assert [len(b) for b in batches] == [BATCH_ITEMS, BATCH_ITEMS]
    assert [j.id for j in alone] == [60]


def test_sends_and_pushes_in_doubt_never_ride_in_a_batch():
    """A job in flight may have been written: it runs alone and looks first."""
    jobs = [
        _job(1),
        _job(2, JobKind.INVOICE_SEND),
        _job(3, status=JobStatus.IN_FLIGHT),
        _job(4),
        _job(5, JobKind.PAYMENT_PUSH),
    ]
    batches, alone = batch.split(jobs)
    assert [[j.id for j in b] for b in batches] == [[1, 4]]
    assert [j.id for j in alone] == [2, 3, 5]


def test_one_push_is_not_a_batch():
    """Fewer than two pushes: everything alone."""
    jobs = [_job(1), _job(2, JobKind.INVOICE_VOID)]
    assert batch.split(jobs) == ([], jobs)


def test_a_resend_has_the_same_requestid_and_the_next_try_a_new_one():
    """A lost answer's resend gets QBO's first answer; the next try is a new request."""
    items = [BatchItem(str(n), "Invoice", "create", {}) for n in (7, 8)]
    first = batch.request_id(items, [1, 1])
    assert first == batch.request_id(items, [1, 1])
    assert first != batch.request_id(items, [2, 1])
    assert first.startswith("b-") and len(first) <= 36
