"""The job worker: runs due QBO jobs in order per invoice, retries durably, never doubles.

A job is marked in flight (committed) before its QBO call, and its results (invoice ids,
sync state, failures, MQTT messages) are committed together after it, so a crash between
the two leaves an in-flight job whose handler checks QBO before writing again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from structlog.contextvars import bound_contextvars

from syncd import metrics
from syncd.bus import events
from syncd.engine import failures, qbo_events
from syncd.engine.decide import jobs_for_move
from syncd.engine.machine import InvoiceMachine
from syncd.exceptions import (
    QboAuthError,
    QboError,
    QboTransientError,
    ResolveError,
    StaleWriteError,
)
from syncd.models import ChangeSet, Failure, Invoice, Job, JobKind, JobStatus, SyncState
from syncd.outbound.payments import push_customer, push_payment, push_receipt
from syncd.outbound.push import (
    JobContext,
    delete_invoice,
    push_invoice,
    send_invoice,
    void_invoice,
)
from syncd.worker import LoopWorker

log = structlog.get_logger(__name__)

BASE_SECONDS, CAP_SECONDS, MAX_ATTEMPTS = 2.0, 300.0, 8
WAIT_FOR_CONNECTION = timedelta(seconds=30)
STALE_TRIES = 3  # another writer changed the invoice during the call: read it again


_QBO_SIDE = (
    "qbo_id",
    "qbo_sync_token",
    "qbo_doc_number",
    "qbo_status",
    "balance",
    "sync_state",
    "error",
    "last_synced_at",
    "pushed_body",
)


Handler = Callable[[JobContext], Awaitable[None]]

HANDLERS: dict[JobKind, Handler] = {
    JobKind.INVOICE_PUSH: push_invoice,
    JobKind.INVOICE_SEND: send_invoice,
    JobKind.INVOICE_VOID: void_invoice,
    JobKind.INVOICE_DELETE: delete_invoice,
    JobKind.PAYMENT_PUSH: push_payment,
    JobKind.RECEIPT_PUSH: push_receipt,
    JobKind.CUSTOMER_PUSH: push_customer,
}


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


def _no_invoice(job: Job, now: datetime) -> Invoice:
    """A receipt or a contact has no CRM invoice: handlers get a placeholder, never stored."""
    return Invoice(
        tenant=job.tenant,
        invoice_id=job.queue,
        status="",
        version=0,
        data={},
        updated_at=now,
    )


def _caught_up(
    job: Job,
    worked: Invoice,
    fresh: Invoice,
    machine: InvoiceMachine | None,
    now: datetime,
) -> list[Job]:
    """Another push when the CRM changed the invoice while this one was in QBO.

    An edit arriving while the first push was in flight queued nothing (the invoice had
    no QBO copy yet), and the push had written the snapshot it started with: QBO kept
    the older total for good (found by the chaos run).
    """
    if (
        machine is None
        or job.kind is not JobKind.INVOICE_PUSH
        or job.status is not JobStatus.DONE
        or fresh.version == worked.version
    ):
        return []
    kinds = jobs_for_move(machine.rules, fresh, entered=False)
    if JobKind.INVOICE_PUSH not in kinds:
        return []
    fresh.sync_state = SyncState.PENDING
    return [Job.for_invoice(fresh.tenant, JobKind.INVOICE_PUSH, fresh.invoice_id, now)]


def _take_qbo_side(fresh: Invoice, worked: Invoice) -> None:
    for name in _QBO_SIDE:
        setattr(fresh, name, getattr(worked, name))


class JobWorker(LoopWorker):
    """Claims due jobs and runs them one at a time (QBO's limits are per realm anyway)."""

    async def run_once(self, limit: int = 20) -> int:
        """Run the jobs due now; return how many ran."""
        jobs = await self._store.due_jobs(self._clock(), limit)
        waiting: set[str] = set()
        for job in jobs:
            if self._stopping.is_set():
                break
            if job.tenant in waiting:
                continue
            if await self._connections.client(job.tenant) is None:
                # not connected (or paused): every job of the tenant waits, in one write
                waiting.add(job.tenant)
                until = self._clock() + WAIT_FOR_CONNECTION
                count = await self._store.postpone_jobs(job.tenant, until)
                log.warning("qbo_not_connected", tenant=job.tenant, jobs_waiting=count)
                continue
            with bound_contextvars(
                tenant=job.tenant, invoice=job.queue, job=job.kind.value
            ):
                await asyncio.shield(self._run(job))
        return len(jobs)

    async def _run(self, job: Job) -> None:
        if job.invoice_id is None:
            invoice: Invoice | None = _no_invoice(job, self._clock())
        else:
            invoice = await self._store.invoice(job.tenant, job.invoice_id)
        machine = self._rulebook.machine(job.tenant)
        changes = ChangeSet()
        seen: list[str] = []
        waiting = "waiting for a QBO connection (connect or reconnect the tenant)"
        try:
            client, conn = await self._connections.connected(job.tenant) or (None, None)
        except QboTransientError as exc:  # the company's settings are still unread
            client, conn = None, None
            waiting = f"waiting for QBO's settings: {exc.message}"
        if invoice is None or machine is None:
            self._finish(
                job, changes, JobStatus.FAILED, "the invoice or its tenant is gone"
            )
        elif client is None or conn is None:
            self._postpone(job, invoice, changes, waiting)
        else:
            unclear = job.status == JobStatus.IN_FLIGHT
            # the intent, committed before the call: in flight, one more attempt
            job.status, job.attempts = JobStatus.IN_FLIGHT, job.attempts + 1
            await self._store.start_job(job)
            ctx = JobContext(
                job=job,
                invoice=invoice,
                client=client,
                connection=conn,
                rules=machine.rules,
                store=self._store,
                now=self._clock(),
                unclear=unclear,
                changes=changes,
            )
            await self._attempt(ctx)
            seen = ctx.seen
        await self._record(job, invoice, changes, machine, seen)
        self._on_commit()

    async def _record(
        self,
        job: Job,
        worked: Invoice | None,
        changes: ChangeSet,
        machine: InvoiceMachine | None = None,
        seen: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Commit the job's results onto the invoice as it stands now.

        The CRM side may have moved on during the QBO call: its fields are kept and the
        QBO side is taken from the job; another writer committing first means reading
        again (the QBO call is never repeated for that). `seen`: the QBO events the job
        saw, each moving the CRM status as the rules map it (RO6).
        """
        for attempt in range(1, STALE_TRIES + 1):
            async with self._store.write_lock:
                batch = changes
                if worked is not None and job.invoice_id is not None:
                    fresh = await self._store.invoice(job.tenant, job.invoice_id)
                    fresh = fresh or worked
                    _take_qbo_side(fresh, worked)
                    now, moved = self._clock(), ChangeSet()
                    if machine is not None:  # a job ran: its tenant has rules
                        for event in seen:
                            await qbo_events.apply(
                                fresh, event, machine, self._prefix, now, moved
                            )
                    again = _caught_up(job, worked, fresh, machine, now)
                    state = events.sync_state(self._prefix, fresh, now, None)
                    batch = dataclasses.replace(
                        changes,
                        invoices={(fresh.tenant, fresh.invoice_id): fresh},
                        history=[*changes.history, *moved.history],
                        failures=[*changes.failures, *moved.failures],
                        outbox=[*changes.outbox, *moved.outbox, state],
                        jobs=[*changes.jobs, *again],
                    )
                try:
                    await self._store.commit(batch)
                except StaleWriteError:
                    if attempt == STALE_TRIES:
                        raise
                    log.info("job_result_recorded_again", attempt=attempt)
                else:
                    return

    async def _attempt(self, ctx: JobContext) -> None:
        job, inv = ctx.job, ctx.invoice
        try:
            await HANDLERS[job.kind](ctx)
        except QboAuthError as exc:
            await self._connections.needs_reconnect(job.tenant, str(exc))
            self._fail(
                ctx,
                "reconnect_needed",
                f"reconnect needed: {exc.message}",
                retryable=True,
            )
            self._postpone(
                job, inv, ctx.changes, "paused: the QBO company must be reconnected"
            )
        except QboTransientError as exc:
            self._retry(ctx, exc, exc.retry_after)
        except QboError as exc:
            if exc.retryable:
                self._retry(ctx, exc, None)
            else:
                self._fail(
                    ctx, exc.code or type(exc).__name__, exc.message, retryable=False
                )
                self._finish(job, ctx.changes, JobStatus.FAILED, exc.message)
        except ResolveError as exc:
            self._fail(ctx, "not_resolved", str(exc), retryable=False)
            self._finish(job, ctx.changes, JobStatus.FAILED, str(exc))
        except Exception as exc:  # a defect: this job fails, recorded; the others go on
            log.exception("job_crashed")
            message = f"internal error ({type(exc).__name__}): see syncd's log"
            self._fail(ctx, "internal_error", message, retryable=True)
            self._finish(job, ctx.changes, JobStatus.FAILED, message)
        else:
            self._succeeded(ctx)

    def _succeeded(self, ctx: JobContext) -> None:
        if ctx.problem:
            self._fail(ctx, *ctx.problem, retryable=False)
        elif ctx.skipped:  # not a failure: the retained state says it, with the reason
            ctx.invoice.sync_state, ctx.invoice.error = SyncState.SKIPPED, ctx.skipped
            log.info("push_skipped", reason=ctx.skipped)
        elif ctx.note:
            ctx.invoice.error = ctx.note
            self._say(ctx, "note", ctx.note, retryable=False)
        log.info("job_done", qbo_id=ctx.invoice.qbo_id, attempts=ctx.job.attempts)
        if ctx.job.attempts > 1 and ctx.job.id is not None and not ctx.problem:
            # it failed before and went through by itself: its failures are over
            ctx.changes.jobs_recovered.append((ctx.job.tenant, ctx.job.id, ctx.now))
        self._finish(ctx.job, ctx.changes, JobStatus.DONE, None)

    def _retry(self, ctx: JobContext, exc: QboError, after: float | None) -> None:
        job = ctx.job
        delay = retry_delay(job.attempts, after, random.random())  # noqa: S311
        if delay is None:
            self._fail(
                ctx,
                exc.code or "transient",
                f"gave up after {job.attempts} attempts: {exc.message}",
                retryable=True,
            )
            self._finish(job, ctx.changes, JobStatus.FAILED, exc.message)
            return
        job.status, job.last_error = JobStatus.PENDING, exc.message
        job.next_attempt_at = self._clock() + timedelta(seconds=delay)
        ctx.invoice.sync_state, ctx.invoice.error = (
            SyncState.PENDING,
            f"retrying: {exc.message}",
        )
        ctx.changes.jobs.append(job)
        metrics.JOB_RETRIES.labels(job.kind.value).inc()
        log.warning(
            "job_retry", error=exc.message, attempts=job.attempts, delay=round(delay, 1)
        )

    def _postpone(
        self, job: Job, invoice: Invoice, changes: ChangeSet, reason: str
    ) -> None:
        job.status, job.last_error = JobStatus.PENDING, reason
        job.next_attempt_at = self._clock() + WAIT_FOR_CONNECTION
        invoice.sync_state, invoice.error = SyncState.PENDING, reason
        changes.jobs.append(job)

    def _fail(
        self, ctx: JobContext, code: str, message: str, *, retryable: bool
    ) -> None:
        """A failure record and an `…/out/sync/failed` message (HS2)."""
        inv = ctx.invoice
        inv.sync_state, inv.error = SyncState.FAILED, message
        self._say(ctx, code, message, retryable=retryable, record=True)
        log.error("job_failed", code=code, error=message)

    def _say(
        self,
        ctx: JobContext,
        code: str,
        message: str,
        *,
        retryable: bool,
        record: bool = False,
    ) -> None:
        failure = Failure(
            tenant=ctx.job.tenant,
            invoice_id=ctx.invoice.invoice_id,
            operation=ctx.job.kind.value,
            code=code,
            message=message,
            event_id=None,
            at=self._clock(),
            attempts=ctx.job.attempts,
            retryable=retryable,
            job_id=ctx.job.id,
        )
        failures.report(ctx.changes, self._prefix, failure, record=record)

    def _finish(
        self, job: Job, changes: ChangeSet, status: JobStatus, error: str | None
    ) -> None:
        job.status, job.last_error = status, error
        changes.jobs.append(job)
