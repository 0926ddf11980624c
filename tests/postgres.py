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
import psycopg.conninfo

SERVER = os.environ.get(
    "SYNCD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A new, empty database for one test; its URL. Dropped after it."""
    name = _create()
    try:
        yield url_of(name)
    finally:
        _drop(name)


def _create() -> str:
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop(name: str) -> None:
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# every database the tests' syncd processes were given, dropped when the session ends
MADE: list[str] = []


def url_of(name: str) -> str:
    """The URL of database `name` on the test server, as `[store] url` takes it."""
    where = psycopg.conninfo.conninfo_to_dict(SERVER)
    user = where.get("user", "postgres")
    host = where.get("host", "127.0.0.1")
    port = where.get("port", "5432")
    if str(host).startswith("/"):
        return f"postgresql://{user}@/{name}?host={host}&port={port}"
    return f"postgresql://{user}@{host}:{port}/{name}"


def new_database() -> str:
    """A new, empty database for one syncd process, dropped when the session ends."""
    name = _create()
    MADE.append(name)
    return url_of(name)


def drop_made() -> None:
    """Drop every database `new_database` made."""
    while MADE:
        _drop(MADE.pop())


def on_postgres() -> bool:
    """Whether this run puts syncd's store on PostgreSQL (`SYNCD_TEST_STORE`)."""
    return os.environ.get("SYNCD_TEST_STORE", "sqlite") == "postgresql"
