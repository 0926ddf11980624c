"""Issue 10 §1 (RO1): a tenant reconnected to another QBO company starts clean there.

QBO ids are small per-company integers: an id remembered from company A can name another
customer in company B. Nothing remembered for A may be used with B.
"""

from __future__ import annotations

from typing import Any

from tests.crm import Crm
from tests.integration.test_connect import connect
from tests.integration.test_outbound import Setup, _invoice, setup
from tests.sandbox_process import Connection
from tests.syncd_process import ADMIN

__all__ = ["setup"]  # the fixture, from the outbound tests


async def _namesakes_of(b: Connection, entity: str, taken: str, make: Any) -> None:
    """Fill company B until its `entity` with Id `taken` exists (and names another)."""
    for n in range(200):
        made = await make(n)
        if int(made["Id"]) >= int(taken):
            return
    raise AssertionError(f"no {entity} {taken} in company B")


async def test_another_company_after_a_disconnect_starts_clean(setup: Setup, http):
    """Issue 10 §1: new and queued invoices land in B with B's ids; nothing goes to A."""
    crm, syncd = setup.crm, setup.syncd
    await crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    three = _invoice(1, "open", invoice_id="INV-3", number="1003")
    await crm.send("acme", "invoice.upserted", three)
    await setup.state("INV-3", lambda d: d["sync_state"] == "synced")
    [a_invoice] = await setup.qbo_rows("select * from Invoice where DocNumber = '1001'")
    a_customer = a_invoice["CustomerRef"]["value"]
    a_item = a_invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"]

    base = f"http://127.0.0.1:{syncd.http_port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.post(f"{base}/api/tenants/acme/disconnect", headers=headers) as r:
        assert r.status == 200
    realm_a = setup.realm
    writes_to_a = len(await setup.writes())

    # while disconnected: an edit of a synced invoice and a new one are queued
    await crm.send("acme", "invoice.upserted", _invoice(2, "open", total="200.00"))
    two = _invoice(1, "open", invoice_id="INV-2", number="1002")
    await crm.send("acme", "invoice.upserted", two)
    await setup.state("INV-2", lambda d: d["sync_state"] == "pending")

    # company B, where A's customer and item ids name other things
    b = await Connection(http, setup.qbo.origin).connect()
    await _namesakes_of(
        b, "Customer", a_customer, lambda n: b.customer(f"Other Co {n}")
    )
    await _namesakes_of(b, "Item", a_item, lambda n: b.item(f"Other item {n}"))
    seen = {i: len(crm.on(f"sync/invoice/{i}")) for i in ("INV-1", "INV-2")}
    status, body = await connect(http, syncd, f"&realm={b.realm}")
    assert status == 200, body
    assert body["realm_id"] == b.realm != setup.realm

    for invoice_id in ("INV-1", "INV-2"):
        await _synced_after(crm, invoice_id, seen[invoice_id])
    setup.qbo, setup.realm = b, b.realm
    rows = await setup.qbo_rows("select * from Invoice")
    assert sorted(r["DocNumber"] for r in rows) == ["1001", "1002"]
    [acme] = await setup.qbo_rows(
        "select * from Customer where DisplayName = 'Acme Ltd'"
    )
    [consulting] = await setup.qbo_rows("select * from Item where Name = 'Consulting'")
    for row in rows:
        assert row["CustomerRef"]["value"] == acme["Id"] != a_customer
        item = row["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"]
        assert item == consulting["Id"] != a_item

    # INV-3 had nothing queued: it stays out of B, and says where it is
    state = await setup.state("INV-3", lambda d: d["sync_state"] == "other_company")
    assert state["qbo_id"] is None
    assert state["error"].startswith(f"synced to QBO company {realm_a} as invoice")
    assert "not in company" in state["error"] and "command.sync" in state["error"]
    async with http.get(
        f"{base}/api/tenants/acme/invoices/INV-3", headers=headers
    ) as r:
        detail = await r.json()
    assert any("qbo company switched to" in h["cause"] for h in detail["history"])
    # until the CRM says so
    seen["INV-3"] = len(crm.on("sync/invoice/INV-3"))
    await crm.send("acme", "command.sync", {"invoice_id": "INV-3"})
    await _synced_after(crm, "INV-3", seen["INV-3"])
    rows = await setup.qbo_rows("select * from Invoice")
    assert sorted(r["DocNumber"] for r in rows) == ["1001", "1002", "1003"]

    # nothing was written to A after the disconnect, and nothing failed
    assert len(await _writes(setup.qbo, realm_a)) == writes_to_a
    async with http.get(f"{base}/api/tenants/acme/failures", headers=headers) as r:
        assert await r.json() == []


async def _synced_after(crm: Crm, invoice_id: str, seen: int) -> None:
    """Wait for a `synced` state of the invoice among the messages after the first `seen`."""
    topic = f"sync/invoice/{invoice_id}"
    await crm.wait_for(
        lambda r: any(
            m.body["data"]["sync_state"] == "synced" for m in crm.on(topic)[seen:]
        )
    )


async def _writes(qbo: Connection, realm: str) -> list[dict[str, Any]]:
    log = await qbo.admin("GET", f"requests?realm={realm}")
    return [r for r in log if r["method"] == "POST"]
