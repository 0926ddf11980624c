"""What becomes of a job after its try: done, retried, postponed or failed. No I/O.

Each function records the outcome on the job, its invoice and the ChangeSet that the
job worker commits; the worker only decides which one applies.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import structlog

from syncd import metrics
from syncd.engine import failures
from syncd.exceptions import QboError
from syncd.models import ChangeSet, Failure, Invoice, Job, JobStatus, SyncState
from syncd.outbound.push import JobContext

log = structlog.get_logger(__name__)
BASE_SECONDS, CAP_SECONDS, MAX_ATTEMPTS = 2.0, 300.0, 8
WAIT_FOR_CONNECTION = timedelta(seconds=30)


def retry_delay(
    attempts: int, retry_after: float | None, jitter: float
) -> float | None:
    """Seconds until a failed job's next try, or None when it has had its tries.

    QBO's Retry-After when it gave one, else 2 s doubling to 5 min; plus up to a quarter
    more (`jitter` in [0, 1)) so that many jobs failed together do not return together.
    """
    if attempts >= MAX_ATTEMPTS:
        return None
    delay = retry_after or min(CAP_SECONDS, BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return delay + delay / 4 * jitter


def succeeded(ctx: JobContext, *, now: datetime) -> None:
    """The job went through: what it noted, skipped or found wrong is said; it is done."""
    if ctx.problem:
        fail(ctx, *ctx.problem, retryable=False, now=now)
    elif ctx.skipped:  # not a failure: the retained state says it, with the reason
        ctx.invoice.sync_state, ctx.invoice.error = SyncState.SKIPPED, ctx.skipped
        log.info("push_skipped", reason=ctx.skipped)
    elif ctx.note:
        ctx.invoice.error = ctx.note
        say(ctx, "note", ctx.note, retryable=False, now=now)
    log.info("job_done", qbo_id=ctx.invoice.qbo_id, attempts=ctx.job.attempts)
    if ctx.job.attempts > 1 and ctx.job.id is not None and not ctx.problem:
        # it failed before and went through by itself: its failures are over
        ctx.changes.jobs_recovered.append((ctx.job.tenant, ctx.job.id, ctx.now))
    finish(ctx.job, ctx.changes, JobStatus.DONE, None)


def retry(
    ctx: JobContext,
    exc: QboError,
    after: float | None,
    *,
    now: datetime,
    unclear: bool = False,
) -> None:
    """Another try later, or a failure after the last; `unclear`: it may be written.

    A job in doubt stays in flight: its next try looks for its own earlier write
    before writing again. One that started in doubt stays so (its look-up may not
    have run: the chaos run found a batch's write, its record lost to a SIGKILL,
    written again after the look-up was throttled).
    """
    job = ctx.job
    # QBO's throttle is the realm's state, not this job's fault: it never uses up
    # the job's tries (it waits the pause QBO asks for, as long as QBO asks)
    tries = 1 if after is not None else job.attempts
    delay = retry_delay(tries, after, random.random())  # noqa: S311
    if delay is None:
        fail(
            ctx,
            exc.code or "transient",
            f"gave up after {job.attempts} attempts: {exc.message}",
            retryable=True,
            now=now,
        )
        finish(job, ctx.changes, JobStatus.FAILED, exc.message)
        return
    in_doubt = unclear or ctx.unclear
    job.status = JobStatus.IN_FLIGHT if in_doubt else JobStatus.PENDING
    job.last_error = exc.message
    job.next_attempt_at = now + timedelta(seconds=delay)
    if job.kind.writes_invoice:
        ctx.invoice.sync_state, ctx.invoice.error = (
            SyncState.PENDING,
            f"retrying: {exc.message}",
        )
    ctx.changes.jobs.append(job)
    metrics.JOB_RETRIES.labels(job.kind.value).inc()
    log.warning(
        "job_retry", error=exc.message, attempts=job.attempts, delay=round(delay, 1)
    )


def postpone(
    job: Job,
    invoice: Invoice,
    changes: ChangeSet,
    reason: str,
    *,
    in_doubt: bool,
    now: datetime,
) -> None:
    """Wait for a connection; a job in doubt stays in flight (see `retry`)."""
    job.status = JobStatus.IN_FLIGHT if in_doubt else JobStatus.PENDING
    job.last_error = reason
    job.next_attempt_at = now + WAIT_FOR_CONNECTION
    if job.kind.writes_invoice:
        invoice.sync_state, invoice.error = SyncState.PENDING, reason
    changes.jobs.append(job)


def fail(
    ctx: JobContext,
    code: str,
    message: str,
    *,
    retryable: bool,
    now: datetime,
) -> None:
    """A failure record and an `…/out/sync/failed` message (HS2)."""
    inv = ctx.invoice
    if ctx.job.kind.writes_invoice:
        inv.sync_state, inv.error = SyncState.FAILED, message
    say(ctx, code, message, retryable=retryable, now=now, record=True)
    log.error("job_failed", code=code, error=message)


def say(
    ctx: JobContext,
    code: str,
    message: str,
    *,
    retryable: bool,
    now: datetime,
    record: bool = False,
) -> None:
    """`…/out/sync/failed` (and, with `record`, a failure for the admin's panel)."""
    failure = Failure(
        tenant=ctx.job.tenant,
        invoice_id=ctx.invoice.invoice_id,
        operation=ctx.job.kind.value,
        code=code,
        message=message,
        event_id=None,
        at=now,
        attempts=ctx.job.attempts,
        retryable=retryable,
        job_id=ctx.job.id,
    )
    failures.report(ctx.changes, failure, record=record)


def finish(job: Job, changes: ChangeSet, status: JobStatus, error: str | None) -> None:
    """The job ends (done or failed), with the error it ended on."""
    job.status, job.last_error = status, error
    changes.jobs.append(job)
