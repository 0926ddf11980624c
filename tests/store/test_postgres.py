"""The store contract on PostgreSQL: a database of each test's own (issue 24)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from syncd.exceptions import StoreError
from syncd.store import Store, sqlite_store
from syncd.store.pg_schema import MIGRATIONS
from syncd.store.postgres import PostgresStore, translate
from tests.postgres import database
from tests.store.contract import StoreContract


class TestPostgres(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with database() as url:
            s = PostgresStore(url)
            await s.open()
            try:
                yield s
            finally:
                await s.close()


def test_the_shared_sql_reads_as_postgresqls():
    """`?` parameters become `%s`, a literal `%` is kept, SQLite's index hints go."""
    sql = "SELECT a FROM t INDEXED BY t_a WHERE b = ? AND c LIKE 'x:%' LIMIT ?"
    assert translate(sql) == "SELECT a FROM t WHERE b = %s AND c LIKE 'x:%%' LIMIT %s"


async def test_both_schemas_hold_the_same_columns(tmp_path: Path):
    """A table or column added to one database's migrations and not the other's fails."""
    lite = sqlite_store(tmp_path / "syncd.db")
    await lite.open()
    await lite.close()
    with sqlite3.connect(tmp_path / "syncd.db") as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        ]
        on_sqlite = {
            (table, column[1])
            for table in tables
            for column in db.execute(f"PRAGMA table_info({table})")
        }
    async with database() as url:
        store = PostgresStore(url)
        await store.open()
        await store.close()
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            )
            on_postgres = {(str(t), str(c)) for t, c in await cur.fetchall()}
    assert on_sqlite == on_postgres


async def test_replicas_starting_together_migrate_once():
    """Four stores open one new database at once: one applies the schema, none fails."""
    async with database() as url:
        stores = [PostgresStore(url) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            )
            assert await cur.fetchone() == (str(len(MIGRATIONS)),)
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_database_that_cannot_be_reached_is_a_store_error():
    """Nothing listens there: StoreError with the reason, no password in it."""
    store = PostgresStore("postgresql://syncd:secret@127.0.0.1:1/none")
    with pytest.raises(StoreError) as refused:
        await store.open()
    assert "secret" not in str(refused.value)
    assert not store.is_open
