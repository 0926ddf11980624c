"""Issue 14, reads budget: the admin API counts syncd's QBO reads as QBO received them.

Intuit meters reads per month (qbo.md §10). syncd's count for the company is compared with
the sandbox's own log of the reads it answered, then survives a restart.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tests.eventually import eventually
from tests.integration.test_outbound import Setup, _invoice
from tests.integration.test_outbound import setup as setup  # the fixture
from tests.syncd_process import ADMIN


async def _reads(setup: Setup) -> dict[str, Any]:
    url = f"http://127.0.0.1:{setup.syncd.http_port}/api/tenants/acme/reads"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with setup.qbo.session.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def _qbo_reads(setup: Setup) -> int:
    log = await setup.qbo.admin("GET", f"requests?realm={setup.realm}")
    return sum(1 for r in log if r["method"] == "GET")


async def test_the_reads_syncd_made_are_counted_per_month(setup: Setup):
    """Connect, push, refresh (reads): the API's count is QBO's; a restart keeps it."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    await setup.crm.send("acme", "command.refresh", {"invoice_id": "INV-1"})

    async def agreed() -> tuple[int, dict[str, Any]] | None:
        # until the refresh's read is in QBO's log, and counted
        made, counted = await _qbo_reads(setup), await _reads(setup)
        return (made, counted) if made and counted["reads"] == made else None

    made, counted = await eventually(agreed, timeout=10)
    month = datetime.now(UTC).strftime("%Y-%m")
    assert made >= 2  # the settings read at the connection, the refresh
    assert counted["realm_id"] == setup.realm and counted["month"] == month
    assert counted["reads"] == made
    assert counted["months"] == [{"month": month, "reads": made}]
    assert counted["app"]["reads"] == made and counted["app"]["budget"] == 500_000

    await asyncio.to_thread(setup.syncd.stop)  # a clean stop flushes the count
    await asyncio.to_thread(setup.syncd.start)  # and reconciles at once: a read more

    async def quiet() -> bool:  # until syncd is quiet: both counts read in one look
        in_qbo = await _qbo_reads(setup)
        return bool((await _reads(setup))["reads"] == in_qbo > made)

    await eventually(quiet, timeout=10)
