"""`syncd store copy` (issue 24): a SQLite store moved into PostgreSQL, resumably."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.exceptions import StoreError
from syncd.messages import SyncFailed
from syncd.models import ChangeSet, HistoryEntry, Job, JobKind, Link, LinkKind
from syncd.store import copy as copying
from syncd.store.copy import Progress, copy_to_postgres
from syncd.store.postgres import PostgresStore
from syncd.store.sqlite import SqliteStore
from tests.postgres import database
from tests.store.contract import NOW, connection, failure, invoice, ledger

INVOICES = 7


def _history(n: int) -> HistoryEntry:
    return HistoryEntry(
        tenant="acme",
        invoice_id=f"I-{n}",
        from_status=None,
        to_status="open",
        cause="crm",
        event_id=f"m-{n}",
        at=NOW,
    )


async def _filled(path: Path) -> None:
    """A SQLite store with rows in most tables."""
    store = SqliteStore(path)
    await store.open()
    await store.commit(
        ChangeSet(
            ledger=[ledger(f"m-{n}") for n in range(INVOICES)],
            invoices={("acme", f"I-{n}"): invoice(f"I-{n}") for n in range(INVOICES)},
            history=[_history(n) for n in range(INVOICES)],
            jobs=[
                Job.for_invoice("acme", JobKind.INVOICE_PUSH, f"I-{n}", NOW)
                for n in range(INVOICES)
            ],
            failures=[failure()],
            outbox=[SyncFailed(tenant="acme", at=NOW, data={"n": 1})],
            links=[Link(tenant="acme", kind=LinkKind.CUSTOMER, key="C-1", qbo_id="58")],
        )
    )
    await store.save_connection(connection("acme", "9130"))
    await store.store_inbound(b'{"a": 1}', NOW)
    await store.close()


async def _same(path: Path, url: str) -> None:
    """What PostgreSQL now answers is what SQLite did."""
    lite, pg = SqliteStore(path), PostgresStore(url)
    await lite.open()
    await pg.open()
    try:
        ids = [f"I-{n}" for n in range(INVOICES)]
        assert await pg.load_invoices("acme", ids) == await lite.load_invoices(
            "acme", ids
        )
        assert await pg.histories("acme", ids) == await lite.histories("acme", ids)
        assert await pg.jobs("acme") == await lite.jobs("acme")
        assert await pg.failures("acme") == await lite.failures("acme")
        assert await pg.pending_outbox(10) == await lite.pending_outbox(10)
        assert await pg.connection("acme") == await lite.connection("acme")
        assert await pg.link("acme", LinkKind.CUSTOMER, "C-1") == "58"
        assert [w.body for w in await pg.pending_inbound(10)] == [b'{"a": 1}']
        # the identity sequences go on after the copied rows
        await pg.commit(ChangeSet(history=[_history(99)], failures=[failure()]))
        assert len(await pg.failures("acme")) == 2
    finally:
        await lite.close()
        await pg.close()


async def _schema(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()


async def test_a_copy_holds_what_the_file_held(tmp_path: Path):
    await _filled(tmp_path / "syncd.db")
    async with database() as url:
        await _schema(url)
        seen: list[Progress] = []
        counts = await asyncio.to_thread(
            copy_to_postgres, tmp_path / "syncd.db", url, None, seen.append
        )
        assert counts["invoices"] == INVOICES and counts["jobs"] == INVOICES
        assert Progress("invoices", INVOICES, INVOICES) in seen
        await _same(tmp_path / "syncd.db", url)


async def test_a_copy_stopped_anywhere_goes_on_and_copies_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(copying, "CHUNK", 2)
    await _filled(tmp_path / "syncd.db")
    steps = {"left": 9}

    def interrupted(step: Progress) -> None:
        steps["left"] -= 1
        if steps["left"] == 0:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a table

    async with database() as url:
        await _schema(url)
        with pytest.raises(KeyboardInterrupt):
            await asyncio.to_thread(
                copy_to_postgres, tmp_path / "syncd.db", url, None, interrupted
            )
        resumed: list[Progress] = []
        await asyncio.to_thread(
            copy_to_postgres, tmp_path / "syncd.db", url, None, resumed.append
        )
        # it began past what was done: the first table's first report is not 0
        assert resumed[0].copied > 0
        await _same(tmp_path / "syncd.db", url)


async def test_a_database_in_use_is_refused(tmp_path: Path):
    await _filled(tmp_path / "syncd.db")
    async with database() as url:
        store = PostgresStore(url)
        await store.open()
        await store.commit(ChangeSet(ledger=[ledger("live")]))
        await store.close()
        with pytest.raises(StoreError, match="already holds syncd's data"):
            await asyncio.to_thread(copy_to_postgres, tmp_path / "syncd.db", url, None)


async def test_the_command_copies_and_says_how_far(tmp_path: Path):
    await _filled(tmp_path / "syncd.db")
    async with database() as url:
        source = f"sqlite:///{tmp_path / 'syncd.db'}"
        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["store", "copy", "--from", source, "--to", url]
        )
        assert result.exit_code == 0, result.output
        assert "invoices: 7/7 (100 %)" in result.output
        assert "ok: " in result.output
        await _same(tmp_path / "syncd.db", url)
