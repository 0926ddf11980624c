"""The Store's tables, written once for every database: one class, a module per role.

SQL lives in `syncd/store/` only: this module (intake, the one-transaction commit,
outbox, retention), `tables_reads` (the admin side's reads), `tables_realms`
(connections, books, reads, OAuth states), `tables_jobs` (the job queue) and
`tables_qbo` (webhooks, event keys, links, deals). `SqlStore` runs them on a `Db`:
SQLite's (`sqlite`) or PostgreSQL's (`postgres`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

import orjson

from syncd.exceptions import StaleWriteError
from syncd.models import (
    Backlog,
    ChangeSet,
    Cutoffs,
    Invoice,
    OutboxRow,
    Parked,
)
from syncd.store import rows
from syncd.store.database import GroupCommit, many, rows_among
from syncd.store.outbox import render
from syncd.store.sql import CONFLICT, Db, Sql
from syncd.store.tables_drift import DriftTables, write_drift
from syncd.store.tables_jobs import JobTables, write_jobs
from syncd.store.tables_leases import LeaseTables, check_fence
from syncd.store.tables_money import MoneyTables, write_credit_notes, write_payments
from syncd.store.tables_qbo import QboTables, write_deals, write_inbound, write_links
from syncd.store.tables_reads import AdminReads
from syncd.store.tables_realms import RealmTables
from syncd.store.tables_sessions import SessionTables

_INVOICE_COLS = rows.INVOICE_COLS


class SqlStore(
    AdminReads,
    RealmTables,
    JobTables,
    QboTables,
    SessionTables,
    LeaseTables,
    MoneyTables,
    DriftTables,
):
    """The Store on a `Db`.

    Intake, commit, outbox and retention here; each other role's tables in a module of
    its own (admin reads, realms, the job queue, QBO's side), mixed in.
    """

    def __init__(self, db: Db, prefix: str = "syncd") -> None:
        self._prefix = prefix  # the topic prefix outbox messages are rendered under
        self._db = db
        self._turns: dict[str, asyncio.Lock] = {}  # tenant → its token's turn here
        # a burst of webhooks: their bodies share transactions instead of one fsync each
        self._inbound = GroupCommit[tuple[bytes, str, str | None]](self._insert_inbound)

    @property
    def problem(self) -> str | None:
        """Why the store cannot be used now (for /readyz); None when fine."""
        return self._db.problem

    @property
    def is_open(self) -> bool:
        """Tell whether the store can be used."""
        return self._db.is_open

    async def open(self) -> None:
        """Open, check and migrate (StoreError says what is wrong)."""
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

    def wake_ups(self) -> AsyncIterator[str]:
        """What other processes committed for this one to act on: jobs, outbox, inbound."""
        return self._db.wake_ups()

    async def parked_messages(
        self, limit: int, invoices: Collection[tuple[str, str]] | None = None
    ) -> list[Parked]:
        """Parked messages (of these (tenant, invoice) only, if given), oldest first."""
        cols = "tenant, message_id, invoice_id, topic, payload, reason, parked_at"
        async with self._db.read() as db:
            if invoices is None:
                sql = f"SELECT {cols} FROM parked ORDER BY parked_at LIMIT ?"
                async with db.execute(sql, (limit,)) as cur:
                    found = list(await cur.fetchall())
            else:
                found = []
                sql = (
                    f"SELECT {cols} FROM parked WHERE tenant = ? AND invoice_id = ? "
                    "ORDER BY parked_at LIMIT ?"
                )
                for tenant, invoice_id in sorted(set(invoices)):
                    async with db.execute(sql, (tenant, invoice_id, limit)) as cur:
                        found += await cur.fetchall()
        return [
            Parked(
                tenant=t,
                message_id=m,
                invoice_id=i,
                topic=topic,
                payload=bytes(payload),
                reason=reason,
                parked_at=rows.when(at),
            )
            for t, m, i, topic, payload, reason, at in found
        ]

    async def commit(self, changes: ChangeSet) -> None:
        """Write a whole ChangeSet in one transaction."""
        async with self._db.tx() as db:
            await check_fence(db, changes.fence)
            await _unpark(db, changes.unparked)
            try:
                await many(
                    db,
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [rows.ledger_row(e) for e in changes.ledger],
                )
            except CONFLICT as exc:
                # another replica took the same message id first: decided again, the
                # message is then a duplicate (an error ends a PostgreSQL transaction,
                # so nothing else of this one is written)
                raise StaleWriteError(
                    "a message was recorded elsewhere meanwhile"
                ) from exc
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
                await db.execute("DELETE FROM payments WHERE tenant = ?", (tenant,))
                await db.execute(
                    "UPDATE credit_notes SET qbo_id = NULL, qbo_sync_token = NULL, "
                    "qbo_status = NULL, applied_payment = NULL, pushed_body = NULL "
                    "WHERE tenant = ?",
                    (tenant,),
                )
                await db.execute(
                    "INSERT INTO books VALUES (?, ?, ?) ON CONFLICT (tenant) "
                    "DO UPDATE SET realm_id = excluded.realm_id, since = excluded.since",
                    (tenant, realm_id, since.isoformat()),
                )
            await many(
                db,
                "INSERT INTO parked VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.tenant,
                        m.message_id,
                        m.invoice_id,
                        m.topic,
                        m.payload,
                        m.reason,
                        m.parked_at.isoformat(),
                    )
                    for m in changes.parked
                ],
            )
            await write_jobs(db, changes.jobs)
            await many(
                db,
                "UPDATE connections SET last_webhook_at = ? WHERE tenant = ?",
                [(at.isoformat(), t) for t, at in changes.webhooks_applied.items()],
            )
            await write_links(db, changes.links)
            await write_deals(db, changes.deals)
            await write_payments(db, changes.payments)
            await write_credit_notes(
                db, changes.credit_notes, changes.credit_notes_synced
            )
            await write_drift(db, changes.drift)
            await write_inbound(
                db,
                changes.inbound_done,
                changes.inbound_events,
                changes.inbound_new,
                changes.at,
            )
            # the other replicas act at once, not at their next poll
            for what, told in (
                ("jobs", changes.jobs),
                ("outbox", changes.outbox),
                ("inbound", changes.inbound_new or changes.refreshes),
            ):
                if told:
                    await self._db.notify(db, what)

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
            oldest_webhook=rows.when(oldest) if oldest else None,
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

    async def pending_refreshes(
        self, limit: int, tenants: Collection[str] | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """The CRM's refresh requests not yet done (of `tenants` only), oldest first."""
        where, params = "", sorted(tenants or ())
        if tenants is not None:
            where = f"AND tenant IN ({','.join('?' * len(params)) or 'NULL'}) "
        sql = f"SELECT seq, request FROM refreshes WHERE done = 0 {where}ORDER BY seq LIMIT ?"
        async with self._db.read() as db, db.execute(sql, (*params, limit)) as cur:
            return [(seq, orjson.loads(body)) for seq, body in await cur.fetchall()]

    async def invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """Return one invoice."""
        return (await self.load_invoices(tenant, [invoice_id])).get(invoice_id)

    # the QBO side: connections, OAuth states, books, links and deals, jobs, webhooks


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


async def _write_invoices(db: Sql, invoices: list[Invoice]) -> None:
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
    except CONFLICT as exc:
        raise StaleWriteError("an invoice read as new was stored meanwhile") from exc
    if known:
        updated = await many(
            db, rows.UPDATE_INVOICE, [rows.invoice_update(i) for i in known]
        )
        if updated != len(known):
            raise StaleWriteError("an invoice changed since it was read")


async def _unpark(db: Sql, decided: list[tuple[str, str]]) -> None:
    """Parked messages now decided: their rows go (StaleWriteError if one went already)."""
    gone = await many(
        db, "DELETE FROM parked WHERE tenant = ? AND message_id = ?", decided
    )
    if gone != len(decided):
        raise StaleWriteError("a parked message was decided elsewhere meanwhile")
    await many(
        db,
        "DELETE FROM messages WHERE tenant = ? AND message_id = ? AND outcome = 'parked'",
        decided,
    )
