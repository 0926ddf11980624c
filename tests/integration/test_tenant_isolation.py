"""Issue 13 (security): two tenants, two QBO companies, and nothing crosses between them.

Both companies are fresh sandbox companies, so their QBO ids coincide (each one's first
invoice has the same Id): a webhook, a refresh or an admin call for one must never touch
the other's invoice of the same id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest

from tests.crm import Crm
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_outbound import _invoice
from tests.sandbox_process import VERIFIER, Connection, SandboxProcess
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Two:
    syncd: SyncdProcess
    crm: Crm
    db: DbView
    realms: dict[str, str]
    http: aiohttp.ClientSession
    base: str
    sandbox: str


async def _connect(two_http: aiohttp.ClientSession, base: str, tenant: str) -> str:
    """The browser's walk for one tenant; returns the callback URL it was sent to."""
    async with two_http.get(
        f"{base}/oauth/connect?tenant={tenant}", headers=AUTH, allow_redirects=False
    ) as r:
        consent = r.headers["Location"]
    async with two_http.get(consent, allow_redirects=False) as r:
        return str(r.headers["Location"])


@pytest.fixture
async def two(tmp_path, broker, sandbox: SandboxProcess, http) -> AsyncIterator[Two]:
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(
        workdir,
        broker.port,
        {"acme": RULES, "beta": RULES},
        qbo_base_url=sandbox.origin,
    )
    syncd = SyncdProcess(config, env=QBO_ENV)
    await asyncio.to_thread(syncd.start)
    base = f"http://127.0.0.1:{syncd.http_port}"
    realms = {}
    try:
        for tenant in ("acme", "beta"):
            async with http.get(await _connect(http, base, tenant)) as r:
                assert r.status == 200, await r.text()
                realms[tenant] = (await r.json())["realm_id"]
        async with Crm(broker.port) as crm:
            db = DbView(workdir / "syncd.db")
            yield Two(syncd, crm, db, realms, http, base, sandbox.origin)
    finally:
        syncd.stop()


async def _synced_both(two: Two) -> dict[str, str]:
    """INV-1 in each tenant, synced: the QBO ids, equal in both companies."""
    for tenant in ("acme", "beta"):
        await two.crm.send(tenant, "invoice.upserted", _invoice(1, "open"))

    def both() -> dict[str, str] | None:
        rows = two.db.query(
            "SELECT tenant, qbo_id FROM invoices WHERE sync_state = 'synced'"
        )
        ids = {str(t): str(q) for t, q in rows}
        return ids if len(ids) == 2 else None

    found: dict[str, str] = await eventually(both, timeout=20)
    return found


async def test_a_webhook_for_one_company_moves_only_its_tenant(two: Two):
    """Beta's invoice paid in beta's company; acme's invoice of the same QBO id stays."""
    ids = await _synced_both(two)
    assert ids["acme"] == ids["beta"]  # the trap: the same Id in both companies
    qbo = await Connection(two.http, two.sandbox).connect(realm=two.realms["beta"])
    [row] = (await qbo.call("GET", "query", params={"query": "select * from Invoice"}))[
        "QueryResponse"
    ]["Invoice"]
    await qbo.pay_by_hand(two.realms["beta"], row, row["TotalAmt"])
    note = {
        "eventNotifications": [
            {
                "realmId": two.realms["beta"],
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Invoice",
                            "id": row["Id"],
                            "operation": "Update",
                            "lastUpdated": datetime.now(UTC).isoformat(),
                        }
                    ]
                },
            }
        ]
    }
    raw = json.dumps(note).encode()
    signature = base64.b64encode(
        hmac.new(VERIFIER.encode(), raw, hashlib.sha256).digest()
    ).decode()
    async with two.http.post(
        f"{two.base}/webhooks/qbo", data=raw, headers={"intuit-signature": signature}
    ) as r:
        assert r.status == 200
    await two.crm.wait_for(lambda r: bool(two.crm.on("beta/out/invoice/set_status")))
    pending = "SELECT count(*) FROM inbound WHERE done = 0"
    await eventually(lambda: two.db.query(pending)[0][0] == 0 == two.db.outbox_size())
    await two.crm.barrier()
    assert two.db.status("beta", "INV-1") == ("paid", 1)
    assert two.db.status("acme", "INV-1") == ("open", 1)
    assert two.crm.on("acme/out/invoice/set_status") == []


async def test_the_admin_api_never_crosses_tenants(two: Two):
    """Acme's paths never show or act on beta's invoice, PDF or failure."""
    await two.crm.send("beta", "invoice.upserted", _invoice(1, "open"))
    # a euro invoice in a company without multicurrency: QBO refuses it, a failure
    euro = {**_invoice(1, "open"), "invoice_id": "ONLY-BETA", "currency": "EUR"}
    await two.crm.send("beta", "invoice.upserted", euro)
    await eventually(lambda: two.db.failures("beta"))  # a failure to aim at
    [(failure_id,)] = two.db.query("SELECT seq FROM failures WHERE tenant = 'beta'")
    checks: list[tuple[str, str, int]] = [
        ("GET", "/api/tenants/acme/invoices/ONLY-BETA", 404),
        ("GET", "/api/tenants/acme/invoices/ONLY-BETA/pdf", 404),
        ("GET", "/api/tenants/nobody/invoices", 404),
        ("POST", f"/api/tenants/acme/failures/{failure_id}/retry", 404),
        ("GET", "/api/tenants/beta/invoices/ONLY-BETA", 200),  # the controls
        ("GET", "/api/tenants/beta/failures", 200),
    ]
    for method, path, expected in checks:
        async with two.http.request(method, two.base + path, headers=AUTH) as r:
            assert r.status == expected, (path, r.status, await r.text())
    async with two.http.get(f"{two.base}/api/tenants/acme/invoices", headers=AUTH) as r:
        listed: Any = await r.json()
    assert "ONLY-BETA" not in json.dumps(listed)
    async with two.http.get(f"{two.base}/api/tenants/acme/failures", headers=AUTH) as r:
        assert await r.json() == []
    still_open = (
        "SELECT count(*) FROM failures WHERE tenant = 'beta' AND resolved_at IS NULL"
    )
    assert two.db.query(still_open) == [(1,)]  # acme's retry did not touch it


async def test_an_oauth_state_is_single_use_and_bound_to_its_tenant(two: Two):
    """A callback replayed is refused; a state made for acme cannot connect beta."""
    callback = await _connect(two.http, two.base, "acme")
    async with two.http.get(callback + "&tenant=beta") as r:
        assert r.status == 200
        assert (await r.json())["tenant"] == "acme"  # the state's tenant, not the URL's
    async with two.http.get(callback) as r:  # the same state again
        assert r.status == 400
        assert "state" in (await r.json())["error"]
    assert urlparse(callback).path == "/oauth/callback"
