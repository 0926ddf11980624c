"""The admin's Retry: the failed job due again, the failure handled, in one transaction.

`job_again` and `plan` decide without I/O; `retry` loads, plans and commits.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Protocol

from syncd.messages import StateChanged
from syncd.models import (
    ChangeSet,
    Failure,
    Invoice,
    Job,
    JobKind,
    JobStatus,
    Subject,
    SyncState,
)
from syncd.store import InvoiceReads, JobQueue, decided_afresh

_INVOICE_JOBS = {k.value for k in JobKind if k.subject is Subject.INVOICE}
NOT_RETRIED = (
    "only a failed QBO write is retried: a refused status move is fixed in the CRM or "
    "the rules, a refused message is sent again by the CRM"
)


class NotRetried(Exception):
    """A failure that a retry cannot help; `status` and `reason` say why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def can_retry(failure: Failure) -> bool:
    """Whether a retry can help: an open failure of a QBO job (the page's Retry button)."""
    return (
        failure.resolved_at is None
        and failure.invoice_id is not None
        and (failure.job_id is not None or failure.operation in _INVOICE_JOBS)
    )


def job_again(earlier: Job | None, failure: Failure, now: datetime) -> Job | None:
    """The failed job, due again with what it carried (a payment's amount, say)."""
    if earlier is not None:
        return dataclasses.replace(
            earlier,
            id=None,
            status=JobStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            last_error=None,
        )
    if failure.operation in _INVOICE_JOBS and failure.invoice_id is not None:
        # recorded before failures named their job: an invoice's job carries nothing
        return Job.for_invoice(
            failure.tenant, JobKind(failure.operation), failure.invoice_id, now
        )
    return None


def plan(
    failure: Failure,
    job: Job,
    invoice: Invoice | None,
    *,
    now: datetime,
) -> ChangeSet:
    """The job and the failure's resolution together: never one without the other."""
    assert failure.id is not None  # noqa: S101 -- retry() checked it
    changes = ChangeSet(jobs=[job], resolved=[(failure.tenant, failure.id, now)])
    if invoice is not None and job.kind.writes_invoice:
        invoice.sync_state, invoice.error = (
            SyncState.PENDING,
            "retry requested by the admin",
        )
        if job.kind is JobKind.INVOICE_PUSH:
            invoice.pushed_body = (
                None  # write it all again: the admin may have fixed QBO
            )
        changes.invoices[(failure.tenant, invoice.invoice_id)] = invoice
        changes.outbox.append(StateChanged.of(invoice, now))
    return changes


class Retrying(JobQueue, InvoiceReads, Protocol):
    """What the admin's retry needs of the store."""


async def retry(store: Retrying, failure: Failure, *, now: datetime) -> None:
    """Queue the failed job again and mark the failure handled, in one transaction."""
    if failure.invoice_id is None or failure.id is None:
        raise NotRetried(404, "no such failure")
    invoice_id = failure.invoice_id

    async def queue_again() -> None:
        earlier = (
            await store.job(failure.job_id) if failure.job_id is not None else None
        )
        job = job_again(earlier, failure, now)
        if job is None:
            raise NotRetried(409, NOT_RETRIED)
        invoice = await store.invoice(failure.tenant, invoice_id)
        await store.commit(plan(failure, job, invoice, now=now))

    await decided_afresh(queue_again)
