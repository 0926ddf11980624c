"""Connecting a tenant to QBO (OD1, RO1, HL9, PD1) through syncd's HTTP, into the sandbox."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from syncd.exceptions import RealmTakenError
from syncd.models import Connection as StoredConnection
from syncd.realms.secrets import Cipher
from syncd.store.sqlite import SqliteStore
from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config


@pytest.fixture
def connected_syncd(tmp_path, broker, sandbox: SandboxProcess):
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(
        write_config(workdir, broker.port, qbo_base_url=sandbox.origin), env=QBO_ENV
    )
    proc.start()
    yield proc
    proc.stop()


async def connect(
    http: aiohttp.ClientSession,
    syncd: SyncdProcess,
    query: str = "",
    tenant: str = "acme",
) -> tuple[int, Any]:
    """Walk the browser's path: syncd → Intuit (the sandbox) → syncd's callback."""
    base = f"http://127.0.0.1:{syncd.http_port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(
        f"{base}/oauth/connect?tenant={tenant}{query}",
        headers=headers,
        allow_redirects=False,
    ) as r:
        assert r.status == 302, await r.text()
        consent = r.headers["Location"]
    realm = parse_qs(query.lstrip("&")).get("realm", [None])[0]
    if realm:
        consent += f"&realmId={realm}"
    async with http.get(consent, allow_redirects=False) as r:
        callback = r.headers["Location"]
    assert urlparse(callback).path == "/oauth/callback"
    async with http.get(callback) as r:
        return r.status, await r.json()


async def test_connect_stores_tokens_sealed_and_reads_preferences(
    http, connected_syncd
):
    """OD1: connect through /oauth/connect → consent → /oauth/callback; tokens encrypted."""
    status, body = await connect(http, connected_syncd)
    assert status == 200, body
    assert body["tenant"] == "acme"
    prefs = body["preferences"]
    assert (prefs["home_currency"], prefs["multicurrency"]) == ("USD", False)
    assert prefs["custom_fields"]["PO Number"] == "1"  # OD2: read once at connection
    assert prefs["tax_codes"]["TAX"] == "TAX"
    assert prefs["accounts"]["Undeposited Funds"]
    db = DbView(connected_syncd.config.parent / "syncd.db")
    [(realm, token)] = db.query("SELECT realm_id, token FROM connections")
    assert realm == body["realm_id"]
    assert b"access_token" not in token and b"RT1-" not in token


async def test_connect_needs_the_admin_token_and_a_fresh_state(http, connected_syncd):
    """/oauth/connect wants the admin token; a forged or replayed state is refused."""
    base = f"http://127.0.0.1:{connected_syncd.http_port}"
    async with http.get(
        f"{base}/oauth/connect?tenant=acme", allow_redirects=False
    ) as r:
        assert r.status == 401
    async with http.get(f"{base}/oauth/callback?code=x&state=forged&realmId=1") as r:
        assert r.status == 400
        assert "state" in (await r.json())["error"]


async def test_switching_company_and_disconnect(http, connected_syncd, sandbox):
    """RO1: reconnecting the same realm is fine; disconnect revokes (HL9)."""
    status, first = await connect(http, connected_syncd)
    assert status == 200
    status, same = await connect(http, connected_syncd, f"&realm={first['realm_id']}")
    assert (status, same["realm_id"]) == (200, first["realm_id"])
    base = f"http://127.0.0.1:{connected_syncd.http_port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{base}/api/tenants/acme/connection", headers=headers) as r:
        assert (await r.json())["connected"] is True
    async with http.post(f"{base}/api/tenants/acme/disconnect", headers=headers) as r:
        assert (await r.json()) == {"disconnected": True}
    async with http.get(f"{base}/api/tenants/acme/connection", headers=headers) as r:
        assert r.status == 404
    assert '"event":"qbo_disconnected"' in connected_syncd.log()
    assert "qbo_revoke_failed" not in connected_syncd.log()
    requests = await Connection(http, sandbox.origin).admin(
        "GET", f"requests?realm={first['realm_id']}"
    )
    # per connection: preferences, tax codes, accounts; nothing else was read
    paths = [r["path"].rsplit("/", 1)[1] for r in requests]
    assert paths == ["preferences", "query", "query"] * 2


async def test_a_company_belongs_to_one_tenant(http, tmp_path, broker, sandbox):
    """Issue 9 §6 (RO1, PD1): a second tenant consenting with acme's company is refused."""
    workdir = tmp_path / "two"
    workdir.mkdir()
    tenants = {"acme": RULES, "globex": RULES}
    config = write_config(workdir, broker.port, tenants, qbo_base_url=sandbox.origin)
    syncd = SyncdProcess(config, env=QBO_ENV)
    syncd.start()
    try:
        status, acme = await connect(http, syncd)
        assert status == 200, acme
        realm = acme["realm_id"]
        status, refused = await connect(http, syncd, f"&realm={realm}", tenant="globex")
        assert status == 409
        assert refused["error"].startswith(
            f"QBO company {realm} is already connected to tenant 'acme'"
        )
        # also when forced: force switches a tenant's own company, never takes another's
        status, _ = await connect(
            http, syncd, f"&realm={realm}&force=1", tenant="globex"
        )
        assert status == 409
        rows = DbView(workdir / "syncd.db").query(
            "SELECT tenant, realm_id FROM connections"
        )
        assert rows == [("acme", realm)]
        # globex connects its own company without trouble
        status, globex = await connect(http, syncd, tenant="globex")
        assert status == 200
        assert globex["realm_id"] != realm
    finally:
        syncd.stop()


async def test_the_store_refuses_a_second_tenant_for_a_realm(tmp_path):
    """Issue 9 §6: the database itself holds one tenant per realm (replicas to come)."""
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    try:
        now = datetime.now(UTC)
        conn = StoredConnection(
            tenant="acme",
            realm_id="9130",
            status="connected",
            sealed_token=Cipher(QBO_ENV["SYNCD_SECRET_KEY"]).seal(
                {"access_token": "a"}
            ),
            connected_at=now,
        )
        await store.save_connection(conn)
        await store.save_connection(conn)  # the same tenant again: fine
        with pytest.raises(RealmTakenError):
            await store.save_connection(dataclasses.replace(conn, tenant="globex"))
        assert await store.tenant_of_realm("9130") == "acme"
    finally:
        await store.close()


async def test_expired_oauth_states_are_purged(tmp_path):
    """Issue 9 §7: one-time states older than their 10 minutes do not pile up."""
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    try:
        now = datetime.now(UTC)
        ttl = timedelta(minutes=10)
        await store.new_state("old", "acme", False, now - timedelta(hours=1), ttl)
        await store.new_state("new", "acme", False, now, ttl)
        assert await store.take_state("old") is None
        assert await store.take_state("new") is not None
    finally:
        await store.close()


async def test_connecting_while_qbo_throttles(http, connected_syncd, sandbox):
    """Issue 10 §4 (OD2): the settings read at the callback ride out 429s and 5xx."""
    admin = Connection(http, sandbox.origin)
    status, first = await connect(http, connected_syncd)
    assert status == 200, first
    realm = first["realm_id"]
    await admin.admin(
        "PUT", "faults", {"seed": 11, "api": {"rate_429": 0.2, "rate_5xx": 0.2}}
    )
    try:
        for _ in range(5):  # each reconnect reads preferences, tax codes and accounts
            status, body = await connect(http, connected_syncd, f"&realm={realm}")
            assert status == 200, body
            assert body["preferences"]["accounts"]["Undeposited Funds"]
    finally:
        await admin.admin("PUT", "faults", {"api": {"rate_429": 0.0, "rate_5xx": 0.0}})
    requests = await admin.admin("GET", f"requests?realm={realm}")
    assert any(r["status"] in (429, 500, 503) for r in requests)  # QBO did throttle


async def test_settings_unread_at_the_callback_are_read_before_the_first_sync(
    http, connected_syncd, sandbox, broker
):
    """Issue 10 §4: QBO refusing every read: connected (202, says so); syncs wait, then go."""
    admin = Connection(http, sandbox.origin)
    await admin.admin("PUT", "faults", {"seed": 12, "api": {"rate_429": 1.0}})
    try:
        status, body = await connect(http, connected_syncd)
    finally:
        await admin.admin("PUT", "faults", {"api": {"rate_429": 0.0}})
    assert status == 202, body
    assert body["status"] == "connected"
    assert body["error"].startswith("QBO's settings are not read yet")
    async with Crm(broker.port) as crm:
        data = invoice(
            "INV-1",
            1,
            "open",
            total="200.00",
            customer={"contact_id": "C-9", "name": "Acme Ltd"},
        )
        await crm.send("acme", "invoice.upserted", data)
        await crm.wait_for(
            lambda r: any(
                m.body["data"]["sync_state"] == "synced"
                for m in crm.on("sync/invoice/INV-1")
            ),
            timeout=60,
        )
    base = f"http://127.0.0.1:{connected_syncd.http_port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{base}/api/tenants/acme/connection", headers=headers) as r:
        conn = await r.json()
    assert conn["error"] is None
    assert conn["preferences"]["accounts"]["Undeposited Funds"]
