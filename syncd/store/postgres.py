"""The Store on PostgreSQL: the shared tables on a psycopg 3 pool.

For several replicas on one database (`[store] url = "postgresql://USER@HOST:PORT/DB"`,
password from `SYNCD_STORE_PASSWORD`). The tables are written once in SQLite's dialect;
`PgConn` runs them here (`?` parameters become `%s`, SQLite's index hints go). Each
transaction is PostgreSQL's (READ COMMITTED); writes to one invoice serialise on its
revision, as on SQLite. A database that cannot be used (refused, read-only, full, shut
down) is StoreError, kept in `problem` until a transaction succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import structlog
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from syncd.exceptions import StoreError
from syncd.store.pg_schema import MIGRATIONS
from syncd.store.sql import Sql
from syncd.store.tables import SqlStore

log = structlog.get_logger(__name__)
_CHANNEL = "syncd"  # what one replica commits that another must act on
# one number for syncd's migrations across every process on the database
_MIGRATION_LOCK = 0x5_79_6E_63_64
_HINT = re.compile(r"\s+INDEXED BY \w+")
# what is about the database, never about one write's data
_UNUSABLE = (
    psycopg.OperationalError,
    errors.ReadOnlySqlTransaction,
    errors.DiskFull,
    errors.InsufficientResources,
    errors.AdminShutdown,
    errors.CannotConnectNow,
)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """The shared tables' SQL in PostgreSQL's: `?` → `%s`, no index hints."""
    return _HINT.sub("", sql).replace("%", "%%").replace("?", "%s")


class _Statement:
    """One statement: awaited, it runs; `async with`, it gives its cursor."""

    def __init__(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: Any
    ) -> None:
        self._conn, self._sql, self._params = conn, sql, params
        self._cursor: psycopg.AsyncCursor[Any] | None = None

    async def _run(self) -> psycopg.AsyncCursor[Any]:
        cursor = self._conn.cursor()
        await cursor.execute(translate(self._sql), self._params)
        return cursor

    def __await__(self) -> Any:
        return self._run().__await__()

    async def __aenter__(self) -> psycopg.AsyncCursor[Any]:
        self._cursor = await self._run()
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class PgConn:
    """A pooled connection speaking the shared tables' SQL (`store.sql.Sql`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Any:
        """Run one statement (`await` it, or `async with` it for its cursor)."""
        return _Statement(self._conn, sql, tuple(parameters or ()))

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Any:
        """Run one statement per row of parameters; the cursor, with the rows changed."""
        cursor = self._conn.cursor()
        await cursor.executemany(translate(sql), [tuple(p) for p in parameters])
        return cursor

    async def close(self) -> None:
        """Close the connection (one of its own, not a pooled one)."""
        await self._conn.close()


def settings(password: str | None, autocommit: bool = True) -> dict[str, Any]:
    """How syncd connects: times in UTC, the password from the environment if given."""
    found: dict[str, Any] = {"autocommit": autocommit, "options": "-c TimeZone=UTC"}
    if password is not None:
        found["password"] = password
    return found


async def connect(url: str, password: str | None) -> PgConn:
    """One connection of its own (a reader beside the daemon, e.g. `syncd backfill`)."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, connect_timeout=10, **settings(password)
        )
    except psycopg.Error as exc:
        raise StoreError(f"the store cannot be used: {_why(exc)}") from exc
    return PgConn(conn)


class PgDatabase:
    """A pool of connections, migrations under an advisory lock, and health."""

    shared = True  # replicas write it too: turns hold row locks

    def __init__(self, url: str, password: str | None = None, size: int = 8) -> None:
        self.url = url
        self._password = password
        self._size = size
        self._pool: AsyncConnectionPool[Any] | None = None
        self.problem: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether the pool is open."""
        return self._pool is not None

    async def open(self) -> None:
        """Open the pool and bring the schema up to date (StoreError says why not)."""
        kwargs = settings(self._password)
        try:
            # one connection first: its refusal names the reason, at once (a pool
            # retries in silence until its timeout)
            async with await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=10, **kwargs
            ) as conn:
                await _migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"the store cannot be used: {_why(exc)}") from exc
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.url, min_size=1, max_size=self._size, kwargs=kwargs, open=False
        )
        try:
            await pool.open(wait=True, timeout=10)
        except (psycopg.Error, TimeoutError) as exc:
            await pool.close()
            raise StoreError(f"the store cannot be used: {_why(exc)}") from exc
        self._pool = pool

    async def close(self) -> None:
        """Close the pool (waits for connections in use)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[PgConn]:
        """One transaction: committed at the end, rolled back on error."""
        async with self._connection() as conn, conn.transaction():
            yield PgConn(conn)
        self.problem = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[PgConn]:
        """A connection in autocommit: each read sees only committed transactions."""
        async with self._connection() as conn:
            yield PgConn(conn)

    async def optimize(self) -> None:
        """PostgreSQL's autovacuum keeps the statistics: nothing to do."""

    async def notify(self, db: Sql, what: str) -> None:
        """NOTIFY the replicas (delivered when the transaction commits, once per value)."""
        await db.execute("SELECT pg_notify(?, ?)", (_CHANNEL, what))

    async def wake_ups(self) -> AsyncIterator[str]:
        """What the replicas NOTIFY, on a connection of its own; reconnects when cut."""
        pause = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, connect_timeout=10, **settings(self._password)
                ) as conn:
                    await conn.execute(f"LISTEN {_CHANNEL}")
                    pause = 1.0
                    yield "all"  # what was told while not listening: look at everything
                    async for note in conn.notifies():
                        yield note.payload
            except psycopg.Error as exc:
                log.warning("store_listen_lost", reason=_why(exc), retry_in=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise StoreError("the store is closed")
        try:
            async with self._pool.connection(timeout=10) as conn:
                yield conn
        except _UNUSABLE as exc:
            self.problem = f"the store cannot be used: {_why(exc)}"
            raise StoreError(self.problem) from exc
        except TimeoutError as exc:  # no connection within 10 s: the pool is stuck
            self.problem = "the store cannot be used: no database connection in 10 s"
            raise StoreError(self.problem) from exc


class PostgresStore(SqlStore):
    """The store for several replicas: one PostgreSQL database."""

    def __init__(
        self, url: str, password: str | None = None, prefix: str = "syncd"
    ) -> None:
        self.database = PgDatabase(url, password)
        super().__init__(self.database, prefix)


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Apply what is missing of MIGRATIONS, once across every process starting now."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        cur = await conn.execute("SELECT to_regclass('meta') IS NOT NULL")
        row = await cur.fetchone()
        version = 0
        if row and row[0]:
            cur = await conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            )
            found = await cur.fetchone()
            version = int(found[0]) if found else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the store's schema is version {version}, newer than this syncd "
                f"knows ({len(MIGRATIONS)}): run the syncd that wrote it"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[number - 1])
            await conn.execute(
                "INSERT INTO meta VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )
            log.info("store_migrated", version=number, database="postgresql")


def _why(exc: BaseException) -> str:
    """The database's own words, without the password a URL may carry."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", text)
