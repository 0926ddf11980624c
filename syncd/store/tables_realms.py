"""Each tenant's QBO company on SQLite: connections (tokens sealed), books, reads, OAuth states.

Tokens arrive sealed (`realms.Connections` seals them): the store never sees them in clear.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson

from syncd.exceptions import RealmTakenError
from syncd.models import (
    Connection,
    Invoice,
)
from syncd.store import rows
from syncd.store.roles import TokenTurn
from syncd.store.sql import CONFLICT, Db, Sql

_READ_SEALED = "SELECT token FROM connections WHERE tenant = ? AND realm_id = ?"
_WRITE_SEALED = (
    "UPDATE connections SET token = ?, status = 'connected', error = NULL "
    "WHERE tenant = ? AND realm_id = ?"
)


class RealmTables:
    """A SqliteStore's connections, books, metered reads and one-time OAuth states."""

    _db: Db
    _turns: dict[str, asyncio.Lock]

    async def connection(self, tenant: str) -> Connection | None:
        """Return the tenant's QBO connection."""
        sql = (
            "SELECT c.realm_id, status, token, preferences, connected_at, error, b.since, "
            "c.warned, c.last_webhook_at "
            "FROM connections c LEFT JOIN books b "
            "ON b.tenant = c.tenant AND b.realm_id = c.realm_id WHERE c.tenant = ?"
        )
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        realm_id, status, token, prefs, connected_at, error, since, warned, hook = row
        return Connection(
            tenant=tenant,
            realm_id=realm_id,
            status=status,
            sealed_token=bytes(token),
            preferences=orjson.loads(prefs),
            connected_at=rows.when(connected_at),
            error=error,
            since=rows.when(since) if since else None,
            warned=warned,
            last_webhook_at=rows.when(hook) if hook else None,
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
                    "INSERT INTO connections (tenant, realm_id, status, token, "
                    "preferences, connected_at, error, warned) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tenant) DO UPDATE SET realm_id = excluded.realm_id, "
                    "status = excluded.status, token = excluded.token, "
                    "preferences = excluded.preferences, "
                    "connected_at = excluded.connected_at, error = excluded.error, "
                    "warned = excluded.warned",
                    row,
                )
        except CONFLICT as exc:
            raise RealmTakenError(conn.realm_id) from exc

    async def save_token(self, tenant: str, realm_id: str, sealed: bytes) -> None:
        """Persist a rotated token set (sealed) before it is used."""
        async with self._db.tx() as db:
            await db.execute(_WRITE_SEALED, (sealed, tenant, realm_id))

    @asynccontextmanager
    async def token_turn(self, tenant: str, realm_id: str) -> AsyncIterator[TokenTurn]:
        """The realm's sealed token, while no one else may refresh it.

        One task of this process at a time; on a shared database (PostgreSQL) the
        connection's row stays locked too, so another replica's turn waits, then reads
        the token this one kept.
        """
        async with self._turns.setdefault(tenant, asyncio.Lock()):
            if not self._db.shared:
                async with self._db.read() as db:
                    sealed = await _token(db, tenant, realm_id, lock=False)
                keep = functools.partial(self.save_token, tenant, realm_id)
                yield TokenTurn(sealed, keep)
                return
            async with self._db.tx() as db:
                sealed = await _token(db, tenant, realm_id, lock=True)

                async def keep_here(fresh: bytes) -> None:
                    await db.execute(_WRITE_SEALED, (fresh, tenant, realm_id))

                yield TokenTurn(sealed, keep_here)

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
        return (str(row[0]), rows.when(row[1])) if row else None

    async def add_reads(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add QBO reads counted since the last call, by (realm, month "YYYY-MM")."""
        rows = [(realm, month, n) for (realm, month), n in counts.items() if n]
        async with self._db.tx() as db:
            await db.executemany(
                "INSERT INTO qbo_reads VALUES (?, ?, ?) ON CONFLICT (realm_id, month) "
                "DO UPDATE SET reads = qbo_reads.reads + excluded.reads",
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
        sql = "DELETE FROM oauth_states WHERE state = ? RETURNING tenant, force, created_at"
        async with self._db.tx() as db, db.execute(sql, (state,)) as cur:
            row = await cur.fetchone()
        return (row[0], bool(row[1]), rows.when(row[2])) if row else None

    async def tenant_of_realm(self, realm_id: str) -> str | None:
        """The tenant connected to a QBO company."""
        sql = "SELECT tenant FROM connections WHERE realm_id = ?"
        async with self._db.read() as db, db.execute(sql, (realm_id,)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None


async def _token(db: Sql, tenant: str, realm_id: str, *, lock: bool) -> bytes | None:
    """The stored sealed token (its row locked until the transaction ends, if `lock`)."""
    async with db.execute(
        _READ_SEALED + (" FOR UPDATE" if lock else ""), (tenant, realm_id)
    ) as cur:
        row = await cur.fetchone()
    return bytes(row[0]) if row else None
