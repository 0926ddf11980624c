"""SQL for QBO connections, one-time OAuth states, jobs and links (SqliteStore holds one).

Tokens arrive sealed (Connections seals them): the store never sees them in clear.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiosqlite
import orjson

from syncd.exceptions import RealmTakenError, StaleWriteError
from syncd.models import (
    Connection,
    DealLink,
    Invoice,
    Job,
    JobKind,
    JobStatus,
    Link,
    LinkKind,
    StoredWebhook,
    UnderWay,
    WebhookRetry,
)
from syncd.store import rows
from syncd.store.database import Database, GroupCommit, many, rows_among

_JOB_COLS = "tenant, queue, kind, subject, status, attempts, next_attempt_at, payload, last_error"
_PENDING = JobStatus.PENDING.value
_UNFINISHED = (
    JobStatus.PENDING.value,
    JobStatus.IN_FLIGHT.value,
)  # SQL: ('pending', …)


class QboTables:
    """Connections (tokens sealed), OAuth states, the jobs queue and links."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # a burst of webhooks: their bodies share transactions instead of one fsync each
        self._inbound = GroupCommit[tuple[bytes, str]](self._insert_inbound)

    async def connection(self, tenant: str) -> Connection | None:
        """Return the tenant's QBO connection."""
        sql = (
            "SELECT c.realm_id, status, token, preferences, connected_at, error, b.since, "
            "c.warned "
            "FROM connections c LEFT JOIN books b "
            "ON b.tenant = c.tenant AND b.realm_id = c.realm_id WHERE c.tenant = ?"
        )
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        realm_id, status, token, prefs, connected_at, error, since, warned = row
        return Connection(
            tenant=tenant,
            realm_id=realm_id,
            status=status,
            sealed_token=bytes(token),
            preferences=orjson.loads(prefs),
            connected_at=datetime.fromisoformat(connected_at),
            error=error,
            since=datetime.fromisoformat(since) if since else None,
            warned=warned,
        )

    async def save_connection(self, conn: Connection) -> None:
        """Insert or update a connection; RealmTakenError if another tenant holds it."""
        prefs, at = orjson.dumps(conn.preferences), conn.connected_at.isoformat()
        row = (
            conn.tenant,
            conn.realm_id,
            conn.status,
            conn.sealed_token,
            prefs,
            at,
            conn.error,
            conn.warned,
        )
        try:
            async with self._db.tx() as db:
                # not INSERT OR REPLACE: that would delete another tenant's row holding
                # the same realm instead of refusing
                await db.execute(
                    "INSERT INTO connections VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant) DO UPDATE SET realm_id = excluded.realm_id, "
                    "status = excluded.status, token = excluded.token, "
                    "preferences = excluded.preferences, "
                    "connected_at = excluded.connected_at, error = excluded.error, "
                    "warned = excluded.warned",
                    row,
                )
        except sqlite3.IntegrityError as exc:
            raise RealmTakenError(conn.realm_id) from exc

    async def save_token(self, tenant: str, realm_id: str, sealed: bytes) -> None:
        """Persist a rotated token set (sealed) before it is used."""
        async with self._db.tx() as db:
            await db.execute(
                "UPDATE connections SET token = ?, status = ?, error = NULL "
                "WHERE tenant = ? AND realm_id = ?",
                (sealed, "connected", tenant, realm_id),
            )

    async def set_preferences(self, tenant: str, preferences: dict[str, Any]) -> None:
        """Keep what was read of the company (home currency, multicurrency)."""
        async with self._db.tx() as db:
            await db.execute(
                "UPDATE connections SET preferences = ? WHERE tenant = ?",
                (orjson.dumps(preferences), tenant),
            )

    async def set_connection_status(
        self, tenant: str, status: str, error: str | None
    ) -> None:
        """Mark a connection (e.g. needs_reconnect after invalid_grant)."""
        async with self._db.tx() as db:
            await db.execute(
                "UPDATE connections SET status = ?, error = ? WHERE tenant = ?",
                (status, error, tenant),
            )

    async def set_warned(self, tenant: str, days: int) -> None:
        """Remember the expiry warning given for the tenant's grant (30 or 7 days)."""
        async with self._db.tx() as db:
            await db.execute(
                "UPDATE connections SET warned = ? WHERE tenant = ?", (days, tenant)
            )

    async def delete_connection(self, tenant: str) -> None:
        """Forget a tenant's connection (after revoke)."""
        async with self._db.tx() as db:
            await db.execute("DELETE FROM connections WHERE tenant = ?", (tenant,))

    async def linked_invoices(self, tenant: str) -> int:
        """How many of the tenant's invoices have a QBO copy."""
        sql = "SELECT count(*) FROM invoices WHERE tenant = ? AND qbo_id IS NOT NULL"
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def books(self, tenant: str) -> tuple[str, datetime] | None:
        """The QBO company the tenant's references belong to, and its first connection."""
        sql = "SELECT realm_id, since FROM books WHERE tenant = ?"
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            row = await cur.fetchone()
        return (str(row[0]), datetime.fromisoformat(row[1])) if row else None

    async def add_reads(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add QBO reads counted since the last call, by (realm, month "YYYY-MM")."""
        rows = [(realm, month, n) for (realm, month), n in counts.items() if n]
        async with self._db.tx() as db:
            await db.executemany(
                "INSERT INTO qbo_reads VALUES (?, ?, ?) ON CONFLICT (realm_id, month) "
                "DO UPDATE SET reads = reads + excluded.reads",
                rows,
            )

    async def reads(self, month: str | None = None) -> list[tuple[str, str, int]]:
        """(realm, month, reads), newest month first; of one month when given."""
        sql = "SELECT realm_id, month, reads FROM qbo_reads"
        args: tuple[str, ...] = ()
        if month is not None:
            sql, args = sql + " WHERE month = ?", (month,)
        async with (
            self._db.read() as db,
            db.execute(sql + " ORDER BY month DESC, realm_id", args) as cur,
        ):
            return [(str(r[0]), str(r[1]), int(r[2])) for r in await cur.fetchall()]

    async def remembers_references(self, tenant: str) -> bool:
        """Whether any link or QBO id is remembered for the tenant."""
        sql = (
            "SELECT EXISTS (SELECT 1 FROM links WHERE tenant = ?) OR EXISTS "
            "(SELECT 1 FROM deals WHERE tenant = ?) OR EXISTS "
            "(SELECT 1 FROM invoices WHERE tenant = ? AND qbo_id IS NOT NULL)"
        )
        async with self._db.read() as db, db.execute(sql, (tenant,) * 3) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    async def linked_invoices_of(self, tenant: str) -> list[Invoice]:
        """The tenant's invoices that have a QBO copy."""
        sql = f"SELECT {rows.INVOICE_COLS} FROM invoices WHERE tenant = ? AND qbo_id IS NOT NULL"
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            return [rows.invoice(r) for r in await cur.fetchall()]

    async def new_state(
        self, state: str, tenant: str, force: bool, now: datetime, ttl: timedelta
    ) -> None:
        """Remember a one-time OAuth state; forget those older than `ttl`."""
        async with self._db.tx() as db:
            await db.execute(
                "DELETE FROM oauth_states WHERE created_at < ?",
                ((now - ttl).isoformat(),),
            )
            await db.execute(
                "INSERT INTO oauth_states VALUES (?, ?, ?, ?)",
                (state, tenant, int(force), now.isoformat()),
            )

    async def take_state(self, state: str) -> tuple[str, bool, datetime] | None:
        """Consume a one-time OAuth state: (tenant, force, created) or None."""
        async with self._db.tx() as db:
            async with db.execute(
                "SELECT tenant, force, created_at FROM oauth_states WHERE state = ?",
                (state,),
            ) as cur:
                row = await cur.fetchone()
            await db.execute("DELETE FROM oauth_states WHERE state = ?", (state,))
        return (row[0], bool(row[1]), datetime.fromisoformat(row[2])) if row else None

    async def due_jobs(
        self, now: datetime, limit: int, skip: Collection[str] = ()
    ) -> list[Job]:
        """Jobs to run now, never ahead of an earlier unfinished job of the same invoice.

        Up to `limit` of each tenant's (not of the tenants in `skip`), oldest first: one
        realm's burst never hides another's work. In-flight jobs are due too: a crash
        left their outcome unclear.
        """
        sql = (
            f"SELECT id, {_JOB_COLS} FROM jobs j INDEXED BY jobs_waiting_tenant "
            f"WHERE j.tenant = ? AND j.status IN {_UNFINISHED} "
            "AND j.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs e WHERE "
            "e.tenant = j.tenant AND e.queue = j.queue AND e.id < j.id "
            f"AND e.status IN {_UNFINISHED}) ORDER BY j.id LIMIT ?"
        )
        due: list[Job] = []
        async with self._db.read() as db:
            for tenant in await _waiting_tenants(db):
                if tenant in skip:
                    continue
                async with db.execute(sql, (tenant, now.isoformat(), limit)) as cur:
                    due += [rows.job(r) for r in await cur.fetchall()]
        return due

    async def start_jobs(self, jobs: list[Job]) -> None:
        """Record the intent before the call (each job's new status and attempts)."""
        async with self._db.tx() as db:
            await many(
                db,
                "UPDATE jobs SET status = ?, attempts = ? WHERE id = ?",
                [(j.status.value, j.attempts, j.id) for j in jobs],
            )

    async def postpone_jobs(self, tenant: str, now: datetime, until: datetime) -> int:
        """Make a tenant's due jobs wait (its company is not connected); return how many.

        Only those due by `now`: jobs already waiting are not written again (every
        round used to rewrite every pending job of a disconnected tenant).
        """
        async with self._db.tx() as db:
            cur = await db.execute(
                # in-flight jobs too (a crash left them unclear): they were due again
                # at once, and the worker looped on them while the tenant waited
                f"UPDATE jobs SET next_attempt_at = ? WHERE tenant = ? AND status IN "
                f"{_UNFINISHED} AND next_attempt_at <= ?",
                (until.isoformat(), tenant, now.isoformat()),
            )
            return int(cur.rowcount)

    async def jobs_due_now(self, tenant: str, now: datetime) -> None:
        """Make a tenant's waiting jobs due (its company was just reconnected)."""
        async with self._db.tx() as db:
            await db.execute(
                f"UPDATE jobs SET next_attempt_at = ? WHERE tenant = ? AND status = '{_PENDING}'",
                (now.isoformat(), tenant),
            )

    async def job(self, job_id: int) -> Job | None:
        """One job, by its id."""
        sql = f"SELECT id, {_JOB_COLS} FROM jobs WHERE id = ?"
        async with self._db.read() as db, db.execute(sql, (job_id,)) as cur:
            row = await cur.fetchone()
        return rows.job(row) if row else None

    async def jobs(self, tenant: str) -> list[Job]:
        """Every job of a tenant, oldest first."""
        sql = f"SELECT id, {_JOB_COLS} FROM jobs WHERE tenant = ? ORDER BY id"
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            return [rows.job(r) for r in await cur.fetchall()]

    async def tenant_of_realm(self, realm_id: str) -> str | None:
        """The tenant connected to a QBO company."""
        sql = "SELECT tenant FROM connections WHERE realm_id = ?"
        async with self._db.read() as db, db.execute(sql, (realm_id,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def store_inbound(self, body: bytes, now: datetime) -> None:
        """Keep a webhook body before answering 200 (processed later)."""
        await self._inbound.add((body, now.isoformat()))

    async def _insert_inbound(self, rows: list[tuple[bytes, str]]) -> None:
        async with self._db.tx() as db:
            await db.executemany(
                "INSERT INTO inbound (body, received_at) VALUES (?, ?)", rows
            )

    async def pending_inbound(
        self, limit: int, now: datetime | None = None
    ) -> list[StoredWebhook]:
        """Stored webhook bodies not processed yet (and due at `now`), oldest first."""
        sql = (
            "SELECT seq, body, received_at, attempts FROM inbound WHERE done = 0 "
            "AND (next_at IS NULL OR next_at <= ?) ORDER BY seq LIMIT ?"
        )
        due = (now or datetime.max.replace(tzinfo=UTC)).isoformat()
        async with self._db.read() as db, db.execute(sql, (due, limit)) as cur:
            rows = await cur.fetchall()
        return [
            StoredWebhook(
                seq=int(s),
                body=bytes(b),
                received_at=datetime.fromisoformat(at),
                attempts=int(n),
            )
            for s, b, at, n in rows
        ]

    async def new_events(self, realm_id: str, keys: list[str]) -> set[str]:
        """Which of these event keys were not applied yet."""
        if not keys:
            return set()
        marks = ",".join("?" * len(keys))
        sql = f"SELECT key FROM inbound_events WHERE realm_id = ? AND key IN ({marks})"
        async with self._db.read() as db, db.execute(sql, [realm_id, *keys]) as cur:
            seen = {str(k) for (k,) in await cur.fetchall()}
        return set(keys) - seen

    async def links_to(self, tenant: str, kind: LinkKind, qbo_id: str) -> list[Link]:
        """The CRM things linked to one QBO object."""
        sql = "SELECT key FROM links WHERE tenant = ? AND kind = ? AND qbo_id = ?"
        async with (
            self._db.read() as db,
            db.execute(sql, (tenant, kind.value, qbo_id)) as cur,
        ):
            rows = await cur.fetchall()
        return [Link(tenant=tenant, kind=kind, key=k, qbo_id=qbo_id) for (k,) in rows]

    async def link(self, tenant: str, kind: LinkKind, key: str) -> str | None:
        """The QBO id a CRM customer or item is linked to."""
        sql = "SELECT qbo_id FROM links WHERE tenant = ? AND kind = ? AND key = ?"
        async with (
            self._db.read() as db,
            db.execute(sql, (tenant, kind.value, key)) as cur,
        ):
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def invoices_by_qbo_ids(
        self, tenant: str, qbo_ids: list[str]
    ) -> dict[str, Invoice]:
        """The tenant's invoices synced as these QBO invoices, by QBO Id."""
        sql = (
            f"SELECT {rows.INVOICE_COLS} FROM invoices INDEXED BY invoices_qbo_id "
            "WHERE tenant = ? AND qbo_id IN ({among})"
        )
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], qbo_ids)
        invoices = [rows.invoice(row) for row in found]
        return {str(inv.qbo_id): inv for inv in invoices}

    async def deals(self, tenant: str, qbo_invoice_ids: list[str]) -> dict[str, str]:
        """The CRM deals these QBO-made invoices are linked to (HS4)."""
        sql = (
            "SELECT qbo_invoice_id, deal_id FROM deals WHERE tenant = ? "
            "AND deal_id IS NOT NULL AND qbo_invoice_id IN ({among})"
        )
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], qbo_invoice_ids)
        return {str(q): str(d) for q, d in found}

    async def writes_under_way(self, tenant: str, invoice_ids: list[str]) -> UnderWay:
        """The deletes, voids and CRM payments queued for these invoices, unfinished."""
        sql = (
            "SELECT queue, kind, payload FROM jobs INDEXED BY jobs_invoice "
            f"WHERE tenant = ? AND kind IN ('{JobKind.INVOICE_DELETE}', "
            f"'{JobKind.INVOICE_VOID}', '{JobKind.PAYMENT_PUSH}') "
            f"AND status IN {_UNFINISHED} AND queue IN ({{among}})"
        )
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], invoice_ids)
        removing: set[str] = set()
        paying: dict[str, Decimal] = {}
        for queue, kind, payload in found:
            if kind != JobKind.PAYMENT_PUSH:
                removing.add(str(queue))
                continue
            amount = Decimal(str(orjson.loads(payload).get("amount", "0")))
            paying[str(queue)] = paying.get(str(queue), Decimal(0)) + amount
        return UnderWay(removing=removing, paying=paying)

    async def linked_customers(self, tenant: str, qbo_ids: list[str]) -> set[str]:
        """Which of these QBO customers syncd created or matched (linked)."""
        sql = (
            "SELECT qbo_id FROM links WHERE tenant = ? AND kind = ? "
            "AND qbo_id IN ({among})"
        )
        async with self._db.read() as db:
            found = await rows_among(
                db, sql, [tenant, LinkKind.CUSTOMER.value], qbo_ids
            )
        return {str(q) for (q,) in found}


_ABSORBED = "absorbed by the same job queued again meanwhile"


async def write_jobs(db: aiosqlite.Connection, jobs: list[Job]) -> None:
    """New jobs (a pending one of the same kind for the invoice absorbs them), updates."""
    new = [rows.job_row(j) for j in jobs if j.id is None]
    await many(
        db,
        f"INSERT OR IGNORE INTO jobs ({_JOB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        new,
    )
    for job in (j for j in jobs if j.id is not None):
        try:
            await db.execute(
                "UPDATE jobs SET status = ?, attempts = ?, next_attempt_at = ?, "
                "payload = ?, last_error = ? WHERE id = ?",
                (
                    job.status.value,
                    job.attempts,
                    job.next_attempt_at.isoformat(),
                    orjson.dumps(job.payload),
                    job.last_error,
                    job.id,
                ),
            )
        except sqlite3.IntegrityError:
            # put back to wait while the same job was queued anew during its call (the
            # CRM changed the invoice): the new one does the same work, at its turn
            await db.execute(
                "UPDATE jobs SET status = ?, attempts = ?, last_error = ? WHERE id = ?",
                (JobStatus.DONE.value, job.attempts, _ABSORBED, job.id),
            )


async def write_links(db: aiosqlite.Connection, links: list[Link]) -> None:
    """Remember customer and item links."""
    await many(
        db,
        "INSERT OR REPLACE INTO links VALUES (?, ?, ?, ?)",
        [(k.tenant, k.kind.value, k.key, k.qbo_id) for k in links],
    )


async def write_deals(db: aiosqlite.Connection, deals: list[DealLink]) -> None:
    """Remember which CRM deal each QBO-made invoice belongs to (None: unlinked)."""
    await many(
        db,
        "INSERT OR REPLACE INTO deals VALUES (?, ?, ?)",
        [(d.tenant, d.qbo_invoice_id, d.deal_id) for d in deals],
    )


async def write_inbound(
    db: aiosqlite.Connection,
    done: list[int],
    keys: list[tuple[str, str]],
    new: list[WebhookRetry],
    at: datetime | None,
) -> None:
    """Mark webhook bodies processed, remember the events they applied, queue retries."""
    await many(db, "UPDATE inbound SET done = 1 WHERE seq = ?", [(s,) for s in done])
    await many(
        db,
        "INSERT INTO inbound (body, received_at, attempts, next_at) VALUES (?, ?, ?, ?)",
        [
            (r.body, r.received_at.isoformat(), r.attempts, r.next_at.isoformat())
            for r in new
        ],
    )
    if not keys:
        return
    if at is None:
        raise ValueError("a ChangeSet that stores webhook event keys needs `at`")
    now = at.isoformat()
    try:
        await many(
            db,
            "INSERT INTO inbound_events VALUES (?, ?, ?)",
            [(realm, key, now) for realm, key in dict.fromkeys(keys)],
        )
    except sqlite3.IntegrityError as exc:
        # another writer applied one of these events since this batch was decided (the
        # reconciliation and the webhooks both saw it): decide again, or it is twice
        raise StaleWriteError("a QBO event was applied meanwhile") from exc


async def _waiting_tenants(db: aiosqlite.Connection) -> list[str]:
    """The tenants with unfinished jobs: an index seek each (a loose index scan)."""
    sql = (
        "SELECT tenant FROM jobs INDEXED BY jobs_waiting_tenant "
        f"WHERE status IN {_UNFINISHED} AND tenant > ? ORDER BY tenant LIMIT 1"
    )
    found: list[str] = []
    after = ""
    while True:
        async with db.execute(sql, (after,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return found
        after = str(row[0])
        found.append(after)
