"""The SQLite store's own: migrations, WAL, compressed snapshots, group commit.

What every store promises is in `tests/store/contract.py`, run on SQLite there.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, date, datetime

import orjson
import pytest

from syncd.exceptions import StoreError
from syncd.models import (
    ChangeSet,
    Failure,
    Job,
    JobKind,
    LinkKind,
)
from syncd.store import rows
from syncd.store.database import GroupCommit
from syncd.store.schema import MIGRATIONS
from syncd.store.sqlite import SqliteStore

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


async def test_migrations_set_the_schema_version_and_use_wal(tmp_path):
    """A new file is migrated to the latest schema, in WAL mode."""
    store = SqliteStore(tmp_path / "s" / "syncd.db")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "s" / "syncd.db")
    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version[0]) == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_a_newer_schema_is_refused(tmp_path):
    """A database from a newer syncd is not touched."""
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "syncd.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this syncd"):
        await SqliteStore(tmp_path / "syncd.db").open()


def _at_version(path, version: int) -> sqlite3.Connection:
    """A store file as a syncd of schema `version` left it (the rest migrates at open)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for script in MIGRATIONS[:version]:
        db.executescript(script)
    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    return db


async def test_migration_4_keeps_the_first_tenant_of_a_shared_realm(tmp_path):
    """Issue 9 §6: a store where two tenants held one company keeps only the first."""
    path = tmp_path / "syncd.db"
    db = _at_version(path, 3)
    for tenant, realm, at in [
        ("globex", "R1", "2026-11-20T10:00:00+00:00"),  # consented with acme's company
        ("acme", "R1", "2026-11-01T10:00:00+00:00"),
        ("initech", "R2", "2026-11-05T10:00:00+00:00"),
    ]:
        db.execute(
            "INSERT INTO connections VALUES (?, ?, 'connected', x'00', x'7b7d', ?, NULL)",
            (tenant, realm, at),
        )
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.tenant_of_realm("R1") == "acme"
        assert await store.tenant_of_realm("R2") == "initech"
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert sorted(db.execute("SELECT tenant FROM connections")) == [
        ("acme",),
        ("initech",),
    ]
    db.close()


async def test_migration_6_dates_each_invoice_by_its_first_history_line(tmp_path):
    """HL8: an invoice stored before first_seen_at existed gets its first move's time."""
    path = tmp_path / "syncd.db"
    db = _at_version(path, 5)
    db.execute(
        "INSERT INTO invoices (tenant, invoice_id, status, version, sync_state, data,"
        " updated_at) VALUES ('acme', 'I-1', 'open', 2, 'pending', x'7b7d', ?)",
        ("2026-11-20T00:00:00+00:00",),
    )
    for at in ("2026-11-02T09:00:00+00:00", "2026-11-01T09:00:00+00:00"):
        db.execute(
            "INSERT INTO history (tenant, invoice_id, from_status, to_status, cause,"
            " event_id, at) VALUES ('acme', 'I-1', NULL, 'open', 'crm', 'e', ?)",
            (at,),
        )
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        invoice = await store.invoice("acme", "I-1")
        assert invoice is not None
        assert invoice.first_seen_at == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    finally:
        await store.close()


async def test_migration_11_dates_each_invoice_for_the_overdue_index(tmp_path):
    """Issue 14: the due date as sent to QBO, else the CRM's; nothing when not a date."""
    path = tmp_path / "syncd.db"
    db = _at_version(path, 10)
    for invoice_id, data, pushed in [
        ("I-1", b'{"due_date": "2026-12-09"}', b'{"DueDate": "2026-12-05"}'),
        ("I-2", b'{"due_date": "2026-12-09"}', None),
        ("I-3", b'{"due_date": "soon"}', None),
    ]:
        db.execute(
            "INSERT INTO invoices (tenant, invoice_id, status, version, sync_state, data,"
            " updated_at, pushed_body, qbo_status) VALUES ('acme', ?, 'open', 1,"
            " 'synced', ?, '2026-11-20T00:00:00+00:00', ?, 'open')",
            (invoice_id, data, pushed),
        )
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        due = await store.past_due("acme", date(2026, 12, 31), 10)
        assert sorted(i.invoice_id for i in due) == ["I-1", "I-2"]
        assert [
            i.invoice_id for i in await store.past_due("acme", date(2026, 12, 6), 10)
        ] == ["I-1"]
    finally:
        await store.close()


async def test_snapshots_are_stored_compressed_and_raw_ones_still_read(tmp_path):
    """Issue 14: snapshots are stored compressed (a third or less); raw JSON still reads.

    SQLite keeps about 1 KB of a WITHOUT ROWID row in its own page; beyond, every row
    took an overflow page (4.6 KB an invoice on disk, two pages per update).
    """
    lines = [
        {
            "description": f"Line {n}: work done",
            "item": "Consulting",
            "quantity": "2",
            "unit_price": "100.00",
        }
        for n in range(8)
    ]
    data = {"invoice_id": "I-1", "total": "1600.00", "lines": lines}
    pushed = {
        "Line": [{"Amount": "200.00", "Description": li["description"]} for li in lines]
    }
    raw = len(orjson.dumps(data)) + len(orjson.dumps(pushed))
    stored = len(rows.pack(data)) + len(rows.pack(pushed))
    assert raw > 1200 and stored < raw / 3
    path = tmp_path / "syncd.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO invoices (tenant, invoice_id, status, version, sync_state, data,"
        " updated_at, pushed_body) VALUES ('acme', 'I-1', 'open', 1, 'synced', ?,"
        " '2026-11-20T00:00:00+00:00', ?)",
        (orjson.dumps(data), orjson.dumps(pushed)),
    )
    db.commit()
    db.close()
    await store.open()
    try:
        old = await store.invoice("acme", "I-1")
        assert old is not None and (old.data, old.pushed_body) == (data, pushed)
        await store.commit(ChangeSet(invoices={("acme", "I-1"): old}))
        again = await store.invoice("acme", "I-1")
        assert again is not None and (again.data, again.pushed_body) == (data, pushed)
    finally:
        await store.close()
    db = sqlite3.connect(path)
    [(blob,)] = db.execute("SELECT data FROM invoices")
    db.close()
    assert blob[:1] == b"\x78"  # written back compressed


async def test_a_failure_is_resolved_in_the_same_commit_as_its_retry(tmp_path):
    """Issue 11: the admin's retry queues the job and resolves the failure at once."""
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    try:
        await store.commit(ChangeSet(failures=[_failure("acme")]))
        [stored] = await store.failures("acme")
        assert stored.id is not None and stored.resolved_at is None
        job = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-1", NOW)
        await store.commit(ChangeSet(jobs=[job], resolved=[("acme", stored.id, NOW)]))
        [after] = await store.failures("acme")
        assert after.resolved_at == NOW
        assert [j.kind for j in await store.jobs("acme")] == ["invoice.push"]
    finally:
        await store.close()


async def test_migration_7_moves_refresh_requests_out_of_the_webhook_table(tmp_path):
    """Issue 11: refresh requests rode in the webhook table with a marker; now their own."""
    path = tmp_path / "syncd.db"
    db = _at_version(path, 6)
    request = (
        b'{"syncdRefresh":{"tenant":"acme","message_id":"m-1","contact_id":"C-9"}}'
    )
    for body in (request, b'{"eventNotifications":[]}'):
        db.execute(
            "INSERT INTO inbound (body, received_at) VALUES (?, ?)",
            (body, NOW.isoformat()),
        )
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        [(_, moved)] = await store.pending_refreshes(10)
        assert moved == {"tenant": "acme", "message_id": "m-1", "contact_id": "C-9"}
        assert [w.body for w in await store.pending_inbound(10)] == [
            b'{"eventNotifications":[]}'
        ]
    finally:
        await store.close()


async def test_migration_8_types_jobs_and_moves_deals_out_of_links(tmp_path):
    """Issue 11: ids packed into job kinds and queues become a subject; deals a table."""
    path = tmp_path / "syncd.db"
    db = _at_version(path, 7)
    for queue, kind in [
        ("I-1", "invoice.push"),
        ("I-1", "payment.push:P-7"),
        ("receipt:P-8", "receipt.push"),
        ("contact:C-3", "customer.push"),
    ]:
        db.execute(
            "INSERT INTO jobs (tenant, invoice_id, kind, status, attempts, "
            "next_attempt_at, payload, last_error) "
            "VALUES ('acme', ?, ?, 'pending', 0, ?, x'7b7d', NULL)",
            (queue, kind, NOW.isoformat()),
        )
    db.execute("INSERT INTO links VALUES ('acme', 'deal', '130', 'D-5')")
    db.execute("INSERT INTO links VALUES ('acme', 'deal', '131', '')")
    db.execute("INSERT INTO links VALUES ('acme', 'customer', 'a@x.io', '58')")
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        jobs = await store.jobs("acme")
        assert [(j.kind, j.subject, j.invoice_id, j.queue) for j in jobs] == [
            (JobKind.INVOICE_PUSH, "I-1", "I-1", "I-1"),
            (JobKind.PAYMENT_PUSH, "P-7", "I-1", "I-1"),
            (JobKind.RECEIPT_PUSH, "P-8", None, "receipt:P-8"),
            (JobKind.CUSTOMER_PUSH, "C-3", None, "contact:C-3"),
        ]
        assert await store.deals("acme", ["130", "131"]) == {"130": "D-5"}
        assert await store.link("acme", LinkKind.CUSTOMER, "a@x.io") == "58"
        # two payments of one invoice are two pending jobs, not one absorbing the other
        second = Job(
            tenant="acme",
            kind=JobKind.PAYMENT_PUSH,
            subject="P-9",
            invoice_id="I-1",
            next_attempt_at=NOW,
        )
        await store.commit(ChangeSet(jobs=[second]))
        assert [j.subject for j in await store.jobs("acme")][-1] == "P-9"
    finally:
        await store.close()


def _failure(tenant: str) -> Failure:
    """A QBO refusal of one invoice's push, at NOW."""
    return Failure(
        tenant=tenant,
        invoice_id="I-1",
        operation="invoice.push",
        code="6000",
        message="refused",
        event_id=None,
        at=NOW,
    )


async def test_webhook_bodies_arriving_together_share_one_commit(store):
    """Issue 14: a burst's bodies go in one transaction; each caller returns once on disk."""
    batches: list[list[int]] = []

    async def write(rows: list[int]) -> None:
        batches.append(rows)
        await asyncio.sleep(0.01)

    joined = GroupCommit[int](write)
    await asyncio.gather(*(joined.add(n) for n in range(100)))
    await joined.add(100)  # later: its own transaction
    assert batches == [list(range(100)), [100]]
    await asyncio.gather(
        *(store.store_inbound(f"body {n}".encode(), NOW) for n in range(50))
    )
    stored = await store.pending_inbound(100)
    assert sorted(w.body for w in stored) == sorted(
        f"body {n}".encode() for n in range(50)
    )


async def test_a_failed_group_commit_fails_every_caller_in_it():
    """The commit's error reaches each caller of that transaction; the next one works."""
    fail = True

    async def write(rows: list[int]) -> None:
        if fail:
            raise StoreError("disk full")

    joined = GroupCommit[int](write)
    results = await asyncio.gather(
        *(joined.add(n) for n in range(3)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["disk full"] * 3
    fail = False
    await joined.add(4)
