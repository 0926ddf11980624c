"""`syncd store copy`: an existing SQLite store moved into a PostgreSQL database.

Table by table, in chunks in primary-key order; after each chunk the destination keeps
how far it got (`meta`: `copied:<table>`), in the chunk's own transaction, so a copy
stopped anywhere (a crash, Ctrl-C, a lost connection) goes on from there when run again
and never copies a row twice. Run it with syncd stopped: the file is opened read-only,
and a destination that syncd already writes to is refused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from syncd.exceptions import StoreError
from syncd.store.postgres import settings

CHUNK = 2000
# every table of the schema and its primary key (meta is each database's own)
TABLES: dict[str, tuple[str, ...]] = {
    "messages": ("tenant", "message_id"),
    "invoices": ("tenant", "invoice_id"),
    "history": ("seq",),
    "failures": ("seq",),
    "outbox": ("seq",),
    "connections": ("tenant",),
    "books": ("tenant",),
    "oauth_states": ("state",),
    "qbo_reads": ("realm_id", "month"),
    "jobs": ("id",),
    "links": ("tenant", "kind", "key"),
    "deals": ("tenant", "qbo_invoice_id"),
    "inbound": ("seq",),
    "inbound_events": ("realm_id", "key"),
    "refreshes": ("seq",),
    "payments": ("tenant", "kind", "payment_id", "invoice_id"),
    "credit_notes": ("tenant", "credit_note_id"),
    "drift": ("tenant",),
}
# identity columns: their sequences start after the copied rows
_IDENTITY = {"history": "seq", "failures": "seq", "outbox": "seq", "jobs": "id",
             "inbound": "seq", "refreshes": "seq"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of the copy: a table, rows copied of it so far, and its size."""

    table: str
    copied: int
    total: int


def copy_to_postgres(
    source: Path,
    url: str,
    password: str | None,
    say: Callable[[Progress], None] = lambda _: None,
) -> dict[str, int]:
    """Copy every table of the SQLite store at `source` into `url`; rows copied each.

    The destination's schema must exist (`syncd store copy` opens it as syncd would
    first); StoreError says what stands in the way.
    """
    if not source.exists():
        raise StoreError(f"no SQLite store at {source}")
    lite = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        with psycopg.connect(url, **settings(password, autocommit=False)) as pg:
            _check_destination(pg)
            counts = {table: _copy_table(lite, pg, table, say) for table in TABLES}
            # statistics and the visibility map now: otherwise autovacuum comes round
            # to a freshly copied store while syncd is serving (and the planner guesses)
            pg.commit()
            pg.autocommit = True
            pg.execute("VACUUM (ANALYZE)")
            return counts
    except (sqlite3.Error, psycopg.Error) as exc:
        raise StoreError(f"the copy stopped: {exc}") from exc
    finally:
        lite.close()


def _check_destination(pg: psycopg.Connection[Any]) -> None:
    """A database with syncd's schema, empty or part-copied by this command."""
    has_schema = pg.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not has_schema or not has_schema[0]:
        raise StoreError("the destination has no syncd schema")
    copying = pg.execute("SELECT count(*) FROM meta WHERE key LIKE 'copied:%'")
    started = (copying.fetchone() or (0,))[0]
    written = pg.execute("SELECT EXISTS (SELECT 1 FROM messages)").fetchone()
    if not started and written and written[0]:
        raise StoreError(
            "the destination already holds syncd's data (it was used): copy into a "
            "new database"
        )
    pg.commit()


def _copy_table(
    lite: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    table: str,
    say: Callable[[Progress], None],
) -> int:
    key = TABLES[table]
    columns = [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]
    total = int(lite.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    after = _checkpoint(pg, table)
    copied = 0 if after is None else _count_upto(lite, table, key, after)
    say(Progress(table, copied, total))
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    insert = f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    for chunk in _chunks(lite, table, columns, key, after):
        with pg.transaction():
            with pg.cursor() as cur:
                cur.executemany(insert, chunk)
            last = [chunk[-1][columns.index(k)] for k in key]
            pg.execute(
                "INSERT INTO meta VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"copied:{table}", json.dumps(last)),
            )
        copied += len(chunk)
        say(Progress(table, copied, total))
    if table in _IDENTITY:
        column = _IDENTITY[table]
        pg.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"GREATEST((SELECT max({column}) FROM {table}), 1))"
        )
    pg.commit()
    return copied


def _checkpoint(pg: psycopg.Connection[Any], table: str) -> list[Any] | None:
    row = pg.execute(
        "SELECT value FROM meta WHERE key = %s", (f"copied:{table}",)
    ).fetchone()
    pg.commit()
    return list(json.loads(row[0])) if row else None


def _after(key: tuple[str, ...]) -> str:
    """`(a, b) > (?, ?)`: the rows past a checkpoint, in key order (both databases)."""
    return f"({', '.join(key)}) > ({', '.join('?' * len(key))})"


def _count_upto(
    lite: sqlite3.Connection, table: str, key: tuple[str, ...], last: list[Any]
) -> int:
    sql = f"SELECT count(*) FROM {table} WHERE NOT {_after(key)}"
    return int(lite.execute(sql, last).fetchone()[0])


def _chunks(
    lite: sqlite3.Connection,
    table: str,
    columns: list[str],
    key: tuple[str, ...],
    after: list[Any] | None,
) -> Iterator[list[tuple[Any, ...]]]:
    order = ", ".join(key)
    while True:
        where = f"WHERE {_after(key)} " if after is not None else ""
        sql = (
            f"SELECT {', '.join(columns)} FROM {table} {where}ORDER BY {order} LIMIT ?"
        )
        rows = lite.execute(sql, [*(after or []), CHUNK]).fetchall()
        if not rows:
            return
        yield rows
        after = [rows[-1][columns.index(k)] for k in key]
