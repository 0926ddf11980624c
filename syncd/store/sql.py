"""What the shared tables need of a database: a connection that runs SQL, and the pool.

The tables (`tables*.py`) are written once in SQLite's dialect (`?` parameters); SQLite
runs them as they are, PostgreSQL through `postgres.PgConn`, which translates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import psycopg

# a unique key or check broken by one write: about that write's data, never the database
CONFLICT: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
# anything either database raises
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


class Sql(Protocol):
    """One connection: statements, each awaitable or a context giving its cursor."""

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Any:
        """Run one statement (`await` it, or `async with` it for its cursor)."""

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Any:
        """Run one statement per row of parameters; the cursor (with `rowcount`)."""


class Db(Protocol):
    """A database: its transactions, its reads and its health."""

    problem: str | None
    # other processes may write it too (PostgreSQL): a turn must lock rows, not a task
    shared: bool

    @property
    def is_open(self) -> bool:
        """Whether it can be used."""

    async def open(self) -> None:
        """Connect, check and migrate."""

    async def close(self) -> None:
        """Finish and disconnect."""

    def tx(self) -> AbstractAsyncContextManager[Sql]:
        """One write transaction, committed at the end, rolled back on error."""

    def read(self) -> AbstractAsyncContextManager[Sql]:
        """A connection for reads that see no half-done transaction."""

    async def optimize(self) -> None:
        """Keep the planner's statistics fresh (cheap when nothing changed)."""

    async def notify(self, db: Sql, what: str) -> None:
        """Tell the other processes on the database, once `db`'s transaction commits."""

    def wake_ups(self) -> AsyncIterator[str]:
        """What the other processes tell (nothing, for a database of one process)."""
