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
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from syncd import metrics
from syncd.bus import events
from syncd.engine import failures, qbo_events
from syncd.engine.decide import jobs_for_move
from syncd.engine.machine import InvoiceMachine
from syncd.exceptions import (
    QboError,
    QboTransientError,
    StaleWriteError,
    StoreError,
)
from syncd.models import (
    ChangeSet,
    Connection,
    Failure,
    Invoice,
    Job,
    JobKind,
    JobStatus,
    SyncState,
)
from syncd.outbound import batch
from syncd.outbound.payments import push_customer, push_payment, push_receipt
from syncd.outbound.push import (
    JobContext,
    Prepared,
    batch_body,
    delete_invoice,
    prepare_push,
    push_invoice,
    resolve_ahead,
    send_invoice,
    void_invoice,
)
from syncd.qbo import BatchItem, QboClient
from syncd.qbo.client import NO_RESULT
from syncd.qbo.steps import Step, next_step
from syncd.worker import LoopWorker

log = structlog.get_logger(__name__)

BASE_SECONDS, CAP_SECONDS, MAX_ATTEMPTS = 2.0, 300.0, 8
DUE_LIMIT = 120  # jobs claimed per round: enough for a few full batches
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


async def _prepare_into(
    ctx: JobContext, ready: list[tuple[JobContext, Prepared]]
) -> None:
    """What the job's push would write, added to `ready` (nothing when nothing to)."""
    if (prepared := await prepare_push(ctx)) is not None:
        ready.append((ctx, prepared))


class JobWorker(LoopWorker):
    """Claims due jobs and runs them: each realm on its own, each realm's in turn.

    A realm's round is a task of its own: a realm waiting on its QBO quota (or a slow
    answer) never holds the others back, and its jobs are not claimed again until its
    round ends. Creates and updates of several invoices of one realm due together go as
    QBO batch requests (up to 30 each); a lone one goes as a single request, for latency.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rounds: dict[str, asyncio.Task[int]] = {}  # tenant → its running round

    async def run_once(self, limit: int = DUE_LIMIT) -> int:
        """Start a round for each realm with jobs due and none running; how many jobs."""
        busy = [t for t, task in self._rounds.items() if not task.done()]
        jobs = await self._store.due_jobs(self._clock(), limit, skip=busy)
        by_tenant: dict[str, list[Job]] = {}
        for job in jobs:
            by_tenant.setdefault(job.tenant, []).append(job)
        for tenant, due in by_tenant.items():
            round_ = self.guarded(self._run_tenant(tenant, due))
            with bound_contextvars(tenant=tenant):  # the task's log lines name it
                task = asyncio.create_task(round_, name=f"jobs:{tenant}")
            task.add_done_callback(lambda _: self.wake())
            self._rounds[tenant] = task
        return len(jobs)

    async def run(self) -> None:
        """Claim and start rounds until stopped; then let the running rounds finish."""
        try:
            await super().run()
        finally:
            running = [t for t in self._rounds.values() if not t.done()]
            await asyncio.shield(asyncio.gather(*running, return_exceptions=True))

    async def _run_tenant(self, tenant: str, jobs: list[Job]) -> None:
        """One realm's due jobs (one per invoice at most): batches, then the rest."""
        if await self._connections.client(tenant) is None:
            # not connected (or paused): every job of the tenant waits, in one write
            now = self._clock()
            count = await self._store.postpone_jobs(
                tenant, now, now + WAIT_FOR_CONNECTION
            )
            log.warning("qbo_not_connected", tenant=tenant, jobs_waiting=count)
            return
        batched, alone = batch.split(jobs)
        for chunk in batched:
            if self.stopping:
                return
            with bound_contextvars(tenant=tenant, batch=len(chunk)):
                await self._run_batch(chunk)
        for job in alone:
            if self.stopping:
                return
            with bound_contextvars(
                tenant=tenant, invoice=job.queue, job=job.kind.value
            ):
                await self._run(job)

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
            self._postpone(
                job,
                invoice,
                changes,
                waiting,
                in_doubt=job.status == JobStatus.IN_FLIGHT,
            )
        else:
            unclear = job.status == JobStatus.IN_FLIGHT
            # the intent, committed before the call: in flight, one more attempt
            job.status, job.attempts = JobStatus.IN_FLIGHT, job.attempts + 1
            await self._store.start_jobs([job])
            ctx = self._context(job, invoice, client, conn, machine, unclear, changes)
            await self._attempt(ctx)
            seen = ctx.seen
        await self._record([(job, invoice, changes, seen)], machine)
        self._on_commit()

    def _context(
        self,
        job: Job,
        invoice: Invoice,
        client: QboClient,
        conn: Connection,
        machine: InvoiceMachine,
        unclear: bool,
        changes: ChangeSet,
    ) -> JobContext:
        """What one job's handler runs with (single or in a batch)."""
        return JobContext(
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

    async def _run_batch(self, jobs: list[Job]) -> None:
        """Pushes of several invoices of one realm in one batch request.

        The same guarantees as single writes: each job is in flight (committed) before
        the request, each item's answer or fault is that job's own, and a request whose
        outcome is unclear (no answer) leaves its jobs in flight, so each looks for its
        own earlier write (the marker) before writing again.
        """
        tenant = jobs[0].tenant
        machine = self._rulebook.machine(tenant)
        try:
            connected = await self._connections.connected(tenant)
        except QboTransientError:
            connected = None
        if machine is None or connected is None:
            for job in jobs:  # the single path says why, job by job
                await self._run(job)
            return
        client, conn = connected
        found = await self._store.load_invoices(
            tenant, [j.queue for j in jobs if j.invoice_id is not None]
        )
        contexts: list[JobContext] = []
        for job in jobs:
            invoice = found.get(job.queue)
            if invoice is None:
                await self._run(job)  # gone: the single path records it
                continue
            job.status, job.attempts = JobStatus.IN_FLIGHT, job.attempts + 1
            contexts.append(
                self._context(job, invoice, client, conn, machine, False, ChangeSet())
            )
        await self._store.start_jobs([c.job for c in contexts])
        await resolve_ahead(contexts)
        ready: list[tuple[JobContext, Prepared]] = []
        for ctx in contexts:
            before = len(ready)
            with bound_contextvars(invoice=ctx.job.queue):
                went = await self._guard(ctx, _prepare_into(ctx, ready))
                if went and len(ready) == before:
                    self._succeeded(ctx)  # nothing to write, or kept out by the filters
        await self._write_batch(client, ready)
        await self._record(
            [(c.job, c.invoice, c.changes, c.seen) for c in contexts], machine
        )
        self._on_commit()

    async def _write_batch(
        self, client: QboClient, ready: list[tuple[JobContext, Prepared]]
    ) -> None:
        """One batch request for what is ready; each job takes its own item's answer."""
        if not ready:
            return
        items = [
            BatchItem(str(ctx.job.id), "Invoice", *batch_body(ctx.invoice, prepared))
            for ctx, prepared in ready
        ]
        results: dict[str, dict[str, Any] | QboError]
        try:
            tries = [ctx.job.attempts for ctx, _ in ready]
            results = await client.batch(items, batch.request_id(items, tries))
        except QboError as exc:
            if exc.maybe_written:  # a try got no answer: written or not, nobody knows
                for ctx, _ in ready:
                    self._retry(ctx, exc, None, unclear=True)
                return
            results = {item.bid: exc for item in items}
        for ctx, prepared in ready:
            result = results[str(ctx.job.id)]
            with bound_contextvars(invoice=ctx.job.queue):
                if isinstance(result, QboError) and result.code == NO_RESULT:
                    self._retry(ctx, result, None, unclear=True)
                else:
                    await self._attempt(ctx, batch.take(prepared, result))

    async def _attempt(self, ctx: JobContext, handler: Handler | None = None) -> None:
        """Run the job's handler (or `handler`); on success, the job is done."""
        if await self._guard(ctx, (handler or HANDLERS[ctx.job.kind])(ctx)):
            self._succeeded(ctx)

    async def _guard(self, ctx: JobContext, work: Awaitable[None]) -> bool:
        """Run `work` for the job; True when it went through, else the job is handled.

        Each failure is the job's own: retried, failed with a record, or postponed, as
        `next_step` says. A store that cannot be used is raised: the job stays in flight
        and the worker pauses.
        """
        try:
            await work
        except Exception as exc:  # noqa: BLE001 -- every failure: next_step says what next
            await self._after(ctx, exc)
            return False
        return True

    async def _after(self, ctx: JobContext, exc: Exception) -> None:
        job, inv = ctx.job, ctx.invoice
        then = next_step(exc)
        if then.step is Step.STORE:
            raise exc
        if then.step is Step.RECONNECT:
            await self._connections.needs_reconnect(job.tenant, str(exc))
            self._fail(ctx, then.code, then.message, retryable=True)
            self._postpone(
                job,
                inv,
                ctx.changes,
                "paused: the QBO company must be reconnected",
                in_doubt=ctx.unclear,
            )
        elif then.step is Step.RETRY and isinstance(exc, QboError):
            self._retry(ctx, exc, then.retry_after)
        else:
            if then.step is Step.DEFECT:  # this job fails, recorded; the others go on
                log.error("job_crashed", exc_info=exc)
            retryable = then.step is Step.DEFECT
            self._fail(ctx, then.code, then.message, retryable=retryable)
            self._finish(job, ctx.changes, JobStatus.FAILED, then.message)

    async def _record(
        self,
        done: list[tuple[Job, Invoice | None, ChangeSet, list[str]]],
        machine: InvoiceMachine | None,
    ) -> None:
        """Commit the jobs' results onto their invoices as they stand now, in one write.

        Each entry: a job, the invoice it worked on, its changes and the QBO events it
        saw. The CRM side may have moved on during the QBO call: its fields are kept and
        the QBO side is taken from the job; another writer committing first means
        reading again (the QBO call is never repeated for that). Each event seen moves
        the CRM status as the rules map it (RO6). A batch's results that cannot be
        committed together are committed one job at a time: one bad result never holds
        back the others'.
        """
        if await self._commit_together(done, machine):
            return
        for entry in done:
            try:
                await self._record([entry], machine)
            except StoreError:
                raise
            except Exception:
                log.exception("job_result_not_recorded", job_id=entry[0].id)

    async def _commit_together(
        self,
        done: list[tuple[Job, Invoice | None, ChangeSet, list[str]]],
        machine: InvoiceMachine | None,
    ) -> bool:
        """True once committed; False when a batch's results must go one by one."""
        for attempt in range(1, STALE_TRIES + 1):
            async with self._store.write_lock:
                batch_changes = ChangeSet()
                for job, worked, changes, seen in done:
                    batch_changes.merge(
                        await self._onto_fresh(job, worked, changes, machine, seen)
                    )
                try:
                    await self._store.commit(batch_changes)
                except StaleWriteError:
                    if attempt == STALE_TRIES:
                        raise
                    log.info("job_result_recorded_again", attempt=attempt)
                    continue
                except StoreError:
                    raise  # the store itself: intake pauses, the jobs stay in flight
                except Exception:
                    if len(done) == 1:
                        raise
                    log.warning("batch_result_recorded_job_by_job", exc_info=True)
                    return False
                return True
        raise AssertionError("unreachable")  # pragma: no cover

    async def _onto_fresh(
        self,
        job: Job,
        worked: Invoice | None,
        changes: ChangeSet,
        machine: InvoiceMachine | None,
        seen: list[str],
    ) -> ChangeSet:
        """One job's results onto the invoice as stored now (read under the lock)."""
        if worked is None or job.invoice_id is None:
            return changes
        fresh = await self._store.invoice(job.tenant, job.invoice_id)
        fresh = fresh or worked
        _take_qbo_side(fresh, worked)
        now, moved = self._clock(), ChangeSet()
        if machine is not None:  # a job ran: its tenant has rules
            for event in seen:
                await qbo_events.apply(fresh, event, machine, self._prefix, now, moved)
        again = _caught_up(job, worked, fresh, machine, now)
        state = events.sync_state(self._prefix, fresh, now, None)
        return dataclasses.replace(
            changes,
            invoices={(fresh.tenant, fresh.invoice_id): fresh},
            history=[*changes.history, *moved.history],
            failures=[*changes.failures, *moved.failures],
            outbox=[*changes.outbox, *moved.outbox, state],
            jobs=[*changes.jobs, *again],
        )

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

    def _retry(
        self,
        ctx: JobContext,
        exc: QboError,
        after: float | None,
        *,
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
            self._fail(
                ctx,
                exc.code or "transient",
                f"gave up after {job.attempts} attempts: {exc.message}",
                retryable=True,
            )
            self._finish(job, ctx.changes, JobStatus.FAILED, exc.message)
            return
        in_doubt = unclear or ctx.unclear
        job.status = JobStatus.IN_FLIGHT if in_doubt else JobStatus.PENDING
        job.last_error = exc.message
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
        self,
        job: Job,
        invoice: Invoice,
        changes: ChangeSet,
        reason: str,
        *,
        in_doubt: bool,
    ) -> None:
        """Wait for a connection; a job in doubt stays in flight (see `_retry`)."""
        job.status = JobStatus.IN_FLIGHT if in_doubt else JobStatus.PENDING
        job.last_error = reason
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
