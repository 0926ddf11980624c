"""The store contract on PostgreSQL: a database of each test's own (issue 24)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from syncd.exceptions import StoreError
from syncd.models import ChangeSet
from syncd.store import Store, sqlite_store
from syncd.store.pg_schema import MIGRATIONS
from syncd.store.postgres import PostgresStore, translate
from tests.eventually import eventually
from tests.postgres import SERVER, database
from tests.store.contract import StoreContract, connection, ledger


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


async def test_a_token_turn_holds_the_row_against_another_replica():
    """Issue 25: replica B's turn waits for A's to end, then reads the token A kept.

    Without the row lock B read the token A was replacing and presented it to Intuit
    once A's answer had made it spent: invalid_grant, and the tenant lost.
    """
    async with database() as url:
        a, b = PostgresStore(url), PostgresStore(url)
        await asyncio.gather(a.open(), b.open())
        await a.save_connection(connection("acme", "9130"))
        inside, release = asyncio.Event(), asyncio.Event()

        async def a_refreshes() -> None:
            async with a.token_turn("acme", "9130") as turn:
                inside.set()
                await release.wait()  # Intuit is answering A
                await turn.keep(b"rt-2")

        task = asyncio.create_task(a_refreshes())
        await inside.wait()
        b_turn = asyncio.create_task(_sealed_in_turn(b))
        await asyncio.sleep(0.2)
        assert not b_turn.done()  # B waits on the row
        release.set()
        await task
        assert await b_turn == b"rt-2"
        await asyncio.gather(a.close(), b.close())


async def _sealed_in_turn(store: Store) -> bytes | None:
    async with store.token_turn("acme", "9130") as turn:
        return turn.sealed


async def test_a_database_that_cannot_be_reached_is_a_store_error():
    """Nothing listens there: StoreError with the reason, no password in it."""
    store = PostgresStore("postgresql://syncd:secret@127.0.0.1:1/none")
    with pytest.raises(StoreError) as refused:
        await store.open()
    assert "secret" not in str(refused.value)
    assert not store.is_open


async def test_a_database_that_refuses_writes_pauses_then_recovers():
    """A read-only database is StoreError with the reason (/readyz 503), until it heals.

    The pool's connections are cut, as a failover does; the next ones find the database
    read-only; once it takes writes again the first commit clears the problem.
    """
    async with database() as url:
        store = PostgresStore(url)
        await store.open()
        name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        try:
            await _set_read_only(name, True)
            # a cut connection first (the pool's), then the read-only database
            refusals = [await _refusal(store, f"m-{n}") for n in range(3)]
            assert any("read-only" in r for r in refusals), refusals
            problems = [store.problem]
            await _set_read_only(name, False)
            await eventually(lambda: _commits(store, "m-ok"))
            problems.append(store.problem)
            assert "read-only" in str(problems[0]) and problems[1] is None
            assert await store.known_messages([("acme", "m-ok")]) == {("acme", "m-ok")}
        finally:
            await store.close()


async def _set_read_only(name: str, on: bool) -> None:
    value = "on" if on else "off"
    async with await psycopg.AsyncConnection.connect(SERVER, autocommit=True) as admin:
        await admin.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'
        )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


async def _refusal(store: Store, message_id: str) -> str:
    """Why a commit was refused ("" when it went through)."""
    try:
        await store.commit(ChangeSet(ledger=[ledger(message_id)]))
    except StoreError as exc:
        return str(exc)
    return ""


async def _commits(store: Store, message_id: str) -> bool:
    try:
        await store.commit(ChangeSet(ledger=[ledger(message_id)]))
    except StoreError:
        return False
    return True
