"""The admin page's sessions, in the store: a restart or another replica keeps them."""

from __future__ import annotations

from datetime import datetime

from syncd.store import rows
from syncd.store.sql import Db


class SessionTables:
    """A store's admin sessions (the cookie's id only as its SHA-256)."""

    _db: Db

    async def start_session(
        self, sid_hash: str, csrf: str, expires: datetime, now: datetime
    ) -> None:
        """Keep a new session (and forget those expired by `now`)."""
        async with self._db.tx() as db:
            await db.execute(
                "DELETE FROM admin_sessions WHERE expires_at <= ?", (now.isoformat(),)
            )
            await db.execute(
                "INSERT INTO admin_sessions VALUES (?, ?, ?)",
                (sid_hash, csrf, expires.isoformat()),
            )

    async def session(
        self, sid_hash: str, now: datetime
    ) -> tuple[str, datetime] | None:
        """A live session's CSRF token and end, or None."""
        sql = (
            "SELECT csrf, expires_at FROM admin_sessions "
            "WHERE sid_hash = ? AND expires_at > ?"
        )
        async with (
            self._db.read() as db,
            db.execute(sql, (sid_hash, now.isoformat())) as cur,
        ):
            row = await cur.fetchone()
        return (str(row[0]), rows.when(row[1])) if row else None

    async def end_session(self, sid_hash: str) -> None:
        """Forget a session (logged out)."""
        async with self._db.tx() as db:
            await db.execute(
                "DELETE FROM admin_sessions WHERE sid_hash = ?", (sid_hash,)
            )
