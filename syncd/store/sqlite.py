"""The Store on SQLite: the core tables here, the QBO side's in `QboTables`, composed.

SQL lives in `syncd/store/` only: `database` (the file, its transactions, migrations),
this module (ledger, invoices, history, failures, outbox, refreshes) and `qbo_tables`.
`synchronous=FULL` because a commit here precedes the MQTT ack: an acknowledged message
must survive a power cut, not only a process crash.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from syncd.exceptions import StaleWriteError
from syncd.models import (
    Backlog,
    ChangeSet,
    Connection,
    Cutoffs,
    Failure,
    HistoryEntry,
    Invoice,
    Job,
    JobStatus,
    LedgerEntry,
    Link,
    LinkKind,
    OutboxRow,
    Outcome,
    StoredWebhook,
    TenantCounts,
    UnderWay,
)
from syncd.store import rows
from syncd.store.database import Database, many, rows_among
from syncd.store.outbox import render
from syncd.store.qbo_tables import (
    QboTables,
    write_deals,
    write_inbound,
    write_jobs,
    write_links,
)

_INVOICE_COLS = rows.INVOICE_COLS


class SqliteStore:
    """The Store on one SQLite file: the core tables here, the QBO side's composed."""

    def __init__(self, path: Path, check: str = "quick", prefix: str = "syncd") -> None:
        self.path = path
        self._prefix = prefix  # the topic prefix outbox messages are rendered under
        self._db = Database(path, check)
        self._qbo = QboTables(self._db)
        # held from reading an invoice to committing its change, within this process:
        # it avoids conflicts that the revision check would refuse (StaleWriteError)
        self.write_lock = asyncio.Lock()

    @property
    def problem(self) -> str | None:
        """Why the store cannot be used now (for /readyz); None when fine."""
        return self._db.problem

    @property
    def is_open(self) -> bool:
        """Tell whether the store can be used."""
        return self._db.is_open

    async def open(self) -> None:
        """Open, check and migrate the file (StoreError says what is wrong)."""
        await self._db.open()

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()

    async def known_messages(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which (tenant, message id) pairs the ledger already holds."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, message_id in keys:
            by_tenant.setdefault(tenant, []).append(message_id)
        sql = "SELECT message_id FROM messages WHERE tenant = ? AND message_id IN ({among})"
        found: set[tuple[str, str]] = set()
        async with self._db.read() as db:
            for tenant, ids in by_tenant.items():
                seen = await rows_among(db, sql, [tenant], ids)
                found.update((tenant, m) for (m,) in seen)
        return found

    async def load_invoices(self, tenant: str, ids: list[str]) -> dict[str, Invoice]:
        """Return the stored invoices among `ids` of `tenant`."""
        sql = (
            f"SELECT {_INVOICE_COLS} FROM invoices "
            "WHERE tenant = ? AND invoice_id IN ({among})"
        )
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], ids)
        return {row[1]: rows.invoice(row) for row in found}

    async def commit(self, changes: ChangeSet) -> None:
        """Write a whole ChangeSet in one transaction."""
        async with self._db.tx() as db:
            await many(
                db,
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [rows.ledger_row(e) for e in changes.ledger],
            )
            await _write_invoices(db, list(changes.invoices.values()))
            await many(
                db,
                "INSERT INTO history (tenant, invoice_id, from_status, to_status, cause,"
                " event_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [rows.history_row(h) for h in changes.history],
            )
            await many(
                db,
                "INSERT INTO failures (tenant, invoice_id, operation, code, message,"
                " attempts, retryable, event_id, at, job_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [rows.failure_row(f) for f in changes.failures],
            )
            await many(
                db,
                "INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, ?)",
                [
                    (o.topic, o.payload, int(o.retain))
                    for o in (render(self._prefix, m) for m in changes.outbox)
                ],
            )
            await many(
                db,
                "DELETE FROM outbox WHERE seq = ?",
                [(s,) for s in changes.outbox_done],
            )
            await many(
                db,
                "INSERT INTO refreshes (tenant, request, at) VALUES (?, ?, ?)",
                [(r["tenant"], orjson.dumps(r), r["at"]) for r in changes.refreshes],
            )
            await many(
                db,
                "UPDATE refreshes SET done = 1 WHERE seq = ?",
                [(s,) for s in changes.refreshes_done],
            )
            await many(
                db,
                "UPDATE failures SET resolved_at = ? WHERE tenant = ? AND seq = ?",
                [(at.isoformat(), t, seq) for t, seq, at in changes.resolved],
            )
            await many(
                db,
                "UPDATE failures SET resolved_at = ? WHERE tenant = ? AND job_id = ? "
                "AND resolved_at IS NULL",
                [(at.isoformat(), t, job) for t, job, at in changes.jobs_recovered],
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
                db,
                changes.inbound_done,
                changes.inbound_events,
                changes.inbound_new,
                changes.at,
            )

    async def prune(self, cutoffs: Cutoffs, limit: int) -> dict[str, int]:
        """Delete up to `limit` finished records of each kind older than `cutoffs`.

        Returns how many of each kind went; a kind at `limit` may have more. Pending
        work is never touched: unfinished jobs, open failures and the jobs they name
        (the admin's retry runs them again), webhooks and refreshes not yet applied, and
        the once-per-customer first-payment key (HL2).
        """
        ledger, rejected = cutoffs.ledger.isoformat(), cutoffs.rejected.isoformat()
        finished = cutoffs.finished.isoformat()
        deleted: dict[str, int] = {}
        async with self._db.tx() as db:
            for kind, sql, params in [
                ("ledger", _PRUNE_MESSAGES, (ledger, "applied", "ignored", "refused")),
                ("rejected", _PRUNE_MESSAGES, (rejected, "rejected", "failed", "")),
                ("jobs", _PRUNE_JOBS, (finished,)),
                ("failures", _PRUNE_FAILURES, (finished,)),
                ("webhooks", _PRUNE_WEBHOOKS, (finished,)),
                ("refreshes", _PRUNE_REFRESHES, (finished,)),
                ("event_keys", _PRUNE_EVENT_KEYS, (finished,)),
            ]:
                cur = await db.execute(sql, (*params, limit))
                deleted[kind] = cur.rowcount
        return deleted

    async def optimize(self) -> None:
        """Refresh the query planner's statistics where the data has changed."""
        await self._db.optimize()

    async def backlog(self) -> Backlog:
        """Jobs waiting and in flight, the outbox's depth, the oldest waiting webhook."""
        sql = (
            "SELECT (SELECT count(*) FROM jobs WHERE status = 'pending'), "
            "(SELECT count(*) FROM jobs WHERE status = 'in_flight'), "
            "(SELECT count(*) FROM outbox), "
            "(SELECT min(received_at) FROM inbound WHERE done = 0)"
        )
        async with self._db.read() as db, db.execute(sql) as cur:
            row = await cur.fetchone()
        pending, in_flight, outbox, oldest = row if row else (0, 0, 0, None)
        return Backlog(
            jobs_pending=int(pending),
            jobs_in_flight=int(in_flight),
            outbox=int(outbox),
            oldest_webhook=datetime.fromisoformat(oldest) if oldest else None,
        )

    async def tenant_counts(self, tenant: str) -> TenantCounts:
        """The tenant's invoices by sync state, jobs not finished, failures open."""
        by_state = "SELECT sync_state, count(*) FROM invoices WHERE tenant = ? GROUP BY sync_state"
        waiting = (
            "SELECT (SELECT count(*) FROM jobs WHERE tenant = ? AND status IN (?, ?)), "
            "(SELECT count(*) FROM failures WHERE tenant = ? AND resolved_at IS NULL)"
        )
        unfinished = (JobStatus.PENDING.value, JobStatus.IN_FLIGHT.value)
        async with self._db.read() as db:
            async with db.execute(by_state, (tenant,)) as cur:
                states = {str(s): int(n) for s, n in await cur.fetchall()}
            async with db.execute(waiting, (tenant, *unfinished, tenant)) as cur:
                row = await cur.fetchone()
        jobs, failures = row if row else (0, 0)
        return TenantCounts(
            sync_states=states, jobs_waiting=int(jobs), open_failures=int(failures)
        )

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Return the oldest unpublished messages, in order."""
        sql = "SELECT seq, topic, payload, retain FROM outbox ORDER BY seq LIMIT ?"
        async with self._db.read() as db, db.execute(sql, (limit,)) as cur:
            rows = await cur.fetchall()
        return [
            OutboxRow(seq=s, topic=t, payload=p, retain=bool(r)) for s, t, p, r in rows
        ]

    async def outbox_done(self, seqs: list[int]) -> None:
        """Forget published messages."""
        async with self._db.tx() as db:
            await many(db, "DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    async def pending_refreshes(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """The CRM's refresh requests not yet done, oldest first."""
        sql = "SELECT seq, request FROM refreshes WHERE done = 0 ORDER BY seq LIMIT ?"
        async with self._db.read() as db, db.execute(sql, (limit,)) as cur:
            return [(seq, orjson.loads(body)) for seq, body in await cur.fetchall()]

    async def invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """Return one invoice."""
        return (await self.load_invoices(tenant, [invoice_id])).get(invoice_id)

    async def history(self, tenant: str, invoice_id: str) -> list[HistoryEntry]:
        """Return one invoice's moves, oldest first."""
        return (await self.histories(tenant, [invoice_id])).get(invoice_id, [])

    async def histories(
        self, tenant: str, invoice_ids: list[str]
    ) -> dict[str, list[HistoryEntry]]:
        """The moves of each of these invoices, oldest first, in one query."""
        sql = (
            "SELECT invoice_id, from_status, to_status, cause, event_id, at FROM history "
            "WHERE tenant = ? AND invoice_id IN ({among}) ORDER BY seq"
        )
        async with self._db.read() as db:
            rows = await rows_among(db, sql, [tenant], invoice_ids)
        found: dict[str, list[HistoryEntry]] = {}
        for invoice_id, f, t, c, e, a in rows:  # in order within each chunk
            found.setdefault(invoice_id, []).append(
                HistoryEntry(
                    tenant=tenant,
                    invoice_id=invoice_id,
                    from_status=f,
                    to_status=t,
                    cause=c,
                    event_id=e,
                    at=datetime.fromisoformat(a),
                )
            )
        return found

    async def failures(self, tenant: str) -> list[Failure]:
        """Return a tenant's failures, oldest first."""
        sql = (
            "SELECT seq, invoice_id, operation, code, message, attempts, retryable, event_id,"
            " at, resolved_at, job_id FROM failures WHERE tenant = ? ORDER BY seq"
        )
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
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
            self._db.read() as db,
            db.execute(sql + " ORDER BY updated_at DESC", params) as cur,
        ):
            return [rows.invoice(r) for r in await cur.fetchall()]

    async def invoice_page(
        self,
        tenant: str,
        *,
        limit: int,
        sync_state: str | None = None,
        status: str | None = None,
        before: tuple[str, str] | None = None,
        offset: int = 0,
    ) -> list[Invoice]:
        """A page of a tenant's invoices, newest change first.

        `before`: the (updated_at, invoice_id) of the last invoice of the page before.
        """
        sql = f"SELECT {_INVOICE_COLS} FROM invoices WHERE tenant = ?"
        params: list[Any] = [tenant]
        for column, value in (("sync_state", sync_state), ("status", status)):
            if value:
                sql += f" AND {column} = ?"
                params.append(value)
        if before is not None:
            sql += " AND (updated_at, invoice_id) < (?, ?)"
            params.extend(before)
        sql += " ORDER BY updated_at DESC, invoice_id DESC LIMIT ? OFFSET ?"
        params.extend((limit, offset))
        async with self._db.read() as db, db.execute(sql, params) as cur:
            return [rows.invoice(r) for r in await cur.fetchall()]

    async def past_due(self, tenant: str, today: date, limit: int) -> list[Invoice]:
        """Up to `limit` synced invoices QBO shows open or partly paid, due before today."""
        sql = (
            f"SELECT {_INVOICE_COLS} FROM invoices INDEXED BY invoices_open_due "
            "WHERE tenant = ? AND qbo_status IN ('open', 'partially_paid') "
            "AND due_date IS NOT NULL AND due_date < ? AND sync_state = 'synced' "
            "ORDER BY due_date LIMIT ?"
        )
        params = (tenant, today.isoformat(), limit)
        async with self._db.read() as db, db.execute(sql, params) as cur:
            return [rows.invoice(r) for r in await cur.fetchall()]

    async def ledger(self, tenant: str, message_id: str) -> LedgerEntry | None:
        """Return what became of one inbound message."""
        sql = (
            "SELECT topic, type, outcome, reason, received_at, payload FROM messages"
            " WHERE tenant = ? AND message_id = ?"
        )
        async with self._db.read() as db, db.execute(sql, (tenant, message_id)) as cur:
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

    # the QBO side: connections, OAuth states, books, links and deals, jobs, webhooks

    async def connection(self, tenant: str) -> Connection | None:
        """Return the tenant's QBO connection."""
        return await self._qbo.connection(tenant)

    async def save_connection(self, conn: Connection) -> None:
        """Insert or update a connection; RealmTakenError if another tenant holds it."""
        return await self._qbo.save_connection(conn)

    async def save_token(self, tenant: str, realm_id: str, sealed: bytes) -> None:
        """Persist a rotated token set (sealed) before it is used."""
        return await self._qbo.save_token(tenant, realm_id, sealed)

    async def set_preferences(self, tenant: str, preferences: dict[str, Any]) -> None:
        """Keep what was read of the company (home currency, multicurrency)."""
        return await self._qbo.set_preferences(tenant, preferences)

    async def set_connection_status(
        self, tenant: str, status: str, error: str | None
    ) -> None:
        """Mark a connection (e.g. needs_reconnect after invalid_grant)."""
        return await self._qbo.set_connection_status(tenant, status, error)

    async def set_warned(self, tenant: str, days: int) -> None:
        """Remember the expiry warning given for the tenant's grant (30 or 7 days)."""
        return await self._qbo.set_warned(tenant, days)

    async def delete_connection(self, tenant: str) -> None:
        """Forget a tenant's connection (after revoke)."""
        return await self._qbo.delete_connection(tenant)

    async def linked_invoices(self, tenant: str) -> int:
        """How many of the tenant's invoices have a QBO copy."""
        return await self._qbo.linked_invoices(tenant)

    async def books(self, tenant: str) -> tuple[str, datetime] | None:
        """The QBO company the tenant's references belong to, and its first connection."""
        return await self._qbo.books(tenant)

    async def add_reads(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add QBO reads counted since the last call, by (realm, month "YYYY-MM")."""
        return await self._qbo.add_reads(counts)

    async def reads(self, month: str | None = None) -> list[tuple[str, str, int]]:
        """(realm, month, reads), newest month first; of one month when given."""
        return await self._qbo.reads(month)

    async def remembers_references(self, tenant: str) -> bool:
        """Whether any link or QBO id is remembered for the tenant."""
        return await self._qbo.remembers_references(tenant)

    async def linked_invoices_of(self, tenant: str) -> list[Invoice]:
        """The tenant's invoices that have a QBO copy."""
        return await self._qbo.linked_invoices_of(tenant)

    async def new_state(
        self, state: str, tenant: str, force: bool, now: datetime, ttl: timedelta
    ) -> None:
        """Remember a one-time OAuth state; forget those older than `ttl`."""
        return await self._qbo.new_state(state, tenant, force, now, ttl)

    async def take_state(self, state: str) -> tuple[str, bool, datetime] | None:
        """Consume a one-time OAuth state: (tenant, force, created) or None."""
        return await self._qbo.take_state(state)

    async def due_jobs(
        self, now: datetime, limit: int, skip: Collection[str] = ()
    ) -> list[Job]:
        """Jobs to run now (up to `limit` per tenant, none of `skip`'s), in queue order."""
        return await self._qbo.due_jobs(now, limit, skip)

    async def start_jobs(self, jobs: list[Job]) -> None:
        """Record the intent before the call (each job's new status and attempts)."""
        return await self._qbo.start_jobs(jobs)

    async def postpone_jobs(self, tenant: str, now: datetime, until: datetime) -> int:
        """Make a tenant's jobs due by `now` wait until `until`; return how many."""
        return await self._qbo.postpone_jobs(tenant, now, until)

    async def jobs_due_now(self, tenant: str, now: datetime) -> None:
        """Make a tenant's waiting jobs due (its company was just reconnected)."""
        return await self._qbo.jobs_due_now(tenant, now)

    async def job(self, job_id: int) -> Job | None:
        """One job, by its id."""
        return await self._qbo.job(job_id)

    async def jobs(self, tenant: str) -> list[Job]:
        """Every job of a tenant, oldest first."""
        return await self._qbo.jobs(tenant)

    async def tenant_of_realm(self, realm_id: str) -> str | None:
        """The tenant connected to a QBO company."""
        return await self._qbo.tenant_of_realm(realm_id)

    async def store_inbound(self, body: bytes, now: datetime) -> None:
        """Keep a webhook body before answering 200 (processed later)."""
        return await self._qbo.store_inbound(body, now)

    async def pending_inbound(
        self, limit: int, now: datetime | None = None
    ) -> list[StoredWebhook]:
        """Stored webhook bodies not processed yet (and due at `now`), oldest first."""
        return await self._qbo.pending_inbound(limit, now)

    async def new_events(self, realm_id: str, keys: list[str]) -> set[str]:
        """Which of these event keys were not applied yet."""
        return await self._qbo.new_events(realm_id, keys)

    async def links_to(self, tenant: str, kind: LinkKind, qbo_id: str) -> list[Link]:
        """The CRM things linked to one QBO object."""
        return await self._qbo.links_to(tenant, kind, qbo_id)

    async def link(self, tenant: str, kind: LinkKind, key: str) -> str | None:
        """The QBO id a CRM customer or item is linked to."""
        return await self._qbo.link(tenant, kind, key)

    async def invoices_by_qbo_ids(
        self, tenant: str, qbo_ids: list[str]
    ) -> dict[str, Invoice]:
        """The tenant's invoices synced as these QBO invoices, by QBO Id."""
        return await self._qbo.invoices_by_qbo_ids(tenant, qbo_ids)

    async def deals(self, tenant: str, qbo_invoice_ids: list[str]) -> dict[str, str]:
        """The CRM deals these QBO-made invoices are linked to (HS4)."""
        return await self._qbo.deals(tenant, qbo_invoice_ids)

    async def writes_under_way(self, tenant: str, invoice_ids: list[str]) -> UnderWay:
        """The deletes, voids and CRM payments queued for these invoices, unfinished."""
        return await self._qbo.writes_under_way(tenant, invoice_ids)

    async def linked_customers(self, tenant: str, qbo_ids: list[str]) -> set[str]:
        """Which of these QBO customers syncd created or matched (linked)."""
        return await self._qbo.linked_customers(tenant, qbo_ids)


_PRUNE_MESSAGES = (
    "DELETE FROM messages WHERE (tenant, message_id) IN (SELECT tenant, message_id "
    "FROM messages INDEXED BY messages_received WHERE received_at < ? "
    "AND outcome IN (?, ?, ?) LIMIT ?)"
)
_PRUNE_JOBS = (
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN ('done', 'failed') "
    "AND next_attempt_at < ? AND NOT EXISTS (SELECT 1 FROM failures "
    "WHERE failures.job_id = jobs.id AND resolved_at IS NULL) LIMIT ?)"
)
_PRUNE_FAILURES = (
    "DELETE FROM failures WHERE seq IN (SELECT seq FROM failures "
    "WHERE resolved_at IS NOT NULL AND resolved_at < ? LIMIT ?)"
)
_PRUNE_WEBHOOKS = (
    "DELETE FROM inbound WHERE seq IN (SELECT seq FROM inbound "
    "WHERE done = 1 AND received_at < ? ORDER BY seq LIMIT ?)"
)
_PRUNE_REFRESHES = (
    "DELETE FROM refreshes WHERE seq IN (SELECT seq FROM refreshes "
    "WHERE done = 1 AND at < ? ORDER BY seq LIMIT ?)"
)
_PRUNE_EVENT_KEYS = (
    "DELETE FROM inbound_events WHERE (realm_id, key) IN (SELECT realm_id, key "
    "FROM inbound_events INDEXED BY inbound_events_at WHERE at < ? "
    "AND key NOT LIKE 'first-payment:%' LIMIT ?)"
)


async def _write_invoices(db: aiosqlite.Connection, invoices: list[Invoice]) -> None:
    """New invoices inserted, known ones updated only at the revision they were read.

    The version check is what serialises writes to one invoice across processes: a
    copy read before another writer's commit is refused whole (StaleWriteError).
    """
    new = [i for i in invoices if i.rev == 0]
    known = [i for i in invoices if i.rev != 0]
    marks = ", ".join("?" * len(rows.INVOICE_WRITTEN.split(", ")))
    try:
        await many(
            db,
            f"INSERT INTO invoices ({rows.INVOICE_WRITTEN}) VALUES ({marks})",
            [rows.invoice_row(i) for i in new],
        )
    except sqlite3.IntegrityError as exc:
        raise StaleWriteError("an invoice read as new was stored meanwhile") from exc
    if known:
        updated = await many(
            db, rows.UPDATE_INVOICE, [rows.invoice_update(i) for i in known]
        )
        if updated != len(known):
            raise StaleWriteError("an invoice changed since it was read")
