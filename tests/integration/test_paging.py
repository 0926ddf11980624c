"""Issue 14: the admin API answers a page of invoices at a time, with a cursor to the next.

The store is filled before syncd starts (2,500 invoices of one tenant, some of another),
then the API is walked page by page over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from syncd.models import ChangeSet, Invoice, SyncState
from syncd.store.sqlite import SqliteStore
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config

AUTH = {"Authorization": f"Bearer {ADMIN}"}
START = datetime(2026, 11, 1, tzinfo=UTC)
COUNT = 2500


def _invoice(tenant: str, n: int) -> Invoice:
    return Invoice(
        tenant=tenant,
        invoice_id=f"I-{n:05d}",
        status="open",
        version=1,
        data={"total": "10.00"},
        # every tenth shares its time with the one before: the cursor breaks the tie
        updated_at=START + timedelta(seconds=n - n % 10 % 2),
        sync_state=SyncState.FAILED if n % 7 == 0 else SyncState.SYNCED,
    )


async def _fill(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    invoices = [_invoice("acme", n) for n in range(COUNT)]
    invoices += [_invoice("beta", n) for n in range(50)]
    await store.commit(
        ChangeSet(invoices={(i.tenant, i.invoice_id): i for i in invoices})
    )
    await store.close()


@pytest.fixture
async def filled(tmp_path, broker) -> AsyncIterator[SyncdProcess]:
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(workdir, broker.port, {"acme": RULES, "beta": RULES})
    await _fill(workdir / "syncd.db")
    proc = SyncdProcess(config, env=QBO_ENV)
    proc.start()
    yield proc
    proc.stop()


async def _walk(http: aiohttp.ClientSession, url: str) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        async with http.get(next_url, headers=AUTH) as r:
            assert r.status == 200, await r.text()
            seen += [i["invoice_id"] for i in await r.json()]
            link = r.headers.get("Link")
        pages += 1
        next_url = link[1 : link.index(">")] if link else None
        if next_url and next_url.startswith("/"):
            next_url = url[: url.index("/api/")] + next_url
    return seen, pages


async def test_every_invoice_once_newest_first_a_page_at_a_time(filled, http):
    """Issue 14: 2,500 invoices in pages (a page ends inside a tie), each once, in order."""
    base = f"http://127.0.0.1:{filled.http_port}/api/tenants/acme/invoices"
    seen, pages = await _walk(http, base + "?limit=999")
    expected = sorted(
        (_invoice("acme", n) for n in range(COUNT)),
        key=lambda i: (i.updated_at, i.invoice_id),
        reverse=True,
    )
    assert seen == [i.invoice_id for i in expected]
    assert pages == 3
    failed, _ = await _walk(http, base + "?sync_state=failed&limit=100")
    assert failed == [i.invoice_id for i in expected if i.sync_state == "failed"]
    assert len(failed) == len(range(0, COUNT, 7))
    async with http.get(base, headers=AUTH) as r:  # no limit: the most, 1,000
        assert len(await r.json()) == 1000 and 'rel="next"' in r.headers["Link"]


async def test_a_limit_or_cursor_that_is_not_one_is_refused(filled, http):
    """Issue 14: a clear 400, not an empty page or an error page."""
    base = f"http://127.0.0.1:{filled.http_port}/api/tenants/acme/invoices"
    for query in ("limit=0", "limit=1001", "limit=ten", "after=%%%", "after=WzFd"):
        async with http.get(f"{base}?{query}", headers=AUTH) as r:
            assert r.status == 400, query
            assert (await r.json())["error"].split(":")[0] in ("limit", "after")
