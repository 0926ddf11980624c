"""Read syncd's store from a test, as an operator would.

Its SQLite file (read-only, beside WAL), or the PostgreSQL database named in `store.url`
beside where the file would be (a run with `SYNCD_TEST_STORE=postgresql`). The SQL is
SQLite's, translated.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from syncd.store import Store
from syncd.store.postgres import PostgresStore, translate
from syncd.store.sqlite import SqliteStore


class DbView:
    def __init__(self, path: Path) -> None:
        self.path = path
        marker = path.parent / "store.url"
        self.url = marker.read_text() if marker.exists() else ""

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as pg:
                return pg.execute(translate(sql), params).fetchall()
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def create_empty(self) -> None:
        """A store file with syncd's schema and nothing in it (as a first start leaves it)."""

        async def opened() -> None:
            store: Store = (
                PostgresStore(self.url) if self.url else SqliteStore(self.path)
            )
            await store.open()
            await store.close()

        asyncio.run(opened())

    def execute(self, sql: str, *params: Any) -> None:
        """Change the store while syncd is stopped (what time or an operator would do)."""
        if self.url:
            with psycopg.connect(self.url, autocommit=True) as pg:
                pg.execute(translate(sql), params)
            return
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                db.execute(sql, params)
        finally:
            db.close()

    def status(self, tenant: str, invoice_id: str) -> tuple[str, int] | None:
        rows = self.query(
            "SELECT status, version FROM invoices WHERE tenant = ? AND invoice_id = ?",
            tenant,
            invoice_id,
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def history(self, tenant: str, invoice_id: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT from_status, to_status, event_id FROM history "
            "WHERE tenant = ? AND invoice_id = ? ORDER BY seq",
            tenant,
            invoice_id,
        )

    def outcomes(self, tenant: str) -> dict[str, str]:
        rows = self.query(
            "SELECT message_id, outcome FROM messages WHERE tenant = ?", tenant
        )
        return dict(rows)

    def failures(self, tenant: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT invoice_id, operation, code, message, event_id FROM failures "
            "WHERE tenant = ? ORDER BY seq",
            tenant,
        )

    def outbox_size(self) -> int:
        return int(self.query("SELECT count(*) FROM outbox")[0][0])
