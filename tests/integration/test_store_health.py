"""Issue 9 §7: a store that cannot be used is said so, at start and while running."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from syncd.exceptions import StoreError
from syncd.store import database
from syncd.store.database import Database
from syncd.store.sqlite import SqliteStore
from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.mosquitto import Broker
from tests.syncd_process import ADMIN, QBO_ENV, SyncdProcess, write_config
from tests.test_inbox import NOW, RULES, upsert

SIDE = ("-wal", "-shm")


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """Make files unwritable even for root (chattr +i), as a read-only mount would."""
    chattr = shutil.which("chattr") or "/usr/bin/chattr"  # Debian's e2fsprogs
    present = [str(p) for p in paths if p.exists()]
    subprocess.run([chattr, "+i", *present], check=True)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *present], check=True)


def _syncd(
    tmp_path: Path, broker_port: int, store_url: str | None = None
) -> SyncdProcess:
    workdir = tmp_path / "syncd"
    workdir.mkdir(exist_ok=True)
    config = write_config(workdir, broker_port)
    if store_url is not None:
        text = config.read_text()
        config.write_text(text.replace(f"sqlite:///{workdir}/syncd.db", store_url))
    return SyncdProcess(config)


def _start_fails(syncd: SyncdProcess) -> list[str]:
    """Start syncd, expect exit 1; return what it printed."""
    syncd.start(wait_ready=False)
    assert syncd.proc is not None
    assert syncd.proc.wait(timeout=20) == 1
    syncd.proc = None
    return syncd.log().splitlines()


async def _filled_store(path: Path, invoices: int) -> None:
    from syncd.bus.inbox import Inbox
    from syncd.engine.rulebook import RuleBook

    store = SqliteStore(path)
    await store.open()
    inbox = Inbox(
        store,
        RuleBook({"acme": RULES}),
        prefix="syncd",
        max_payload_bytes=256 * 1024,
        clock=lambda: NOW,
    )
    await inbox.handle(
        [upsert(f"I-{n}", 1, "draft", mid=f"m-{n}") for n in range(invoices)]
    )
    await store.close()


def test_a_store_folder_that_cannot_be_opened_is_one_line(tmp_path):
    """Issue 9 §7: was a 59-line traceback naming no path."""
    (tmp_path / "blocker").write_text("a file where a folder should be")
    target = tmp_path / "blocker" / "syncd.db"
    lines = _start_fails(_syncd(tmp_path, 1, f"sqlite:///{target}"))
    assert lines == [f"syncd: store {target}: cannot be opened: Not a directory"]


async def test_a_corrupt_store_is_one_line(tmp_path):
    """Issue 9 §7: a damaged file fails the quick check at start, naming the file."""
    path = tmp_path / "syncd" / "syncd.db"
    path.parent.mkdir()
    await _filled_store(path, 300)
    page = 4096
    with path.open("r+b") as f:
        f.seek(page * 3)
        f.write(b"\xa5" * page * 2)
    [line] = _start_fails(_syncd(tmp_path, 1))
    assert line.startswith(f"syncd: store {path}: ")
    assert "malformed" in line or "integrity check" in line


async def test_a_read_only_store_is_one_line(tmp_path):
    """Issue 9 §7: was reported ready, then looped on "readonly database"."""
    path = tmp_path / "syncd" / "syncd.db"
    path.parent.mkdir()
    await _filled_store(path, 1)
    with immutable(path):
        [line] = _start_fails(_syncd(tmp_path, 1))
    assert line == f"syncd: store {path}: cannot be opened: Operation not permitted"


async def test_a_store_in_a_read_only_folder_is_one_line(tmp_path):
    """Issue 9 §7: the file opens, but SQLite cannot write beside it: the probe says so."""
    path = tmp_path / "store" / "syncd.db"
    path.parent.mkdir()
    await _filled_store(path, 1)
    syncd = _syncd(tmp_path, 1, f"sqlite:///{path}")
    with immutable(path.parent):
        [line] = _start_fails(syncd)
    assert line.startswith(f"syncd: store {path}: ")
    assert "unable to open database file" in line or "readonly" in line


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    await eventually(predicate, timeout=seconds)


@asynccontextmanager
async def _store_fails(syncd: SyncdProcess, crm: Crm) -> AsyncIterator[dict[str, Any]]:
    """Run syncd, then make its store unwritable as a message comes; yield the message."""
    path = syncd.config.parent / "syncd.db"
    await crm.send("acme", "invoice.upserted", invoice("I-1", 1, "draft"))
    await crm.wait_for(lambda r: bool(crm.on("sync/invoice/I-1")))
    with immutable(path, path.with_name("syncd.db-wal")):
        sent = await crm.send("acme", "invoice.upserted", invoice("I-2", 1, "draft"))
        await _until(lambda: "intake_paused" in syncd.log())
        yield sent


async def test_a_failing_store_pauses_intake_and_loses_nothing(
    tmp_path, broker: Broker
):
    """Issue 9 §7: /readyz 503 with the reason; messages wait in the broker, then flow."""
    syncd = _syncd(tmp_path, broker.port)
    syncd.start()
    db = DbView(syncd.config.parent / "syncd.db")
    try:
        async with Crm(broker.port) as crm:
            async with _store_fails(syncd, crm) as sent:
                status, body = syncd.get("/readyz")
                assert status == 503
                ready = json.loads(body)
                assert ready["checks"]["store"] is False
                assert "the store cannot be used" in ready["reason"]
                assert db.outcomes("acme").get(sent["id"]) is None
            # writable again: the paused batch is stored and published, nothing lost
            await crm.wait_for(lambda r: bool(crm.on("sync/invoice/I-2")), timeout=40)
        assert db.outcomes("acme")[sent["id"]] == "applied"
        assert syncd.get("/readyz")[0] == 200
        assert syncd.log().count("intake_paused") < 20  # backoff, not a busy loop
    finally:
        syncd.stop()


async def test_the_store_is_private(tmp_path, broker: Broker):
    """Issue 9 §7: customer data and webhook bodies: file 0600 in a folder 0700."""
    target = tmp_path / "new" / "folder" / "syncd.db"
    syncd = _syncd(tmp_path, broker.port, f"sqlite:///{target}")
    syncd.start()
    try:
        assert target.stat().st_mode & 0o777 == 0o600
        assert target.parent.stat().st_mode & 0o777 == 0o700
        for suffix in ("-wal", "-shm"):
            side = target.with_name(target.name + suffix)
            assert side.stat().st_mode & 0o077 == 0, side
    finally:
        syncd.stop()


async def test_a_stop_while_the_store_fails_is_prompt_and_loses_nothing(
    tmp_path, broker: Broker
):
    """Issue 9 §4/§7: SIGTERM while intake is paused stops; the message waits in the broker."""
    syncd = _syncd(tmp_path, broker.port)
    syncd.start()
    try:
        async with Crm(broker.port) as crm:
            async with _store_fails(syncd, crm) as sent:
                assert syncd.stop(timeout=20) == 0
            assert '"event":"syncd_stopped"' in syncd.log()
            syncd.start()
            await crm.wait_for(lambda r: bool(crm.on("sync/invoice/I-2")))
        db = DbView(syncd.config.parent / "syncd.db")
        assert db.outcomes("acme")[sent["id"]] == "applied"
    finally:
        syncd.stop()


async def test_a_schema_check_still_refuses_what_is_no_database(tmp_path):
    """Issue 9 §7: `[store] check = "schema"` (fast start on big stores) still checks."""
    path = tmp_path / "syncd" / "syncd.db"
    path.parent.mkdir()
    path.write_bytes(b"not SQLite at all" * 300)
    syncd = _syncd(tmp_path, 1)
    text = syncd.config.read_text()
    syncd.config.write_text(
        text.replace('url = "sqlite:', 'check = "schema"\nurl = "sqlite:')
    )
    [line] = _start_fails(syncd)
    assert line == f"syncd: store {path}: file is not a database"


@contextmanager
def _small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (the store's own disk), unmounted after."""
    folder.mkdir()
    mount = shutil.which("mount") or "/bin/mount"
    options = ["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    subprocess.run([mount, *options], check=True)
    try:
        yield folder
    finally:
        umount = shutil.which("umount") or "/bin/umount"
        subprocess.run([umount, "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Take every free byte of the disk under `folder`; the filler file."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


async def test_a_full_disk_pauses_intake_and_resumes_by_itself(
    tmp_path, broker: Broker
):
    """Issue 13: disk full → not ready with the reason, nothing lost; space back → on."""
    with _small_disk(tmp_path / "disk") as disk:
        syncd = _syncd(tmp_path, broker.port, f"sqlite:///{disk}/syncd.db")
        syncd.start()
        db = DbView(disk / "syncd.db")
        try:
            async with Crm(broker.port) as crm:
                await crm.send("acme", "invoice.upserted", invoice("I-1", 1, "draft"))
                await crm.wait_for(lambda r: bool(crm.on("sync/invoice/I-1")))
                filler = _fill(disk)
                sent = []
                for n in range(2, 40):  # enough to need pages the disk no longer has
                    line = {
                        "description": "x" * 3000,
                        "item": "Consulting",
                        "quantity": "1",
                        "unit_price": "1.00",
                    }
                    big = invoice(f"I-{n}", 1, "draft", lines=[line])
                    sent.append(await crm.send("acme", "invoice.upserted", big))
                await _until(lambda: "intake_paused" in syncd.log(), 20)
                status, body = syncd.get("/readyz")
                assert status == 503
                assert "full" in json.loads(body)["reason"]
                filler.unlink()  # space again: syncd goes on by itself
                await crm.wait_for(
                    lambda r: bool(crm.on("sync/invoice/I-39")), timeout=60
                )
            outcomes = db.outcomes("acme")
            assert all(outcomes.get(m["id"]) == "applied" for m in sent)  # nothing lost
            assert syncd.get("/readyz")[0] == 200
        finally:
            syncd.stop()


async def _home_page(syncd: SyncdProcess) -> str:
    """The admin page's home, logged in as the admin."""
    origin = f"http://127.0.0.1:{syncd.http_port}"
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=origin)
    async with (
        aiohttp.ClientSession(base_url=origin, cookie_jar=jar) as browser,
        browser.post("/login", data={"token": ADMIN}) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.text()


async def test_a_store_file_deleted_under_syncd_pauses_intake_until_put_back(
    tmp_path, broker: Broker
):
    """Issue 13: a store file deleted under syncd: paused and said, not written into.

    SQLite would write on into the unlinked file and lose it all at the next start;
    syncd pauses intake and says why (/readyz, log, admin page) instead. Put back from
    `syncd backup` and restarted, it applies what waited in the broker.
    """
    syncd = _syncd(tmp_path, broker.port)
    syncd.env = QBO_ENV
    syncd.start()
    path = syncd.config.parent / "syncd.db"
    try:
        async with Crm(broker.port) as crm:
            await crm.send("acme", "invoice.upserted", invoice("I-1", 1, "draft"))
            await crm.wait_for(lambda r: bool(crm.on("sync/invoice/I-1")))
            copy = tmp_path / "copy.db"
            backup = [sys.executable, "-m", "syncd", "backup", "--config"]
            subprocess.run([*backup, str(syncd.config), str(copy)], check=True)
            for name in (path, *(path.with_name(path.name + s) for s in SIDE)):
                name.unlink(missing_ok=True)
            sent = await crm.send(
                "acme", "invoice.upserted", invoice("I-2", 1, "draft")
            )
            await _until(lambda: "intake_paused" in syncd.log())
            status, body = syncd.get("/readyz")
            assert status == 503
            assert "syncd.db was deleted or replaced" in json.loads(body)["reason"]
            assert "was deleted or replaced" in await _home_page(syncd)
            shutil.copy(copy, path)
            assert syncd.stop(timeout=20) == 0
            syncd.start()
            await crm.wait_for(lambda r: bool(crm.on("sync/invoice/I-2")))
        outcomes = DbView(path).outcomes("acme")
        assert outcomes[sent["id"]] == "applied"
        assert DbView(path).status("acme", "I-1") == ("draft", 1)
    finally:
        syncd.stop()


async def test_corrupt_pages_under_syncd_pause_intake_and_say_so(
    tmp_path, broker: Broker
):
    """Issue 13: pages overwritten under a running syncd: paused, said, restored.

    SQLite reports the image malformed (a disk fault); intake pauses with that reason,
    nothing is acked or lost, and a restore from `syncd backup` carries on with what
    waited in the broker.
    """
    syncd = _syncd(tmp_path, broker.port)
    syncd.start()
    path = syncd.config.parent / "syncd.db"
    db = DbView(path)
    try:
        async with Crm(broker.port) as crm:
            for n in range(2000):
                await crm.send(
                    "acme", "invoice.upserted", invoice(f"I-{n}", 1, "draft")
                )
            await _until(lambda: len(db.outcomes("acme")) == 2000, 60)
            copy = tmp_path / "copy.db"
            backup = [sys.executable, "-m", "syncd", "backup", "--config"]
            subprocess.run([*backup, str(syncd.config), str(copy)], check=True)
            checkpoint = sqlite3.connect(path)
            checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            checkpoint.close()
            with path.open("r+b") as f:  # every page but the first (the schema)
                size = f.seek(0, 2)
                f.seek(4096)
                f.write(b"\x5a" * (size - 4096))
            sent = [
                await crm.send("acme", "invoice.upserted", invoice(f"I-{n}", 2, "open"))
                for n in range(0, 2000, 50)
            ]
            await _until(lambda: "intake_paused" in syncd.log(), 20)
            status, body = syncd.get("/readyz")
            assert status == 503
            assert "malformed" in json.loads(body)["reason"]
            assert syncd.stop(timeout=20) == 0
            shutil.copy(copy, path)
            for side in SIDE:
                path.with_name(path.name + side).unlink(missing_ok=True)
            syncd.start()
            await _until(lambda: all(db.outcomes("acme").get(m["id"]) for m in sent))
        assert {db.outcomes("acme")[m["id"]] for m in sent} == {"applied"}
    finally:
        syncd.stop()


async def _damaged_in_the_middle(path: Path, invoices: int = 3000) -> Path:
    """A store whose damage only a whole-file check finds (opening it works).

    Returns a sound copy made before the damage.
    """
    await _filled_store(path, invoices)
    checkpoint = sqlite3.connect(path)
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    sound = path.with_name("sound-" + path.name)
    shutil.copy(path, sound)
    with path.open("r+b") as f:
        middle = f.seek(0, 2) // 4096 // 2
        f.seek(4096 * middle)
        f.write(b"\xa5" * 4096 * 2)
    return sound


async def test_a_big_store_is_checked_after_start_and_damage_stops_its_writes(
    tmp_path, monkeypatch
):
    """Issue 14: start-up never waits for a whole-file read; a damage found stops writes.

    With `check = "quick"` a store at least CHECK_AT_START_BELOW big opens after a schema
    check, and quick_check reads it on its own connection while syncd runs.
    """
    monkeypatch.setattr(database, "CHECK_AT_START_BELOW", 0)  # every store is "big"
    damaged = tmp_path / "damaged.db"
    sound = await _damaged_in_the_middle(damaged)
    db = Database(damaged, "quick")
    await db.open()  # the whole-file check would refuse it: see the end
    try:
        assert db._background is not None
        await db._background.task
        assert db.problem is not None
        assert "fails its integrity check" in db.problem
        with pytest.raises(StoreError, match="integrity check"):
            async with db.tx() as conn:
                await conn.execute("UPDATE meta SET value = 'x' WHERE key = 'none'")
    finally:
        await db.close()
    db = Database(sound, "quick")
    await db.open()
    try:
        assert db._background is not None
        await db._background.task
        assert db.problem is None
        async with db.tx() as conn:
            await conn.execute("UPDATE meta SET value = 'x' WHERE key = 'none'")
    finally:
        await db.close()
    db = Database(damaged, "at-start")
    with pytest.raises(StoreError, match=r"malformed|integrity check"):
        await db.open()


def _ready_status(syncd: SyncdProcess) -> int | None:
    """/readyz's status, or None while nothing listens yet."""
    try:
        return syncd.get("/readyz")[0]
    except OSError:
        return None


async def test_damage_found_after_start_pauses_intake_and_is_said(
    tmp_path, broker: Broker
):
    """Issue 14: `[store] check = "background"`: syncd serves, then the check stops it.

    The finding pauses intake (nothing acked), turns /readyz 503 and is logged; with
    the store restored the message waiting in the broker is applied.
    """
    workdir = tmp_path / "syncd"
    workdir.mkdir()
    path = workdir / "syncd.db"
    sound = await _damaged_in_the_middle(path)
    syncd = SyncdProcess(
        write_config(workdir, broker.port, store='check = "background"')
    )
    syncd.start(wait_ready=False)
    try:
        await _until(lambda: "store_check_failed" in syncd.log(), 30)
        # the check may finish before the HTTP server listens (a fresh-clone CI run)
        await _until(lambda: _ready_status(syncd) is not None, 20)
        status, body = syncd.get("/readyz")
        assert status == 503
        assert "integrity check" in json.loads(body)["reason"]
        async with Crm(broker.port) as crm:
            sent = await crm.send(
                "acme", "invoice.upserted", invoice("N-1", 1, "draft")
            )
            await _until(lambda: "intake_paused" in syncd.log(), 20)
            assert syncd.stop(timeout=20) == 0
            shutil.copy(sound, path)
            for side in SIDE:
                path.with_name(path.name + side).unlink(missing_ok=True)
            syncd.start()
            await crm.wait_for(lambda r: bool(crm.on("sync/invoice/N-1")))
        assert "store_checked" in syncd.log()
        assert DbView(path).outcomes("acme")[sent["id"]] == "applied"
    finally:
        syncd.stop()


async def test_damage_found_during_a_write_stays_said_after_it(tmp_path):
    """Issue 14: the background check may finish while a write is under way.

    That write commits, and must not clear what the check found (was: /readyz said
    ready again until the next write; found by the fresh-clone CI).
    """
    path = tmp_path / "s.db"
    await _filled_store(path, 1)
    db = Database(path, "schema")
    await db.open()
    try:
        async with db.tx() as conn:
            db._found_damage("page 7: btree broken")
            await conn.execute("UPDATE meta SET value = 'x' WHERE key = 'none'")
        assert db.problem is not None
        assert "page 7: btree broken" in db.problem
        with pytest.raises(StoreError, match="integrity check"):
            async with db.tx():
                pass
    finally:
        await db.close()
