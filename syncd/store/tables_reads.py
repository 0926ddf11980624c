"""What the admin side and the workers read on SQLite: counts, history, failures, pages."""

from __future__ import annotations

from datetime import date
from typing import Any

from syncd.models import (
    Failure,
    HistoryEntry,
    Invoice,
    JobStatus,
    LedgerEntry,
    Outcome,
    TenantCounts,
)
from syncd.store import rows
from syncd.store.database import rows_among
from syncd.store.sql import Db

_INVOICE_COLS = rows.INVOICE_COLS


class AdminReads:
    """A SqliteStore's reads for the admin API and page, retention and the overdue pass."""

    _db: Db

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
            lines = await rows_among(db, sql, [tenant], invoice_ids)
        found: dict[str, list[HistoryEntry]] = {}
        for invoice_id, f, t, c, e, a in lines:  # in order within each chunk
            found.setdefault(invoice_id, []).append(
                HistoryEntry(
                    tenant=tenant,
                    invoice_id=invoice_id,
                    from_status=f,
                    to_status=t,
                    cause=c,
                    event_id=e,
                    at=rows.when(a),
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
            found = await cur.fetchall()
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
                at=rows.when(a),
                resolved_at=rows.when(done) if done else None,
                job_id=job_id,
            )
            for seq, i, o, c, m, n, r, e, a, done, job_id in found
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
            received_at=rows.when(received_at),
            payload=payload,
        )
