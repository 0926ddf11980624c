"""One SQLite file: opened private and checked, migrated, one writer at a time.

`tx()` is one `BEGIN IMMEDIATE` transaction; `read()` a consistent read. A failure about
the file (read-only, corrupt, full) becomes StoreError and is kept in `problem` until a
write succeeds; a failure about one write's data is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import aiosqlite
import structlog

from syncd.exceptions import StoreError
from syncd.store.schema import MIGRATIONS
from syncd.store.sql import Sql

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
CHUNK = 500  # bound parameters per statement: far below SQLite's limit
# `check = "quick"`: a file this big is checked after start, in the background (its
# whole-file read takes ~1 s per 400 MB cached, several times that cold)
CHECK_AT_START_BELOW = 512 * 1024 * 1024


class Database:
    """The connection, its lock and its health."""

    shared = False  # one process: its own locks are the only ones needed

    def __init__(self, path: Path, check: str = "quick") -> None:
        self.path = path
        self._check = check  # quick, at-start, background or schema: checks_after_start
        self._db: aiosqlite.Connection | None = None
        self._background: BackgroundCheck | None = None
        self._damaged: str | None = None  # what the background check found
        self._lock = asyncio.Lock()  # one writer; reads never see a half-done batch
        self.problem: str | None = None  # why the last write failed, until one succeeds
        self._identity: tuple[int, int] | None = (
            None  # (device, inode) of the file open
        )

    @property
    def is_open(self) -> bool:
        """Tell whether the store can be used."""
        return self._db is not None

    async def open(self) -> None:
        """Open the file (made 0600 in a 0700 folder), check it can be used, migrate it.

        Raises StoreError naming the file and what is wrong: it cannot be opened or
        written, or fails SQLite's quick integrity check.
        """
        try:
            _private_file(self.path)
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"store {self.path}: cannot be opened: {_why(exc)}"
            ) from exc
        try:
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
                await db.execute(f"PRAGMA {pragma}")
            background = checks_after_start(self._check, self.path)
            await _check_integrity(db, "schema" if background else self._check)
            await _migrate(db)
            await _analyze(db)
            await db.execute(  # a real write: a read-only file or folder fails here
                "INSERT OR REPLACE INTO meta VALUES ('opened_at', datetime('now'))"
            )
            found = os.stat(self.path)
            self._identity = (found.st_dev, found.st_ino)
        except (sqlite3.Error, StoreError, OSError) as exc:
            await db.close()
            raise StoreError(f"store {self.path}: {_why(exc)}") from exc
        except BaseException:
            await db.close()
            raise
        self._db = db
        if background:
            self._background = BackgroundCheck(self.path, self._found_damage)

    def _found_damage(self, problems: str) -> None:
        """The background check failed: no write is taken from now on."""
        self._damaged = (
            f"the store cannot be used: fails its integrity check: {problems}"
        )
        self.problem = self._damaged

    async def close(self) -> None:
        """Close the connection (an unclosed aiosqlite thread hangs process exit)."""
        if self._background is not None:
            await self._background.stop()
            self._background = None
        if self._db is not None:
            db, self._db = self._db, None
            async with self._lock:
                await db.close()

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (`BEGIN IMMEDIATE` … `COMMIT`, rolled back on error)."""
        db = self._conn()
        async with self._lock:
            self._still_there()
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._raise_unusable(exc)
                raise
            self.problem = self._damaged  # None unless the check found damage meanwhile

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for reads that see no half-done batch."""
        async with self._lock:
            try:
                yield self._conn()
            except sqlite3.Error as exc:
                self._raise_unusable(exc)
                raise

    async def notify(self, db: Sql, what: str) -> None:
        """One process: its own workers are woken in process."""

    async def wake_ups(self) -> AsyncIterator[str]:
        """One process: no one else tells anything (waits until cancelled)."""
        await asyncio.Event().wait()
        yield ""  # pragma: no cover -- never reached

    async def optimize(self) -> None:
        """SQLite's own judgement of which statistics are stale (cheap when none)."""
        async with self.tx() as db:
            await db.execute("PRAGMA analysis_limit=400")
            await db.execute("PRAGMA optimize")

    def _still_there(self) -> None:
        """Refuse to write into a file deleted or replaced under syncd.

        SQLite would go on writing into the unlinked file, and all of it would be gone at
        the next start; intake pauses instead (the broker keeps the messages).
        """
        if self._damaged is not None:
            self.problem = self._damaged
            raise StoreError(self._damaged)
        if self._identity is None:
            return  # a connection handed in, not opened here: nothing to compare with
        try:
            found = os.stat(self.path)
        except OSError:
            found = None
        if found is None or (found.st_dev, found.st_ino) != self._identity:
            self.problem = (
                f"the store cannot be used: its file {self.path.name} was deleted or "
                "replaced while syncd ran (put it back, e.g. from `syncd backup`, then "
                "restart syncd)"
            )
            raise StoreError(self.problem)

    def _raise_unusable(self, exc: sqlite3.Error) -> None:
        """Raise StoreError when `exc` is about the file, not about the data written."""
        if not isinstance(exc, sqlite3.OperationalError) and (
            type(exc) is not sqlite3.DatabaseError
        ):
            return  # an IntegrityError, a bad parameter: about one write's data
        self.problem = f"the store cannot be used: {exc}"
        raise StoreError(self.problem) from exc

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db


def _private_file(path: Path) -> None:
    """Create the store 0600 in a 0700 folder (it holds customer data and webhooks)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        if name.exists() and name.stat().st_mode & 0o077:
            name.chmod(0o600)


def checks_after_start(check: str, path: Path) -> bool:
    """Whether `[store] check` reads this store's whole file after start, not before."""
    big = os.stat(path).st_size >= CHECK_AT_START_BELOW  # one stat: not worth a thread
    return check == "background" or (check == "quick" and big)


def _why(exc: BaseException) -> str:
    """The cause in a few words (an OSError's strerror, SQLite's message)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


async def _analyze(db: aiosqlite.Connection) -> None:
    """Give the query planner fresh statistics, sampled (milliseconds at any size).

    Without them SQLite picked a scan of the invoices table over the index on QBO ids
    (1.7 s per look-up at a million invoices).
    """
    await db.execute("PRAGMA analysis_limit=400")
    await db.execute("ANALYZE")


async def _check_integrity(db: aiosqlite.Connection, check: str) -> None:
    """`schema`: the schema only; otherwise SQLite's quick_check (reads the whole file)."""
    if check == "schema":
        await (await db.execute("SELECT count(*) FROM sqlite_master")).close()
        return
    async with db.execute("PRAGMA quick_check(3)") as cur:
        problems = _problems(await cur.fetchall())
    if problems:
        raise StoreError("fails its integrity check: " + problems)


def _problems(rows: Iterable[Any]) -> str:
    """quick_check's answer in one line; empty when the file is sound."""
    found = [" ".join(str(row[0]).split()) for row in rows]
    return "" if found == ["ok"] else "; ".join(found)


class BackgroundCheck:
    """SQLite's quick_check of a big store on its own read-only connection and thread.

    It reads a snapshot while syncd writes beside it (WAL), so start-up does not wait
    for a whole-file read. A damage found is handed to `damaged`; a file SQLite finds
    malformed while it is read counts as damaged too.
    """

    def __init__(self, path: Path, damaged: Callable[[str], None]) -> None:
        self._path, self._damaged = path, damaged
        self._conn: sqlite3.Connection | None = None
        self._stopping = False
        self.task = asyncio.create_task(self._run(), name="syncd.store.check")

    async def _run(self) -> None:
        began = time.monotonic()
        # a thread of its own, niced: the check yields the CPU to intake, and no
        # thread shared with other work is left niced
        pool = ThreadPoolExecutor(1, thread_name_prefix="syncd.store.check")
        try:
            problems = await asyncio.get_running_loop().run_in_executor(
                pool, self._check
            )
        except sqlite3.Error as exc:
            if self._stopping:
                return  # interrupted by the stop
            problems = str(exc)
        finally:
            pool.shutdown(wait=False)
        if problems:
            log.error("store_check_failed", path=str(self._path), problems=problems)
            self._damaged(problems)
        else:
            seconds = round(time.monotonic() - began, 2)
            log.info("store_checked", path=str(self._path), seconds=seconds)

    def _check(self) -> str:
        with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        uri = f"file:{quote(str(self._path))}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            if self._stopping:
                return ""
            return _problems(self._conn.execute("PRAGMA quick_check(3)").fetchall())
        finally:
            self._conn.close()

    async def stop(self) -> None:
        """Interrupt the read (SQLite's interrupt is safe from any thread); wait."""
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(sqlite3.ProgrammingError):  # already closed
                self._conn.interrupt()
        with contextlib.suppress(Exception):
            await self.task


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
    )
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > len(MIGRATIONS):
        raise StoreError(
            f"the database has schema {current}, newer than this syncd knows "
            f"({len(MIGRATIONS)}): run a newer syncd"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        await db.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[version - 1]}; "
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', "
            f"'{version}'); COMMIT;"
        )


async def many(db: Sql, sql: str, params: list[Any]) -> int:
    """`executemany`, skipped when there is nothing to write; the rows it changed.

    Each call is a hop to aiosqlite's thread: a batch that changes three tables should
    not pay for the other ten.
    """
    if not params:
        return 0
    cursor = await db.executemany(sql, params)
    return int(cursor.rowcount)


def copy_store(source: Path, destination: Path) -> dict[str, int]:
    """A consistent copy of a store in use (SQLite's online backup), checked; row counts.

    StoreError when SQLite cannot copy or the copy fails its check.

    The copy is made 0600 and passes SQLite's integrity check before it is kept. It is
    a new file: anything at `destination` (a dangling symlink included, whose target
    would be created) raises FileExistsError.
    """
    if not destination.parent.exists():
        destination.parent.mkdir(mode=0o700, parents=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    os.close(os.open(destination, flags, 0o600))
    try:
        return _copy(source, destination)
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc


def _copy(source: Path, destination: Path) -> dict[str, int]:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(destination)
    try:
        src.backup(dst)
        problems = [row[0] for row in dst.execute("PRAGMA integrity_check(3)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(
                "the copy fails its integrity check: " + "; ".join(problems)
            )
        return {
            table: int(dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("invoices", "history", "jobs", "failures", "outbox")
        }
    finally:
        dst.close()
        src.close()


async def rows_among(
    db: Sql, sql: str, first: list[Any], values: list[str]
) -> list[Any]:
    """The rows of `sql` for `values`, asked a chunk at a time.

    `sql` holds `{among}` where the placeholders of one chunk go (`x IN ({among})`);
    `first` are the parameters before them.
    """
    found: list[Any] = []
    for chunk in chunks(values):
        statement = sql.replace("{among}", ",".join("?" * len(chunk)))
        async with db.execute(statement, [*first, *chunk]) as cur:
            found += await cur.fetchall()
    return found


def chunks(values: list[_T], size: int = CHUNK) -> Iterable[list[_T]]:
    """`values` in slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class GroupCommit(Generic[_T]):
    """Concurrent writers of small rows share one transaction (one fsync), not one each.

    `add` returns once its row is committed, or raises the commit's error: a caller that
    returns has its row on disk, as with a transaction of its own. Rows that arrive while
    a transaction is under way go together in the next one.
    """

    def __init__(self, write: Callable[[list[_T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[_T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def add(self, item: _T) -> None:
        """Write `item` with whatever else is waiting; return when it is committed."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 -- each caller gets the commit's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
