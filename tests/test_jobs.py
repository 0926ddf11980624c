"""Job scheduling and retry policy: the intent ledger's order and its back-off."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.exceptions import QboTransientError, StaleWriteError
from syncd.models import ChangeSet, Invoice, Job, JobKind, JobStatus, SyncState
from syncd.outbound import record
from syncd.outbound.jobs import JobWorker
from syncd.outbound.outcomes import BASE_SECONDS, CAP_SECONDS, MAX_ATTEMPTS, retry_delay
from syncd.outbound.push import JobContext

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
attempts = st.integers(min_value=0, max_value=MAX_ATTEMPTS + 3)
jitter = st.floats(min_value=0, max_value=1, exclude_max=True)


@given(attempts=attempts, jitter=jitter)
def test_back_off_doubles_to_its_cap_and_gives_up_after_the_last_try(attempts, jitter):
    """Transient QBO errors: 2 s doubling to 5 min, a quarter of jitter at most."""
    delay = retry_delay(attempts, None, jitter)
    if attempts >= MAX_ATTEMPTS:
        assert delay is None
        return
    assert delay is not None
    base = min(CAP_SECONDS, BASE_SECONDS * 2 ** max(attempts - 1, 0))
    assert base <= delay < base * 1.25 + 1e-9
    later = retry_delay(attempts + 1, None, jitter)
    assert later is None or later >= delay


@given(
    attempts=st.integers(min_value=0, max_value=MAX_ATTEMPTS - 1),
    after=st.floats(min_value=0.5, max_value=3600),
    jitter=jitter,
)
def test_qbos_retry_after_wins_over_the_back_off(attempts, after, jitter):
    """429 with Retry-After (qbo.md §6): wait at least what QBO asked."""
    delay = retry_delay(attempts, after, jitter)
    assert delay is not None and after <= delay < after * 1.25 + 1e-9


def _payment(payment_id: str, invoice_id: str | None = "I-1", **kw) -> Job:
    kind = JobKind.PAYMENT_PUSH if invoice_id else JobKind.RECEIPT_PUSH
    return Job(
        tenant="acme",
        kind=kind,
        subject=payment_id,
        invoice_id=invoice_id,
        next_attempt_at=NOW,
        payload={"payment_id": payment_id},
        **kw,
    )


def _open_invoice() -> Invoice:
    """An open invoice I-1 of acme, as a job finds it."""
    return Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=1,
        data={},
        updated_at=NOW,
    )


async def test_a_queue_runs_in_order_and_queues_run_side_by_side(store):
    """OD5: a payment waits for its invoice's push; a receipt is its own queue."""
    push = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    other = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-2", NOW)
    later = Job.for_invoice("beta", JobKind.INVOICE_PUSH, "I-1", NOW + timedelta(1))
    await store.commit(
        ChangeSet(jobs=[push, _payment("P-1"), other, _payment("R-1", None), later])
    )
    due = await store.due_jobs(NOW, 10)
    assert [(j.kind, j.queue) for j in due] == [
        (JobKind.INVOICE_PUSH, "I-1"),
        (JobKind.INVOICE_PUSH, "I-2"),
        (JobKind.RECEIPT_PUSH, "receipt:R-1"),
    ]
    first = due[0]
    first.status, first.attempts = JobStatus.IN_FLIGHT, 1
    await store.start_jobs([first])
    # in flight: still first in its queue (a crash leaves its outcome unclear)
    assert (await store.due_jobs(NOW, 10))[0].status is JobStatus.IN_FLIGHT
    await store.commit(ChangeSet(jobs=[replace(first, status=JobStatus.DONE)]))
    [payment] = [j for j in await store.due_jobs(NOW, 10) if j.queue == "I-1"]
    assert (payment.kind, payment.subject, payment.payload) == (
        JobKind.PAYMENT_PUSH,
        "P-1",
        {"payment_id": "P-1"},
    )


async def test_a_pending_job_absorbs_the_same_job_queued_again(store):
    """Ten edits before the worker runs make one push, not ten."""
    pushes = [Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)] * 3
    await store.commit(ChangeSet(jobs=pushes))
    await store.commit(ChangeSet(jobs=[_payment("P-1"), _payment("P-2")]))
    assert [(j.kind, j.subject) for j in await store.jobs("acme")] == [
        (JobKind.INVOICE_PUSH, "I-1"),
        (JobKind.PAYMENT_PUSH, "P-1"),
        (JobKind.PAYMENT_PUSH, "P-2"),
    ]


async def test_a_disconnected_tenant_waits_and_is_due_again_on_reconnect(store):
    """Jobs of a tenant without QBO wait in one write; reconnecting makes them due."""
    await store.commit(
        ChangeSet(
            jobs=[
                Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW),
                Job.for_invoice("beta", JobKind.INVOICE_PUSH, "I-1", NOW),
            ]
        )
    )
    later = NOW + timedelta(seconds=30)
    assert await store.postpone_jobs("acme", NOW, later) == 1
    assert [j.tenant for j in await store.due_jobs(NOW, 10)] == ["beta"]
    assert await store.postpone_jobs("acme", NOW, later) == 0  # not written again
    await store.jobs_due_now("acme", NOW)
    assert {j.tenant for j in await store.due_jobs(NOW, 10)} == {"acme", "beta"}


async def test_a_tenant_waiting_for_a_connection_postpones_its_unclear_jobs_too(store):
    """An unclear job waits with the rest of its tenant's jobs for a connection.

    A job in flight when syncd died stays due (its outcome is unclear); while its tenant
    waits to be reconnected it must wait too. The chaos run found the worker looping on
    it: 100,000 `qbo_not_connected` lines in three minutes.
    """
    push = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    other = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-2", NOW)
    await store.commit(ChangeSet(jobs=[push, other]))
    first = (await store.due_jobs(NOW, 10))[0]
    first.status, first.attempts = JobStatus.IN_FLIGHT, 1
    await store.start_jobs([first])
    assert await store.postpone_jobs("acme", NOW, NOW + timedelta(seconds=30)) == 2
    assert await store.due_jobs(NOW + timedelta(seconds=1), 10) == []
    [again] = await store.due_jobs(NOW + timedelta(seconds=30), 1)
    assert (again.queue, again.status) == ("I-1", JobStatus.IN_FLIGHT)


async def test_removals_under_way_are_the_unfinished_deletes_and_voids(store):
    """What the inbound side asks to tell syncd's own removals from someone else's."""
    jobs = [
        Job.for_invoice("acme", JobKind.INVOICE_DELETE, "I-1", NOW),
        Job.for_invoice("acme", JobKind.INVOICE_VOID, "I-2", NOW),
        Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-3", NOW),
        replace(
            Job.for_invoice("acme", JobKind.INVOICE_DELETE, "I-4", NOW),
            status=JobStatus.DONE,
        ),
        Job.for_invoice("beta", JobKind.INVOICE_DELETE, "I-5", NOW),
    ]
    await store.commit(ChangeSet(jobs=jobs))
    asked = ["I-1", "I-2", "I-3", "I-4", "I-5"]
    assert (await store.writes_under_way("acme", asked)).removing == {"I-1", "I-2"}


async def test_payments_under_way_sum_the_unfinished_payment_jobs(store):
    """What the inbound side asks to tell syncd's own payments from someone else's."""
    jobs = [
        replace(_payment("P-1"), payload={"payment_id": "P-1", "amount": "60.00"}),
        replace(_payment("P-2"), payload={"payment_id": "P-2", "amount": "40.00"}),
        replace(
            _payment("P-3"),
            payload={"payment_id": "P-3", "amount": "5.00"},
            status=JobStatus.DONE,
        ),
    ]
    await store.commit(ChangeSet(jobs=jobs))
    under_way = await store.writes_under_way("acme", ["I-1", "I-9"])
    assert under_way.paying == {"I-1": Decimal("100.00")}
    assert under_way.removing == set()
    # issue 26: a removal under way is said apart (a balance coming back is its own)
    removal = replace(
        _payment("P-1"),
        kind=JobKind.PAYMENT_REMOVE,
        payload={"payment_id": "P-1", "amount": "60.00"},
    )
    await store.commit(ChangeSet(jobs=[removal]))
    under_way = await store.writes_under_way("acme", ["I-1"])
    assert (under_way.paying, under_way.unpaying) == (
        {"I-1": Decimal("100.00")},
        {"I-1"},
    )


async def test_an_event_applied_meanwhile_is_a_stale_write(store):
    """Webhooks and reconciliation both saw one QBO event: the second is decided again.

    Its commit is refused whole (StaleWriteError); it reported a hand-made invoice to
    the CRM twice in the long chaos run.
    """
    await store.commit(
        ChangeSet(inbound_events=[("9130", "invoice-imported:7")], at=NOW)
    )
    with pytest.raises(StaleWriteError):
        await store.commit(
            ChangeSet(inbound_events=[("9130", "invoice-imported:7")], at=NOW)
        )


def _retrying(attempts: int, unclear: bool) -> tuple[JobWorker, JobContext]:
    """A worker and an in-flight push's context, for `_retry` alone (nothing else runs)."""
    nobody: Any = None
    worker = JobWorker(
        nobody,
        nobody,
        nobody,
        clock=lambda: NOW,
        on_commit=lambda: None,
    )
    job = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    job.status, job.attempts = JobStatus.IN_FLIGHT, attempts
    inv = _open_invoice()
    ctx = JobContext(
        job=job,
        invoice=inv,
        client=nobody,
        connection=nobody,
        rules=nobody,
        store=nobody,
        now=NOW,
        unclear=unclear,
        changes=ChangeSet(),
    )
    return worker, ctx


@pytest.mark.parametrize(
    ("started_in_doubt", "unanswered", "status"),
    [
        (False, False, JobStatus.PENDING),  # refused (a 429): clearly not written
        (False, True, JobStatus.IN_FLIGHT),  # a batch with no answer
        (True, False, JobStatus.IN_FLIGHT),  # its look-up may not have run
    ],
)
def test_a_job_in_doubt_stays_in_flight_when_put_back(
    started_in_doubt: bool, unanswered: bool, status: JobStatus
):
    """HS11, OD5: only a job known not written goes back to `pending`.

    Found by the CI chaos run with batches: a batch's write whose record a SIGKILL lost
    was in doubt; its look-up was throttled, the retry put it back to `pending`, and the
    next batch wrote the invoice again (QBO refused the number twice, 6140).
    """
    worker, ctx = _retrying(attempts=2, unclear=started_in_doubt)
    job, inv = ctx.job, ctx.invoice
    throttled = QboTransientError("QBO 3001", "3001", retry_after=60.0)
    worker._retry(ctx, throttled, 60.0, unclear=unanswered)
    assert job.status is status
    assert job.next_attempt_at > NOW and inv.sync_state == "pending"


async def test_a_single_write_that_may_have_landed_stays_in_doubt():
    """Issue 25, the three-replica long run: no answer, then a 429 within one call.

    The call's error said `maybe_written`, but the single path put the job back to
    `pending`; a batch then wrote the invoice again under its own request id (6140).
    """
    worker, ctx = _retrying(attempts=3, unclear=False)
    refused = QboTransientError("QBO 3001", "3001", retry_after=1.0)
    refused.maybe_written = True  # an earlier try of the same call got no answer
    await worker._after(ctx, refused)
    assert ctx.job.status is JobStatus.IN_FLIGHT
    clear = QboTransientError("QBO 3001", "3001", retry_after=1.0)
    worker, ctx = _retrying(attempts=3, unclear=False)
    await worker._after(ctx, clear)
    assert ctx.job.status is JobStatus.PENDING


def test_a_throttled_job_never_uses_up_its_tries():
    """QBO's 429 is the realm's state: a job at its last try waits QBO's pause again.

    Found by the long chaos run with batches: every restart of syncd forgot what it had
    sent within QBO's minute, and one invoice gave up after 8 throttled tries.
    """
    worker, ctx = _retrying(attempts=MAX_ATTEMPTS, unclear=False)
    job = ctx.job
    worker._retry(ctx, QboTransientError("QBO 3001", "3001", retry_after=60.0), 60.0)
    assert job.status is JobStatus.PENDING and ctx.changes.failures == []
    assert job.next_attempt_at >= NOW + timedelta(seconds=60)
    other = QboTransientError("QBO 10000", "10000")
    worker._retry(ctx, other, None)  # a server error still counts
    assert [f.code for f in ctx.changes.failures] == ["10000"]


async def test_one_realms_burst_never_holds_another_realm_back(store):
    """Issue 14, 10 realms at once: due jobs are claimed per realm; each realm runs alone.

    Found by bench_bulk --realms 10: the first realm's thousands of jobs filled every
    round (oldest first across realms) and the others waited, and while that realm waited
    for its QBO quota, the whole round did.
    """
    burst = [
        Job.for_invoice("acme", JobKind.INVOICE_PUSH, f"A-{n}", NOW) for n in range(300)
    ]
    other = [
        Job.for_invoice("beta", JobKind.INVOICE_PUSH, f"B-{n}", NOW) for n in range(3)
    ]
    await store.commit(ChangeSet(jobs=[*burst, *other]))
    due = await store.due_jobs(NOW, 120)
    assert sum(j.tenant == "acme" for j in due) == 120
    assert sum(j.tenant == "beta" for j in due) == 3
    assert {j.tenant for j in await store.due_jobs(NOW, 120, skip=["acme"])} == {"beta"}

    nobody: Any = None
    worker = JobWorker(store, nobody, nobody, clock=lambda: NOW, on_commit=lambda: None)
    quota = asyncio.Event()  # acme waits for its quota
    rounds: list[tuple[str, int]] = []

    async def run_tenant(tenant: str, jobs: list[Job]) -> None:
        rounds.append((tenant, len(jobs)))
        if tenant == "acme":
            await quota.wait()

    worker._run_tenant = run_tenant  # type: ignore[method-assign]
    async with asyncio.timeout(5):
        assert await worker.run_once() == 123  # returns while acme waits
        await asyncio.sleep(0)
        # beta again (its jobs stayed due: this stand-in finishes none), acme not
        assert await worker.run_once() == 3
        await asyncio.sleep(0)
    assert rounds == [("acme", 120), ("beta", 3), ("beta", 3)]
    quota.set()
    worker.stop()
    await worker.run()  # the running round ends before run does


async def test_a_jobs_results_win_their_race_against_busy_crm_traffic():
    """Issue 25, the 30-minute run: a batch's results lost their race three times.

    Other replicas' intake wrote the same invoices three times in a row while they were
    recorded; the round failed (worker_iteration_failed) and left them unrecorded.
    """
    inv = _open_invoice()

    class Busy:
        """A store whose invoice another writer changes five times first."""

        def __init__(self) -> None:
            self.lost, self.kept = 0, 0

        async def invoice(self, tenant: str, invoice_id: str) -> Invoice:
            return replace(inv)

        async def commit(self, changes: ChangeSet) -> None:
            if self.lost < 5:
                self.lost += 1
                raise StaleWriteError("an invoice changed since it was read")
            self.kept += 1

    store = Busy()
    job = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    job.id = 1
    recording: Any = store  # the two calls record makes
    await record.commit(
        recording, [(job, replace(inv), ChangeSet(), [])], None, clock=lambda: NOW
    )
    assert (store.lost, store.kept) == (5, 1)


async def test_a_job_writes_back_only_what_it_changed_of_qbos_side():
    """Issue 26's long chaos run: a job with nothing to write put an older balance back.

    A webhook moved the invoice's balance and SyncToken while the job ran; recording
    the job copied its whole (older) QBO side onto the row.
    """
    worked = record.loaded(_open_invoice())
    worked.sync_state = SyncState.SYNCED  # all the job changed
    stored = replace(worked, balance="264.30", qbo_sync_token="9", loaded_qbo=None)
    job = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
    changes = await record.onto_fresh(job, worked, stored, ChangeSet(), None, [], NOW)
    [kept] = changes.invoices.values()
    assert (kept.balance, kept.qbo_sync_token, kept.sync_state) == (
        "264.30",
        "9",
        SyncState.SYNCED,
    )
