"""The job worker: runs due QBO jobs in order per invoice, retries durably, never doubles.

A job is marked in flight (committed) before its QBO call, and its results (invoice ids,
sync state, failures, MQTT messages) are committed together after it, so a crash between
the two leaves an in-flight job whose handler checks QBO before writing again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from syncd.engine.machine import InvoiceMachine
from syncd.engine.rulebook import RuleBook
from syncd.exceptions import (
    FencedError,
    QboError,
    QboTransientError,
)
from syncd.models import (
    ChangeSet,
    Connection,
    Fence,
    Invoice,
    Job,
    JobKind,
    JobStatus,
)
from syncd.outbound import batch, outcomes, record
from syncd.outbound.credit_notes import push_credit_note
from syncd.outbound.money import (
    push_any_payment,
    push_fee,
    push_refund,
    remove_payment,
)
from syncd.outbound.payments import push_customer, push_receipt
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
    write_alone,
)
from syncd.qbo import BatchItem, QboClient, spare
from syncd.qbo.client import NO_RESULT
from syncd.qbo.steps import Step, next_step
from syncd.replicas import Ownership
from syncd.store import Store
from syncd.worker import Clients, LoopWorker

log = structlog.get_logger(__name__)

DUE_LIMIT = 120  # jobs claimed per round: enough for a few full batches


Handler = Callable[[JobContext], Awaitable[None]]

HANDLERS: dict[JobKind, Handler] = {
    JobKind.INVOICE_PUSH: push_invoice,
    JobKind.INVOICE_SEND: send_invoice,
    JobKind.INVOICE_VOID: void_invoice,
    JobKind.INVOICE_DELETE: delete_invoice,
    JobKind.PAYMENT_PUSH: push_any_payment,
    JobKind.RECEIPT_PUSH: push_receipt,
    JobKind.CUSTOMER_PUSH: push_customer,
    JobKind.PAYMENT_REMOVE: remove_payment,
    JobKind.RECEIPT_REMOVE: remove_payment,
    JobKind.FEE_PUSH: push_fee,
    JobKind.REFUND_PUSH: push_refund,
    JobKind.CREDIT_NOTE_PUSH: push_credit_note,
}


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
    While the minute's batch requests are spent, a chunk goes as single requests side by
    side in the minute's other requests: the realm's whole quota carries pushes.
    """

    def __init__(
        self,
        store: Store,
        connections: Clients,
        rulebook: RuleBook,
        *,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None],
        ownership: Ownership | None = None,
    ) -> None:
        super().__init__(
            store,
            connections,
            rulebook,
            clock=clock,
            on_commit=on_commit,
            ownership=ownership,
        )
        self._rounds: dict[str, asyncio.Task[int]] = {}  # tenant → its running round
        self._fences: dict[str, Fence | None] = {}  # tenant → its round's lease

    async def run_once(self, limit: int = DUE_LIMIT) -> int:
        """Start a round for each realm with jobs due and none running; how many jobs."""
        busy = [t for t, task in self._rounds.items() if not task.done()]
        owned = self._ownership.owned()
        if owned == []:
            return 0  # another replica runs every realm now
        due = await self._store.due_jobs(self._clock(), limit, skip=busy, only=owned)
        # unclear jobs of a realm just taken over wait: the call of the replica that held
        # it may still land, and the look-up before writing again must see it
        settled = self._ownership.settled
        jobs = [j for j in due if j.status is JobStatus.PENDING or settled(j.tenant)]
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

    def busy(self, tenant: str) -> bool:
        """Whether a round of the tenant's jobs runs now."""
        task = self._rounds.get(tenant)
        return task is not None and not task.done()

    async def run(self) -> None:
        """Claim and start rounds until stopped; then let the running rounds finish."""
        try:
            await super().run()
        finally:
            running = [t for t in self._rounds.values() if not t.done()]
            await asyncio.shield(asyncio.gather(*running, return_exceptions=True))

    async def _run_tenant(self, tenant: str, jobs: list[Job]) -> None:
        """One realm's due jobs (one per invoice at most): batches, then the rest.

        Under the realm's lease: once another replica has taken it over, nothing of
        the round is committed (FencedError) and the round ends; the new holder finds
        its jobs in flight and looks in QBO before writing again.
        """
        self._fences[tenant] = self._ownership.fence(tenant)
        if not self._ownership.owns(tenant):
            return
        try:
            await self._round_of(tenant, jobs)
        except FencedError as exc:
            log.warning("realm_lease_lost", tenant=tenant, reason=str(exc))

    async def _round_of(self, tenant: str, jobs: list[Job]) -> None:
        if await self._connections.client(tenant) is None:
            # not connected (or paused): every job of the tenant waits, in one write
            now = self._clock()
            count = await self._store.postpone_jobs(
                tenant, now, now + outcomes.WAIT_FOR_CONNECTION
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
            if invoice is not None:
                record.loaded(invoice)
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
            await self._store.start_jobs([job], self._fences.get(job.tenant))
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
            record.loaded(invoice)
            job.status, job.attempts = JobStatus.IN_FLIGHT, job.attempts + 1
            contexts.append(
                self._context(job, invoice, client, conn, machine, False, ChangeSet())
            )
        await self._store.start_jobs(
            [c.job for c in contexts], self._fences.get(tenant)
        )
        await resolve_ahead(contexts)
        ready: list[tuple[JobContext, Prepared]] = []
        for ctx in contexts:
            before = len(ready)
            with bound_contextvars(invoice=ctx.job.queue):
                went = await self._guard(ctx, _prepare_into(ctx, ready))
                if went and len(ready) == before:
                    self._succeeded(ctx)  # nothing to write, or kept out by the filters
        if client.limiter.batch_free():
            await self._write_batch(client, ready)
        else:
            await self._write_singles(ready)
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

    async def _write_singles(self, ready: list[tuple[JobContext, Prepared]]) -> None:
        """What is ready, each in a request of its own, side by side.

        The minute's batch requests are spent: rather than wait for the next, these go
        in the minute's other requests (QBO allows 500, 40 of them batches), and only in
        the room the batches still to come leave (`spare`). The same preparation, claim
        and single commit of results as a batch; each write is a single write's.
        """

        async def one(ctx: JobContext, prepared: Prepared) -> None:
            with spare(), bound_contextvars(invoice=ctx.job.queue):
                await self._attempt(
                    ctx, functools.partial(write_alone, prepared=prepared)
                )

        went = await asyncio.gather(
            *(one(ctx, prepared) for ctx, prepared in ready), return_exceptions=True
        )
        for outcome in went:
            if isinstance(outcome, BaseException):
                raise outcome  # the store failed: the jobs stay in flight

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
            # a try of the call may have written (no answer, then a 429): the job stays
            # in doubt, so its next run looks for that write (a batch would not, and its
            # own request id would not be QBO's dedupe key: a second invoice)
            self._retry(ctx, exc, then.retry_after, unclear=exc.maybe_written)
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
        fence = self._fences.get(done[0][0].tenant) if done else None
        await record.commit(self._store, done, machine, clock=self._clock, fence=fence)

    def _succeeded(self, ctx: JobContext) -> None:
        outcomes.succeeded(ctx, now=self._clock())

    def _retry(
        self,
        ctx: JobContext,
        exc: QboError,
        after: float | None,
        *,
        unclear: bool = False,
    ) -> None:
        outcomes.retry(ctx, exc, after, now=self._clock(), unclear=unclear)

    def _postpone(
        self,
        job: Job,
        invoice: Invoice,
        changes: ChangeSet,
        reason: str,
        *,
        in_doubt: bool,
    ) -> None:
        outcomes.postpone(
            job, invoice, changes, reason, in_doubt=in_doubt, now=self._clock()
        )

    def _fail(
        self, ctx: JobContext, code: str, message: str, *, retryable: bool
    ) -> None:
        outcomes.fail(
            ctx,
            code,
            message,
            retryable=retryable,
            now=self._clock(),
        )

    def _finish(
        self, job: Job, changes: ChangeSet, status: JobStatus, error: str | None
    ) -> None:
        outcomes.finish(job, changes, status, error)
