"""The job worker: runs due QBO jobs in order per invoice, retries durably, never doubles.

A job is marked in flight (committed) before its QBO call, and its results (invoice ids,
sync state, failures, MQTT messages) are committed together after it, so a crash between
the two leaves an in-flight job whose handler checks QBO before writing again.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from syncd import events, failures
from syncd.exceptions import QboAuthError, QboError, QboTransientError, ResolveError
from syncd.models import ChangeSet, Failure, Invoice, Job, JobStatus, SyncState
from syncd.push import HANDLERS, JobContext
from syncd.push_payments import push_customer, push_payment, push_receipt
from syncd.worker import LoopWorker

log = structlog.get_logger(__name__)

_NO_INVOICE = ("receipt.", "customer.")  # jobs about no CRM invoice
BASE_SECONDS, CAP_SECONDS, MAX_ATTEMPTS = 2.0, 300.0, 8
WAIT_FOR_CONNECTION = timedelta(seconds=30)


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


def _no_invoice(job: Job, now: datetime) -> Invoice:
    """A sales receipt has no CRM invoice: handlers get a placeholder, never stored."""
    return Invoice(
        tenant=job.tenant,
        invoice_id=job.invoice_id,
        status="",
        version=0,
        data={},
        updated_at=now,
    )


def _take_qbo_side(fresh: Invoice, worked: Invoice) -> None:
    for name in _QBO_SIDE:
        setattr(fresh, name, getattr(worked, name))


def _handler(kind: str) -> Any:
    """`payment.push:<id>` is one job per payment; others are named by their kind."""
    base = kind.split(":", 1)[0]
    extra = {
        "payment.push": push_payment,
        "receipt.push": push_receipt,
        "customer.push": push_customer,
    }
    return {**HANDLERS, **extra}[base]


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
                tenant=job.tenant, invoice=job.invoice_id, job=job.kind
            ):
                await asyncio.shield(self._run(job))
        return len(jobs)

    async def _run(self, job: Job) -> None:
        invoice = await self._store.invoice(job.tenant, job.invoice_id)
        if job.kind.startswith(_NO_INVOICE) and invoice is None:
            invoice = _no_invoice(job, self._clock())
        machine = self._rulebook.machine(job.tenant)
        changes = ChangeSet()
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
        async with self._store.write_lock:
            if invoice is not None and not job.kind.startswith(_NO_INVOICE):
                # the CRM side may have moved on during the QBO call: keep its fields
                fresh = await self._store.invoice(job.tenant, job.invoice_id) or invoice
                _take_qbo_side(fresh, invoice)
                changes.invoices[(fresh.tenant, fresh.invoice_id)] = fresh
                changes.outbox.append(
                    events.sync_state(self._prefix, fresh, self._clock(), None)
                )
            await self._store.commit(changes)
        self._on_commit()

    async def _attempt(self, ctx: JobContext) -> None:
        job, inv = ctx.job, ctx.invoice
        try:
            await _handler(job.kind)(ctx)
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
        self._finish(ctx.job, ctx.changes, JobStatus.DONE, None)

    def _retry(self, ctx: JobContext, exc: QboError, after: float | None) -> None:
        job = ctx.job
        if job.attempts >= MAX_ATTEMPTS:
            self._fail(
                ctx,
                exc.code or "transient",
                f"gave up after {job.attempts} attempts: {exc.message}",
                retryable=True,
            )
            self._finish(job, ctx.changes, JobStatus.FAILED, exc.message)
            return
        delay = after or min(CAP_SECONDS, BASE_SECONDS * 2 ** (job.attempts - 1))
        delay += random.uniform(0, delay / 4)  # noqa: S311 -- jitter, not secrecy
        job.status, job.last_error = JobStatus.PENDING, exc.message
        job.next_attempt_at = self._clock() + timedelta(seconds=delay)
        ctx.invoice.sync_state, ctx.invoice.error = (
            SyncState.PENDING,
            f"retrying: {exc.message}",
        )
        ctx.changes.jobs.append(job)
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
            operation=ctx.job.kind,
            code=code,
            message=message,
            event_id=None,
            at=self._clock(),
            attempts=ctx.job.attempts,
            retryable=retryable,
        )
        failures.report(ctx.changes, self._prefix, failure, record=record)

    def _finish(
        self, job: Job, changes: ChangeSet, status: JobStatus, error: str | None
    ) -> None:
        job.status, job.last_error = status, error
        changes.jobs.append(job)
