"""Issue 14: retention deletes finished records past their time, never pending work."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from syncd import housekeeping
from syncd.config import Retention
from syncd.housekeeping import Housekeeper
from syncd.models import (
    ChangeSet,
    Failure,
    Job,
    JobKind,
    JobStatus,
    LedgerEntry,
    Outcome,
)
from syncd.store.sqlite import SqliteStore

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OLD, MID, RECENT = NOW - timedelta(days=40), NOW - timedelta(days=10), NOW


def _message(message_id: str, outcome: Outcome, at: datetime) -> LedgerEntry:
    return LedgerEntry(
        tenant="acme",
        message_id=message_id,
        topic="syncd/acme/crm/invoice/upserted",
        type="invoice.upserted",
        outcome=outcome,
        reason="",
        received_at=at,
        payload=b"{}" if outcome is Outcome.REJECTED else None,
    )


def _job(invoice_id: str, status: JobStatus, at: datetime) -> Job:
    job = Job.for_invoice("acme", JobKind.INVOICE_PUSH, invoice_id, at)
    return replace(job, status=status)


def _failure(invoice_id: str, job_id: int | None = None) -> Failure:
    return Failure(
        tenant="acme",
        invoice_id=invoice_id,
        operation="invoice.push",
        code="6000",
        message="refused",
        event_id=None,
        at=OLD,
        job_id=job_id,
    )


@pytest.fixture
async def filled(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    await store.commit(
        ChangeSet(
            ledger=[
                _message("applied-mid", Outcome.APPLIED, MID),
                _message("applied-now", Outcome.APPLIED, RECENT),
                _message("rejected-mid", Outcome.REJECTED, MID),
                _message("rejected-old", Outcome.REJECTED, OLD),
            ],
            jobs=[
                _job("done-old", JobStatus.DONE, OLD),
                _job("failed-named", JobStatus.FAILED, OLD),
                _job("failed-old", JobStatus.FAILED, OLD),
                _job("pending-old", JobStatus.PENDING, OLD),
                _job("done-now", JobStatus.DONE, RECENT),
            ],
            inbound_events=[("R1", "payment-received:9"), ("R1", "first-payment:58")],
            at=OLD,
        )
    )
    jobs = {j.invoice_id: j.id for j in await store.jobs("acme")}
    await store.commit(
        ChangeSet(
            failures=[
                _failure("failed-named", jobs["failed-named"]),
                _failure("resolved-old"),
                _failure("resolved-now"),
            ]
        )
    )
    ids = {f.invoice_id: f.id for f in await store.failures("acme")}
    resolved = [
        ("acme", ids["resolved-old"], OLD),
        ("acme", ids["resolved-now"], RECENT),
    ]
    await store.store_inbound(b'{"applied": true}', OLD)
    await store.store_inbound(b'{"waiting": true}', OLD)
    [applied, _] = await store.pending_inbound(10)
    await store.commit(ChangeSet(resolved=resolved, inbound_done=[applied.seq]))  # type: ignore[arg-type]
    yield store
    await store.close()


async def test_what_is_past_its_time_goes_and_pending_work_stays(
    filled: SqliteStore, monkeypatch
):
    """Ledger 8 days, rejected 30, finished 30; a page of 1 per write still ends."""
    monkeypatch.setattr(housekeeping, "PAGE", 1)
    keeper = Housekeeper(filled, Retention(), lambda: NOW)
    deleted = await keeper.pass_once()
    assert deleted == {
        "ledger": 1,
        "rejected": 1,
        "jobs": 2,
        "failures": 1,
        "webhooks": 1,
        "refreshes": 0,
        "event_keys": 1,
    }
    for message_id, kept in [
        ("applied-mid", False),
        ("applied-now", True),
        ("rejected-mid", True),
        ("rejected-old", False),
    ]:
        assert (await filled.ledger("acme", message_id) is not None) == kept, message_id
    assert sorted(str(j.invoice_id) for j in await filled.jobs("acme")) == [
        "done-now",
        "failed-named",  # its failure is open: the admin's retry runs it again
        "pending-old",
    ]
    assert sorted(str(f.invoice_id) for f in await filled.failures("acme")) == [
        "failed-named",
        "resolved-now",
    ]
    assert [w.body for w in await filled.pending_inbound(10)] == [b'{"waiting": true}']
    keys = ["payment-received:9", "first-payment:58"]
    assert await filled.new_events("R1", keys) == {"payment-received:9"}
    assert await keeper.pass_once() == dict.fromkeys(deleted, 0)


async def test_retention_asks_indexes_not_whole_tables(filled: SqliteStore, tmp_path):
    """Each delete reaches its rows by an index: a year of traffic is never scanned."""
    from syncd.store import sqlite as module

    db = sqlite3.connect(tmp_path / "s.db")
    for name in dir(module):
        if name.startswith("_PRUNE_"):
            sql = getattr(module, name).replace("?", "'x'")
            plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN" not in plan.replace("SCAN CONSTANT", ""), (name, plan)
    db.close()
