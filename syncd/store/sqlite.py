"""SQLite store: one aiosqlite writer, WAL, `BEGIN IMMEDIATE`, versioned migrations.

The only module with SQL. `synchronous=FULL` because a commit here precedes the MQTT ack:
an acknowledged message must survive a power cut, not only a process crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from syncd.exceptions import StaleWriteError, StoreError
from syncd.models import (
    ChangeSet,
    Failure,
    HistoryEntry,
    Invoice,
    LedgerEntry,
    OutboxRow,
    Outcome,
)
from syncd.store import rows
from syncd.store.qbo_tables import (
    QboTables,
    write_deals,
    write_inbound,
    write_jobs,
    write_links,
)
from syncd.store.schema import MIGRATIONS

_INVOICE_COLS = rows.INVOICE_COLS
_CHUNK = 500  # stays far below SQLite's bound-parameter limit


class SqliteStore(QboTables):
    """The Store on one SQLite file."""

    def __init__(self, path: Path, check: str = "quick") -> None:
        self.path = path
        self._check = (
            check  # at open: "quick" reads every page, "schema" only the schema
        )
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one writer; reads never see a half-done batch
        # held from reading an invoice to committing its change, by whoever changes it
        # (the inbox, the job worker): no update is lost between them
        self.write_lock = asyncio.Lock()
        self.problem: str | None = None  # why the last write failed, until one succeeds

    @property
    def is_open(self) -> bool:
        """Tell whether the store can be used."""
        return self._db is not None

    async def open(self) -> None:
        """Open the file (made 0600 in a 0700 folder), check it can be used, migrate it.

        Raises StoreError naming the file and what is wrong: it cannot be opened or
        written, or fails SQLite's quick integrity check.
        """
        try:
            _private_file(self.path)
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"store {self.path}: cannot be opened: {_why(exc)}"
            ) from exc
        try:
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
                await db.execute(f"PRAGMA {pragma}")
            await _check_integrity(db, self._check)
            await _migrate(db)
            await db.execute(  # a real write: a read-only file or folder fails here
                "INSERT OR REPLACE INTO meta VALUES ('opened_at', datetime('now'))"
            )
        except (sqlite3.Error, StoreError) as exc:
            await db.close()
            raise StoreError(f"store {self.path}: {_why(exc)}") from exc
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        """Close the connection (an unclosed aiosqlite thread hangs process exit)."""
        if self._db is not None:
            db, self._db = self._db, None
            async with self._lock:
                await db.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._conn()
        async with self._lock:
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._raise_unusable(exc)
                raise
            self.problem = None

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                yield self._conn()
            except sqlite3.Error as exc:
                self._raise_unusable(exc)
                raise

    def _raise_unusable(self, exc: sqlite3.Error) -> None:
        """Raise StoreError when `exc` is about the file, not about the data written."""
        if not isinstance(exc, sqlite3.OperationalError) and (
            type(exc) is not sqlite3.DatabaseError
        ):
            return  # an IntegrityError, a bad parameter: about one write's data
        self.problem = f"the store cannot be used: {exc}"
        raise StoreError(self.problem) from exc

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    async def known_messages(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which (tenant, message id) pairs the ledger already holds."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, message_id in keys:
            by_tenant.setdefault(tenant, []).append(message_id)
        found: set[tuple[str, str]] = set()
        async with self._read() as db:
            for tenant, ids in by_tenant.items():
                for chunk in _chunks(ids, _CHUNK):
                    marks = ",".join("?" * len(chunk))
                    sql = (
                        "SELECT message_id FROM messages "
                        f"WHERE tenant = ? AND message_id IN ({marks})"
                    )
                    async with db.execute(sql, [tenant, *chunk]) as cur:
                        found.update((tenant, m) for (m,) in await cur.fetchall())
        return found

    async def load_invoices(self, tenant: str, ids: list[str]) -> dict[str, Invoice]:
        """Return the stored invoices among `ids` of `tenant`."""
        found: dict[str, Invoice] = {}
        async with self._read() as db:
            for chunk in _chunks(ids, _CHUNK):
                marks = ",".join("?" * len(chunk))
                sql = (
                    f"SELECT {_INVOICE_COLS} FROM invoices "
                    f"WHERE tenant = ? AND invoice_id IN ({marks})"
                )
                async with db.execute(sql, [tenant, *chunk]) as cur:
                    for row in await cur.fetchall():
                        found[row[1]] = rows.invoice(row)
        return found

    async def commit(self, changes: ChangeSet) -> None:
        """Write a whole ChangeSet in one transaction."""
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [rows.ledger_row(e) for e in changes.ledger],
            )
            await _write_invoices(db, list(changes.invoices.values()))
            await db.executemany(
                "INSERT INTO history (tenant, invoice_id, from_status, to_status, cause,"
                " event_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [rows.history_row(h) for h in changes.history],
            )
            await db.executemany(
                "INSERT INTO failures (tenant, invoice_id, operation, code, message,"
                " attempts, retryable, event_id, at, job_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [rows.failure_row(f) for f in changes.failures],
            )
            await db.executemany(
                "INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, ?)",
                [(o.topic, o.payload, int(o.retain)) for o in changes.outbox],
            )
            await db.executemany(
                "DELETE FROM outbox WHERE seq = ?", [(s,) for s in changes.outbox_done]
            )
            await db.executemany(
                "INSERT INTO refreshes (tenant, request, at) VALUES (?, ?, ?)",
                [(r["tenant"], orjson.dumps(r), r["at"]) for r in changes.refreshes],
            )
            await db.executemany(
                "UPDATE refreshes SET done = 1 WHERE seq = ?",
                [(s,) for s in changes.refreshes_done],
            )
            await db.executemany(
                "UPDATE failures SET resolved_at = ? WHERE tenant = ? AND seq = ?",
                [(at.isoformat(), t, seq) for t, seq, at in changes.resolved],
            )
            for tenant, (realm_id, since) in changes.books.items():
                await db.execute("DELETE FROM links WHERE tenant = ?", (tenant,))
                await db.execute("DELETE FROM deals WHERE tenant = ?", (tenant,))
                await db.execute(
                    "INSERT INTO books VALUES (?, ?, ?) ON CONFLICT (tenant) "
                    "DO UPDATE SET realm_id = excluded.realm_id, since = excluded.since",
                    (tenant, realm_id, since.isoformat()),
                )
            await write_jobs(db, changes.jobs)
            await write_links(db, changes.links)
            await write_deals(db, changes.deals)
            await write_inbound(
                db, changes.inbound_done, changes.inbound_events, changes.inbound_new
            )

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Return the oldest unpublished messages, in order."""
        sql = "SELECT seq, topic, payload, retain FROM outbox ORDER BY seq LIMIT ?"
        async with self._read() as db, db.execute(sql, (limit,)) as cur:
            rows = await cur.fetchall()
        return [
            OutboxRow(seq=s, topic=t, payload=p, retain=bool(r)) for s, t, p, r in rows
        ]

    async def outbox_done(self, seqs: list[int]) -> None:
        """Forget published messages."""
        async with self._tx() as db:
            await db.executemany(
                "DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs]
            )

    async def pending_refreshes(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """The CRM's refresh requests not yet done, oldest first."""
        sql = "SELECT seq, request FROM refreshes WHERE done = 0 ORDER BY seq LIMIT ?"
        async with self._read() as db, db.execute(sql, (limit,)) as cur:
            return [(seq, orjson.loads(body)) for seq, body in await cur.fetchall()]

    async def invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """Return one invoice."""
        return (await self.load_invoices(tenant, [invoice_id])).get(invoice_id)

    async def history(self, tenant: str, invoice_id: str) -> list[HistoryEntry]:
        """Return one invoice's moves, oldest first."""
        sql = (
            "SELECT from_status, to_status, cause, event_id, at FROM history "
            "WHERE tenant = ? AND invoice_id = ? ORDER BY seq"
        )
        async with self._read() as db, db.execute(sql, (tenant, invoice_id)) as cur:
            rows = await cur.fetchall()
        return [
            HistoryEntry(
                tenant=tenant,
                invoice_id=invoice_id,
                from_status=f,
                to_status=t,
                cause=c,
                event_id=e,
                at=datetime.fromisoformat(a),
            )
            for f, t, c, e, a in rows
        ]

    async def failures(self, tenant: str) -> list[Failure]:
        """Return a tenant's failures, oldest first."""
        sql = (
            "SELECT seq, invoice_id, operation, code, message, attempts, retryable, event_id,"
            " at, resolved_at, job_id FROM failures WHERE tenant = ? ORDER BY seq"
        )
        async with self._read() as db, db.execute(sql, (tenant,)) as cur:
            rows = await cur.fetchall()
        return [
            Failure(
                id=seq,
                tenant=tenant,
                invoice_id=i,
                operation=o,
                code=c,
                message=m,
                attempts=n,
                retryable=bool(r),
                event_id=e,
                at=datetime.fromisoformat(a),
                resolved_at=datetime.fromisoformat(done) if done else None,
                job_id=job_id,
            )
            for seq, i, o, c, m, n, r, e, a, done, job_id in rows
        ]

    async def invoices(
        self, tenant: str, sync_state: str | None = None
    ) -> list[Invoice]:
        """A tenant's invoices (optionally in one sync state), newest change first."""
        sql = f"SELECT {_INVOICE_COLS} FROM invoices WHERE tenant = ?"
        params: list[Any] = [tenant]
        if sync_state:
            sql += " AND sync_state = ?"
            params.append(sync_state)
        async with (
            self._read() as db,
            db.execute(sql + " ORDER BY updated_at DESC", params) as cur,
        ):
            return [rows.invoice(r) for r in await cur.fetchall()]

    async def ledger(self, tenant: str, message_id: str) -> LedgerEntry | None:
        """Return what became of one inbound message."""
        sql = (
            "SELECT topic, type, outcome, reason, received_at, payload FROM messages"
            " WHERE tenant = ? AND message_id = ?"
        )
        async with self._read() as db, db.execute(sql, (tenant, message_id)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        topic, kind, outcome, reason, received_at, payload = row
        return LedgerEntry(
            tenant=tenant,
            message_id=message_id,
            topic=topic,
            type=kind,
            outcome=Outcome(outcome),
            reason=reason,
            received_at=datetime.fromisoformat(received_at),
            payload=payload,
        )


async def _write_invoices(db: aiosqlite.Connection, invoices: list[Invoice]) -> None:
    """New invoices inserted, known ones updated only at the revision they were read.

    The version check is what serialises writes to one invoice across processes: a
    copy read before another writer's commit is refused whole (StaleWriteError).
    """
    new = [i for i in invoices if i.rev == 0]
    known = [i for i in invoices if i.rev != 0]
    marks = ", ".join("?" * len(rows.INVOICE_COLS.split(", ")))
    try:
        await db.executemany(
            f"INSERT INTO invoices ({_INVOICE_COLS}) VALUES ({marks})",
            [rows.invoice_row(i) for i in new],
        )
    except sqlite3.IntegrityError as exc:
        raise StaleWriteError("an invoice read as new was stored meanwhile") from exc
    if known:
        cur = await db.executemany(
            rows.UPDATE_INVOICE, [rows.invoice_update(i) for i in known]
        )
        if cur.rowcount != len(known):
            raise StaleWriteError("an invoice changed since it was read")


def _private_file(path: Path) -> None:
    """Create the store 0600 in a 0700 folder (it holds customer data and webhooks)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        if name.exists() and name.stat().st_mode & 0o077:
            name.chmod(0o600)


def _why(exc: BaseException) -> str:
    """The cause in a few words (an OSError's strerror, SQLite's message)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


async def _check_integrity(db: aiosqlite.Connection, check: str) -> None:
    """`quick`: SQLite's quick_check (reads the whole file); `schema`: the schema only."""
    if check == "schema":
        await (await db.execute("SELECT count(*) FROM sqlite_master")).close()
        return
    async with db.execute("PRAGMA quick_check(3)") as cur:
        problems = [" ".join(str(row[0]).split()) for row in await cur.fetchall()]
    if problems != ["ok"]:
        raise StoreError("fails its integrity check: " + "; ".join(problems))


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
    )
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > len(MIGRATIONS):
        raise StoreError(
            f"the database has schema {current}, newer than this syncd knows "
            f"({len(MIGRATIONS)}): run a newer syncd"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        await db.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[version - 1]}; "
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', "
            f"'{version}'); COMMIT;"
        )


def _chunks(values: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
