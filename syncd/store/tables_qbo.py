"""What syncd knows of QBO's side on SQLite: stored webhooks, applied events, links, deals."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from syncd.exceptions import StaleWriteError
from syncd.models import (
    DealLink,
    Invoice,
    JobKind,
    Link,
    LinkKind,
    StoredWebhook,
    UnderWay,
    WebhookRetry,
)
from syncd.store import rows
from syncd.store.database import GroupCommit, many, rows_among
from syncd.store.rows import UNFINISHED
from syncd.store.sql import CONFLICT, Db, Sql


class QboTables:
    """A SqliteStore's webhook bodies and event keys, customer and item links, deals."""

    _db: Db
    _inbound: GroupCommit[
        tuple[bytes, str, str | None]
    ]  # webhook bodies share transactions

    async def store_inbound(
        self, body: bytes, now: datetime, realm_id: str | None = None
    ) -> None:
        """Keep a webhook body (of one company, if `realm_id`) before answering 200."""
        await self._inbound.add((body, now.isoformat(), realm_id))

    async def _insert_inbound(self, rows: list[tuple[bytes, str, str | None]]) -> None:
        async with self._db.tx() as db:
            await db.executemany(
                "INSERT INTO inbound (body, received_at, realm_id) VALUES (?, ?, ?)",
                rows,
            )
            await self._db.notify(db, "inbound")

    async def pending_inbound(
        self,
        limit: int,
        now: datetime | None = None,
        *,
        tenants: Collection[str] | None = None,
        strays: bool = True,
    ) -> list[StoredWebhook]:
        """Stored webhook bodies not processed yet (and due at `now`), oldest first.

        With `tenants`, only their companies' (a replica's realms), and, if `strays`,
        bodies no tenant's company claims (no realm, or a company not connected).
        """
        where, params = "", []
        if tenants is not None:
            among = ",".join("?" * len(tenants)) or "NULL"
            where = (
                "AND (realm_id IN (SELECT realm_id FROM connections WHERE tenant IN "
                f"({among}))"
                + (
                    " OR realm_id IS NULL OR realm_id NOT IN "
                    "(SELECT realm_id FROM connections)"
                    if strays
                    else ""
                )
                + ") "
            )
            params = sorted(tenants)
        sql = (
            "SELECT seq, body, received_at, attempts FROM inbound WHERE done = 0 "
            f"AND (next_at IS NULL OR next_at <= ?) {where}ORDER BY seq LIMIT ?"
        )
        due = (now or datetime.max.replace(tzinfo=UTC)).isoformat()
        async with self._db.read() as db, db.execute(sql, (due, *params, limit)) as cur:
            found = await cur.fetchall()
        return [
            StoredWebhook(
                seq=int(s),
                body=bytes(b),
                received_at=rows.when(at),
                attempts=int(n),
            )
            for s, b, at, n in found
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
        """The deletes, voids, CRM payments (made or removed) and credits under way."""
        sql = (
            "SELECT queue, kind, payload FROM jobs INDEXED BY jobs_invoice "
            f"WHERE tenant = ? AND kind IN ('{JobKind.INVOICE_DELETE}', "
            f"'{JobKind.INVOICE_VOID}', '{JobKind.PAYMENT_PUSH}', "
            f"'{JobKind.CREDIT_NOTE_PUSH}', '{JobKind.PAYMENT_REMOVE}') "
            f"AND status IN {UNFINISHED} AND queue IN ({{among}})"
        )
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], invoice_ids)
        removing: set[str] = set()
        paying: dict[str, Decimal] = {}
        unpaying: set[str] = set()
        for queue, kind, payload in found:
            if kind in (JobKind.INVOICE_DELETE, JobKind.INVOICE_VOID):
                removing.add(str(queue))
            elif kind == JobKind.PAYMENT_REMOVE:
                unpaying.add(str(queue))
            else:
                amount = Decimal(str(orjson.loads(payload).get("amount", "0")))
                paying[str(queue)] = paying.get(str(queue), Decimal(0)) + amount
        return UnderWay(removing=removing, paying=paying, unpaying=unpaying)

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


async def write_links(db: Sql, links: list[Link]) -> None:
    """Remember customer and item links."""
    await many(
        db,
        "INSERT INTO links VALUES (?, ?, ?, ?) ON CONFLICT (tenant, kind, key) "
        "DO UPDATE SET qbo_id = excluded.qbo_id",
        [(k.tenant, k.kind.value, k.key, k.qbo_id) for k in links],
    )


async def write_deals(db: Sql, deals: list[DealLink]) -> None:
    """Remember which CRM deal each QBO-made invoice belongs to (None: unlinked)."""
    await many(
        db,
        "INSERT INTO deals VALUES (?, ?, ?) ON CONFLICT (tenant, qbo_invoice_id) "
        "DO UPDATE SET deal_id = excluded.deal_id",
        [(d.tenant, d.qbo_invoice_id, d.deal_id) for d in deals],
    )


async def write_inbound(
    db: Sql,
    done: list[int],
    keys: list[tuple[str, str]],
    new: list[WebhookRetry],
    at: datetime | None,
) -> None:
    """Mark webhook bodies processed, remember the events they applied, queue retries."""
    await many(db, "UPDATE inbound SET done = 1 WHERE seq = ?", [(s,) for s in done])
    await many(
        db,
        "INSERT INTO inbound (body, received_at, attempts, next_at, realm_id) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (
                r.body,
                r.received_at.isoformat(),
                r.attempts,
                r.next_at.isoformat(),
                r.realm_id,
            )
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
    except CONFLICT as exc:
        # another writer applied one of these events since this batch was decided (the
        # reconciliation and the webhooks both saw it): decide again, or it is twice
        raise StaleWriteError("a QBO event was applied meanwhile") from exc
