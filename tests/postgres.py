"""A PostgreSQL database of the test's own: created on the server CI runs, then dropped.

`SYNCD_TEST_POSTGRES` names the server (default: this machine's, 127.0.0.1:5432, as the
user `postgres`). `.ci/run` starts PostgreSQL where it is not running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.conninfo import make_conninfo

SERVER = os.environ.get(
    "SYNCD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A new, empty database; its URL."""
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(SERVER, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(SERVER, dbname=name)
    finally:
        async with await psycopg.AsyncConnection.connect(
            SERVER, autocommit=True
        ) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
