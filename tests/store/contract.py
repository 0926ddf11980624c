"""The store contract (issue 24): one suite, every implementation held to it.

The vdirsyncer pattern: `StoreContract` holds the tests, each module under
`tests/store/` subclasses it with a `store` fixture for one database. A behaviour every
role promises is tested here, never against one database's files or errors.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from syncd.exceptions import FencedError, RealmTakenError, StaleWriteError, StoreError
from syncd.messages import ConnectionState, SyncFailed
from syncd.models import (
    ChangeSet,
    Connection,
    CreditNote,
    Failure,
    Fence,
    Held,
    HistoryEntry,
    Invoice,
    Job,
    JobKind,
    JobStatus,
    LedgerEntry,
    MoneyKind,
    MoneyState,
    Outcome,
    Parked,
    PaymentRecord,
    SyncState,
)
from syncd.store import Store

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def ledger(message_id: str, tenant: str = "acme") -> LedgerEntry:
    return LedgerEntry(
        tenant=tenant,
        message_id=message_id,
        topic="t",
        type="invoice.upserted",
        outcome=Outcome.APPLIED,
        reason="",
        received_at=NOW,
    )


def invoice(
    invoice_id: str = "I-1",
    tenant: str = "acme",
    status: str = "open",
    state: SyncState = SyncState.PENDING,
) -> Invoice:
    return Invoice(
        tenant=tenant,
        invoice_id=invoice_id,
        status=status,
        version=1,
        data={"total": "10.00"},
        updated_at=NOW,
        sync_state=state,
    )


def failure(tenant: str = "acme", invoice_id: str = "I-1") -> Failure:
    return Failure(
        tenant=tenant,
        invoice_id=invoice_id,
        operation="invoice.push",
        code="6000",
        message="QBO refused",
        event_id=None,
        at=NOW,
    )


def connection(tenant: str, realm_id: str) -> Connection:
    return Connection(
        tenant=tenant,
        realm_id=realm_id,
        status="connected",
        sealed_token=b"sealed",
        connected_at=NOW,
    )


class StoreContract:
    """What every Store promises, role by role. Subclasses give the `store` fixture."""

    # Committer: one ChangeSet, one transaction

    async def test_a_change_set_commits_whole_or_not_at_all(self, store: Store) -> None:
        await store.commit(ChangeSet(ledger=[ledger("m-1")]))
        broken = ChangeSet(
            ledger=[ledger("m-2"), ledger("m-1")],  # m-1 again: a unique key broken
            invoices={("acme", "I-1"): invoice()},
            outbox=[SyncFailed(tenant="acme", at=NOW, data={})],
        )
        with pytest.raises(Exception):  # noqa: B017, PT011 -- each database has its own
            await store.commit(broken)
        known = await store.known_messages([("acme", "m-1"), ("acme", "m-2")])
        assert known == {("acme", "m-1")}
        assert await store.invoice("acme", "I-1") is None
        assert await store.pending_outbox(10) == []

    async def test_round_trip_and_tenant_isolation(self, store: Store) -> None:
        move = HistoryEntry(
            tenant="acme",
            invoice_id="I-1",
            from_status="draft",
            to_status="open",
            cause="crm",
            event_id="m-1",
            at=NOW,
        )
        changes = ChangeSet(
            ledger=[ledger("m-1")],
            invoices={("acme", "I-1"): invoice()},
            history=[move],
        )
        await store.commit(changes)
        loaded = await store.invoice("acme", "I-1")
        assert loaded is not None
        assert (loaded.status, loaded.version, loaded.total) == ("open", 1, "10.00")
        assert await store.invoice("beta", "I-1") is None
        assert await store.history("acme", "I-1") == [move]
        assert await store.known_messages([("beta", "m-1")]) == set()
        assert set(await store.load_invoices("acme", ["I-1", "I-2"])) == {"I-1"}

    # writes to one invoice serialise in the store, across processes

    async def test_a_stale_copy_of_an_invoice_is_refused_whole(
        self, store: Store
    ) -> None:
        new = invoice(status="draft")
        await store.commit(ChangeSet(invoices={("acme", "I-1"): new}))
        with pytest.raises(StaleWriteError):  # "new" again: someone stored it first
            await store.commit(ChangeSet(invoices={("acme", "I-1"): new}))
        first = await store.invoice("acme", "I-1")
        second = await store.invoice("acme", "I-1")
        assert first is not None and second is not None
        first.status = "open"
        await store.commit(ChangeSet(invoices={("acme", "I-1"): first}))
        second.status = "voided"
        changes = ChangeSet(invoices={("acme", "I-1"): second}, failures=[failure()])
        with pytest.raises(StaleWriteError):
            await store.commit(changes)
        assert await store.failures("acme") == []  # nothing of the refused ChangeSet
        again = await store.invoice("acme", "I-1")
        assert again is not None and again.status == "open"
        again.status = "voided"
        await store.commit(ChangeSet(invoices={("acme", "I-1"): again}))
        stored = await store.invoice("acme", "I-1")
        assert stored is not None and stored.status == "voided"

    async def test_two_writers_at_once_on_one_invoice_one_is_refused(
        self, store: Store
    ) -> None:
        await store.commit(ChangeSet(invoices={("acme", "I-1"): invoice()}))
        copies = [await store.invoice("acme", "I-1") for _ in range(2)]
        for copy, status in zip(copies, ("sent", "voided"), strict=True):
            assert copy is not None
            copy.status = status
        results = await asyncio.gather(
            *(
                store.commit(ChangeSet(invoices={("acme", "I-1"): c}))
                for c in copies
                if c is not None
            ),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == [
            "NoneType",
            "StaleWriteError",
        ]
        stored = await store.invoice("acme", "I-1")
        winner = copies[results.index(None)]
        assert stored is not None and winner is not None
        assert stored.status == winner.status

    # Outbox

    async def test_outbox_keeps_order_and_forgets_published_rows(
        self, store: Store
    ) -> None:
        said = [ConnectionState(tenant=f"t{n}", at=NOW, data={}) for n in range(5)]
        await store.commit(ChangeSet(outbox=list(said)))
        rows = await store.pending_outbox(3)
        assert [r.topic for r in rows] == [f"syncd/t{n}/connection" for n in range(3)]
        await store.outbox_done([r.seq for r in rows[:2]])
        left = [r.topic for r in await store.pending_outbox(10)]
        assert left == [f"syncd/t{n}/connection" for n in (2, 3, 4)]

    # JobQueue

    async def test_a_job_queued_twice_is_one_job(self, store: Store) -> None:
        twin = [Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW) for _ in "ab"]
        await store.commit(ChangeSet(jobs=[twin[0]]))
        await store.commit(ChangeSet(jobs=[twin[1]]))
        pending = [j for j in await store.jobs("acme") if j.status is JobStatus.PENDING]
        assert len(pending) == 1

    async def test_a_job_put_back_to_wait_is_absorbed_by_its_twin_queued_meanwhile(
        self, store: Store
    ) -> None:
        """A retry meeting the same job queued during its call leaves one to do the work.

        Found by the CI chaos run with batches: the CRM edited an invoice while its push
        was in QBO (a new push queued), the push was refused for a retry, and putting it
        back to `pending` broke the one-pending-job rule: the whole batch's commit failed.
        """
        await store.commit(
            ChangeSet(jobs=[Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)])
        )
        [first] = await store.due_jobs(NOW, 10)
        first.status, first.attempts = JobStatus.IN_FLIGHT, 1
        await store.start_jobs([first])
        twin = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
        await store.commit(ChangeSet(jobs=[twin]))
        retry = replace(first, status=JobStatus.PENDING, last_error="QBO 3001")
        other = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-2", NOW)
        await store.commit(ChangeSet(jobs=[retry, other]))  # the rest of the batch too
        jobs = {(j.id, j.queue): j.status for j in await store.jobs("acme")}
        assert sorted(jobs.values()) == ["done", "pending", "pending"]
        assert jobs[(first.id, "I-1")] is JobStatus.DONE

    async def test_due_jobs_come_in_queue_order_per_tenant(self, store: Store) -> None:
        jobs = [
            Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW),
            Job.for_invoice("acme", JobKind.INVOICE_SEND, "I-1", NOW),
            Job.for_invoice("beta", JobKind.INVOICE_PUSH, "I-9", NOW),
        ]
        later = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-2", NOW)
        later.next_attempt_at = NOW + timedelta(hours=1)
        await store.commit(ChangeSet(jobs=[*jobs, later]))
        due = await store.due_jobs(NOW, 10)
        # an invoice's queue runs one job at a time: the send waits for the push
        assert {(j.tenant, j.invoice_id, j.kind) for j in due} == {
            ("acme", "I-1", JobKind.INVOICE_PUSH),
            ("beta", "I-9", JobKind.INVOICE_PUSH),
        }
        assert [j.tenant for j in await store.due_jobs(NOW, 10, skip=["acme"])] == [
            "beta"
        ]

    # Realms

    async def test_a_job_is_claimed_once_whoever_read_it(self, store: Store) -> None:
        """Issue 25: two replicas read the same due job; one claim wins, nothing doubles."""
        await store.commit(
            ChangeSet(jobs=[Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)])
        )
        [a] = await store.due_jobs(NOW, 10)
        [b] = await store.due_jobs(NOW, 10)
        for job in (a, b):
            job.status, job.attempts = JobStatus.IN_FLIGHT, job.attempts + 1
        claims = await asyncio.gather(
            store.start_jobs([a]), store.start_jobs([b]), return_exceptions=True
        )
        assert sorted(type(c).__name__ for c in claims) == ["FencedError", "NoneType"]
        [job] = await store.jobs("acme")
        assert (job.status, job.attempts) == (JobStatus.IN_FLIGHT, 1)

    async def test_a_parked_message_is_decided_once(self, store: Store) -> None:
        """Issue 25: parked durably, found by its invoice; decided by one writer only."""
        parked = Parked(
            tenant="acme",
            message_id="m-3",
            invoice_id="I-1",
            topic="syncd/acme/crm/invoice/upserted",
            payload=b"{}",
            reason="draft -> sent",
            parked_at=NOW,
        )
        waiting = replace(ledger("m-3"), outcome=Outcome.PARKED)
        await store.commit(ChangeSet(ledger=[waiting], parked=[parked]))
        assert await store.parked_messages(10) == [parked]
        assert await store.parked_messages(10, {("acme", "I-1")}) == [parked]
        assert await store.parked_messages(10, {("acme", "I-2")}) == []

        def decided() -> ChangeSet:
            return ChangeSet(ledger=[ledger("m-3")], unparked=[("acme", "m-3")])

        done = await asyncio.gather(
            store.commit(decided()), store.commit(decided()), return_exceptions=True
        )
        assert sorted(type(d).__name__ for d in done) == ["NoneType", "StaleWriteError"]
        assert await store.parked_messages(10) == []
        entry = await store.ledger("acme", "m-3")
        assert entry is not None and entry.outcome is Outcome.APPLIED

    async def test_one_message_id_recorded_twice_at_once_is_a_stale_write(
        self, store: Store
    ) -> None:
        """Two replicas given one message id: one records it, the other decides again."""
        done = await asyncio.gather(
            store.commit(ChangeSet(ledger=[ledger("m-1")])),
            store.commit(ChangeSet(ledger=[ledger("m-1")])),
            return_exceptions=True,
        )
        assert sorted(type(d).__name__ for d in done) == ["NoneType", "StaleWriteError"]

    # Leases (issue 25)

    async def test_leases_are_shared_out_and_taken_over_once_expired(
        self, store: Store
    ) -> None:
        realms = [f"realm:t{n}" for n in range(5)]
        ttl = timedelta(seconds=30)
        assert await store.beat("a", NOW, ttl) == ["a"]
        a = await store.hold("a", realms, 5, NOW, ttl)
        assert a == dict.fromkeys(realms, Held(1, taken_over=False))
        assert await store.beat("b", NOW, ttl) == ["a", "b"]
        assert await store.hold("b", realms, 3, NOW, ttl) == {}  # all held, none free
        # a gives back two at once, but keeps one whose work is under way
        kept = await store.hold("a", realms, 3, NOW, ttl, busy={realms[4]})
        assert sorted(kept) == [*realms[:3], realms[4]]
        b = await store.hold("b", realms, 3, NOW, ttl)
        assert b == {
            realms[3]: Held(2, taken_over=False)
        }  # given back: nothing under way
        kept = await store.hold("a", realms, 3, NOW, ttl)  # its work ended: given back
        b = await store.hold("b", realms, 3, NOW, ttl)
        assert sorted(b) == realms[3:]
        # a stops beating; once its leases expire, b takes them at the next epoch
        later = NOW + ttl + timedelta(seconds=1)
        assert await store.beat("b", later, ttl) == ["b"]
        b = await store.hold("b", realms, 5, later, ttl)
        assert {n: h.epoch for n, h in b.items()} == dict.fromkeys(realms, 2)
        # a's three taken over: a call a had under way may still land
        assert sorted(n for n, h in b.items() if h.taken_over) == realms[:3]
        owners = {name: owner for name, owner, _, _ in await store.leases()}
        assert set(owners.values()) == {"b"}

    async def test_work_under_a_lease_taken_over_is_refused_whole(
        self, store: Store
    ) -> None:
        ttl = timedelta(seconds=30)
        [(name, held)] = (await store.hold("a", ["realm:acme"], 1, NOW, ttl)).items()
        fence = Fence(name, "a", held.epoch)
        await store.commit(ChangeSet(ledger=[ledger("m-1")], fence=fence))
        later = NOW + ttl + timedelta(seconds=1)
        assert await store.hold("b", ["realm:acme"], 1, later, ttl) == {
            name: Held(2, taken_over=True)
        }
        with pytest.raises(FencedError):
            await store.commit(ChangeSet(ledger=[ledger("m-2")], fence=fence))
        assert await store.known_messages([("acme", "m-1"), ("acme", "m-2")]) == {
            ("acme", "m-1")
        }
        await store.commit(ChangeSet(ledger=[ledger("m-2")], fence=Fence(name, "b", 2)))
        await store.release("b", later)
        assert [o for _, o, _, _ in await store.leases()] == [None]

    async def test_a_leases_quota_record_goes_to_its_next_holder(
        self, store: Store
    ) -> None:
        """Issue 25: what a realm's holder spent is read by whoever takes it next."""
        ttl = timedelta(seconds=30)
        name = "realm:acme"
        assert await store.hold("a", [name], 1, NOW, ttl) == {name: Held(1)}
        await store.keep_spent("a", {name: "first"})
        await store.hold("a", [name], 1, NOW, ttl, spent={name: "second"})
        await store.keep_spent("b", {name: "not b's to keep"})
        later = NOW + ttl + timedelta(seconds=1)  # a died: b takes it once expired
        assert await store.hold("b", [name], 1, later, ttl) == {
            name: Held(2, taken_over=True, spent="second")
        }
        # held again: the record kept before (b's replica knows it is its own)
        assert await store.hold("b", [name], 1, later, ttl, spent={name: "b's"}) == {
            name: Held(2, spent="second")
        }
        await store.release("b", later, spent={name: "at release"})
        assert await store.hold("a", [name], 1, later, ttl) == {
            name: Held(3, spent="at release")
        }
        # given back at a beat (a's share fell to none): the record goes with it
        await store.hold("a", [name], 0, later, ttl, spent={name: "given back"})
        assert await store.hold("b", [name], 1, later, ttl) == {
            name: Held(4, spent="given back")
        }

    async def test_reads_add_up_per_company_and_month(self, store: Store) -> None:
        """PostgreSQL refused `reads = reads + …` as ambiguous (found by the replicas run)."""
        await store.add_reads({("9130", "2026-11"): 3})
        await store.add_reads({("9130", "2026-11"): 4, ("9130", "2026-12"): 1})
        assert sorted(await store.reads()) == [
            ("9130", "2026-11", 7),
            ("9130", "2026-12", 1),
        ]

    async def test_a_company_belongs_to_one_tenant(self, store: Store) -> None:
        await store.save_connection(connection("acme", "9130"))
        assert await store.tenant_of_realm("9130") == "acme"
        with pytest.raises(RealmTakenError):
            await store.save_connection(connection("beta", "9130"))
        stored = await store.connection("acme")
        assert stored is not None and stored.realm_id == "9130"
        assert await store.connection("beta") is None

    async def test_a_token_refresh_has_its_turn_alone_and_reads_the_kept_token(
        self, store: Store
    ) -> None:
        """Issue 25: turns on one realm's token follow each other; each reads the last kept."""
        await store.save_connection(connection("acme", "9130"))
        seen: list[bytes | None] = []

        async def refresh(fresh: bytes) -> None:
            async with store.token_turn("acme", "9130") as turn:
                seen.append(turn.sealed)
                await asyncio.sleep(0.01)  # Intuit answers
                await turn.keep(fresh)

        await asyncio.gather(refresh(b"rt-2"), refresh(b"rt-3"))
        assert seen in ([b"sealed", b"rt-2"], [b"sealed", b"rt-3"])
        stored = await store.connection("acme")
        assert stored is not None and stored.sealed_token in (b"rt-2", b"rt-3")
        assert stored.sealed_token != seen[1]
        async with store.token_turn("beta", "9130") as turn:
            assert turn.sealed is None  # not beta's company

    async def test_an_oauth_state_is_taken_once_even_at_once(
        self, store: Store
    ) -> None:
        await store.new_state("s-1", "acme", False, NOW, timedelta(minutes=10))
        taken = await asyncio.gather(store.take_state("s-1"), store.take_state("s-1"))
        assert sorted(t is None for t in taken) == [False, True]
        [kept] = [t for t in taken if t is not None]
        assert kept[:2] == ("acme", False)
        assert await store.take_state("s-1") is None

    # Webhooks

    async def test_webhook_bodies_wait_until_applied(self, store: Store) -> None:
        await store.store_inbound(b'{"a": 1}', NOW)
        await store.store_inbound(b'{"b": 2}', NOW)
        pending = await store.pending_inbound(10)
        assert [w.body for w in pending] == [b'{"a": 1}', b'{"b": 2}']
        changes = ChangeSet(
            inbound_done=[pending[0].seq], inbound_events=[("9130", "k-1")], at=NOW
        )
        await store.commit(changes)
        assert [w.body for w in await store.pending_inbound(10)] == [b'{"b": 2}']
        assert await store.new_events("9130", ["k-1", "k-2"]) == {"k-2"}

    # InvoiceReads

    async def test_tenant_counts_are_the_tenants_own(self, store: Store) -> None:
        invoices = [
            invoice("I-1", state=SyncState.SYNCED),
            invoice("I-2", state=SyncState.SYNCED),
            invoice("I-3", state=SyncState.FAILED),
            invoice("I-1", tenant="beta"),
        ]
        done = Job.for_invoice("acme", JobKind.INVOICE_SEND, "I-1", NOW)
        done.status = JobStatus.DONE
        await store.commit(
            ChangeSet(
                invoices={(i.tenant, i.invoice_id): i for i in invoices},
                jobs=[Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW), done],
                failures=[failure(), failure(), failure("beta")],
            )
        )
        [first, _] = await store.failures("acme")
        assert first.id is not None
        await store.commit(ChangeSet(resolved=[("acme", first.id, NOW)]))
        counts = await store.tenant_counts("acme")
        assert counts.sync_states == {"synced": 2, "failed": 1}
        assert (counts.jobs_waiting, counts.open_failures) == (1, 1)

    # AdminSessions

    async def test_an_admin_session_lives_until_it_ends_or_expires(
        self, store: Store
    ) -> None:
        ends = NOW + timedelta(hours=12)
        await store.start_session("h-1", "csrf-1", ends, NOW)
        assert await store.session("h-1", NOW) == ("csrf-1", ends)
        assert await store.session("h-1", ends) is None  # expired
        assert await store.session("h-2", NOW) is None
        await store.end_session("h-1")
        assert await store.session("h-1", NOW) is None

    # Health

    async def test_a_payment_is_found_by_either_sides_id_and_never_comes_back(
        self, store: Store
    ) -> None:
        """Issue 26: a payment record, by CRM id or QBO id; its state only moves on."""

        def record(state: MoneyState, **extra: Any) -> PaymentRecord:
            fields: dict[str, Any] = {
                "tenant": "acme",
                "kind": MoneyKind.PAYMENT,
                "payment_id": "P-1",
                "invoice_id": "I-1",
                "amount": Decimal("40.00"),
                "state": state,
                "at": NOW,
            }
            return PaymentRecord(**(fields | extra))

        await store.commit(ChangeSet(payments=[record(MoneyState.RECORDED)]))
        # the CRM deletes it before syncd's push recorded its QBO copy
        await store.commit(ChangeSet(payments=[record(MoneyState.REMOVING)]))
        await store.commit(
            ChangeSet(payments=[record(MoneyState.RECORDED, qbo_id="77")])
        )
        (found,) = await store.payment_records("acme", (MoneyKind.PAYMENT,), ["P-1"])
        assert (found.state, found.qbo_id, found.amount) == (
            MoneyState.REMOVING,
            "77",
            Decimal("40.00"),
        )
        assert await store.payment_records("acme", (MoneyKind.REFUND,), ["P-1"]) == []
        assert await store.payment_records("other", (MoneyKind.PAYMENT,), ["P-1"]) == []
        (by_qbo,) = await store.payments_in_qbo("acme", ["77", "78"])
        assert by_qbo.payment_id == "P-1"
        refund = record(
            MoneyState.RECORDED,
            kind=MoneyKind.REFUND,
            payment_id="R-1",
            invoice_id="",
            amount=Decimal("15.50"),
            refunds="P-1",
        )
        await store.commit(ChangeSet(payments=[refund]))
        assert await store.refunded("acme", "P-1") == Decimal("15.50")
        await store.commit(
            ChangeSet(payments=[replace(refund, state=MoneyState.REMOVED)])
        )
        assert await store.refunded("acme", "P-1") == 0
        # another QBO company: what syncd knew of the old one's payments is forgotten
        await store.commit(ChangeSet(books={"acme": ("other-realm", NOW)}))
        assert await store.payments_in_qbo("acme", ["77"]) == []

    async def test_a_credit_note_keeps_the_newest_snapshot_and_its_qbo_side(
        self, store: Store
    ) -> None:
        """Issue 26: an older snapshot never wins, nor does a job over a newer one.

        A job's result never marks a newer snapshot synced, but its QBO copy is kept.
        """
        note = CreditNote(
            tenant="acme",
            credit_note_id="CN-1",
            version=2,
            status="open",
            data={"total": "20.00"},
            sync_state=SyncState.PENDING,
            updated_at=NOW,
        )
        await store.commit(ChangeSet(credit_notes=[note]))
        await store.commit(
            ChangeSet(credit_notes=[replace(note, version=1, status="draft")])
        )
        pushed = replace(
            note,
            qbo_id="55",
            sync_state=SyncState.SYNCED,
            remaining_credit="0.00",
            pushed_body={"Line": []},
            last_synced_at=NOW,
        )
        newer = replace(note, version=3, status="voided")
        await store.commit(ChangeSet(credit_notes=[newer]))
        await store.commit(ChangeSet(credit_notes_synced=[pushed]))
        found = (await store.credit_notes("acme", ["CN-1", "CN-2"]))["CN-1"]
        assert (found.version, found.status, found.sync_state) == (
            3,
            "voided",
            SyncState.PENDING,
        )
        assert (found.qbo_id, found.remaining_credit, found.pushed_body) == (
            "55",
            "0.00",
            {"Line": []},
        )
        await store.commit(ChangeSet(credit_notes_synced=[replace(pushed, version=3)]))
        found = (await store.credit_notes("acme", ["CN-1"]))["CN-1"]
        assert found.sync_state is SyncState.SYNCED

    async def test_a_drift_report_is_the_tenants_latest_and_ends_the_request_before_it(
        self, store: Store
    ) -> None:
        """Issue 27: a report replaces the one before, tenant by tenant.

        A check asked for while one runs is still asked for after it.
        """
        assert await store.drift_report("acme") is None
        await store.request_drift_check("acme", NOW, heal=False)
        await store.request_drift_check("globex", NOW + timedelta(minutes=5), heal=True)
        assert await store.drift_requests() == {
            "acme": (NOW, False),
            "globex": (NOW + timedelta(minutes=5), True),
        }
        await store.set_drift_progress("acme", "page 1 of 3")
        assert await store.drift_progress("acme") == "page 1 of 3"
        ran = {"started_at": NOW.isoformat(), "checked_at": NOW.isoformat()}
        first = {**ran, "differences": [{"field": "total"}]}
        later = {**ran, "differences": []}
        await store.commit(ChangeSet(drift={"acme": orjson.dumps(first)}))
        await store.commit(ChangeSet(drift={"globex": orjson.dumps(later)}))
        assert orjson.loads(await store.drift_report("acme") or b"") == first
        assert await store.drift_open() == {"acme": 1, "globex": 0}
        assert await store.drift_progress("acme") is None  # the check is over
        assert list(await store.drift_requests()) == ["globex"]  # asked after it began
        await store.commit(ChangeSet(drift={"acme": orjson.dumps(later)}))
        assert orjson.loads(await store.drift_report("acme") or b"") == later
        # a check that fails ends the requests made before it began, and says why
        await store.drift_failed("globex", NOW + timedelta(minutes=6), "not connected")
        assert await store.drift_requests() == {}
        assert await store.drift_progress("globex") == "failed: not connected"

    async def test_a_closed_store_says_so(self, store: Store) -> None:
        states = [(store.is_open, store.problem)]
        await store.close()
        states.append((store.is_open, None))
        assert states == [(True, None), (False, None)]
        with pytest.raises(StoreError, match="closed"):
            await store.pending_outbox(1)
