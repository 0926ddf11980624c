"""Inbound: QBO webhooks back to the CRM as checked transitions (RO6, RO7, DC4, OD10, HS5)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest

from tests.crm import Crm
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_connect import connect
from tests.integration.test_outbound import Setup, _invoice
from tests.integration.test_outbound import setup as setup  # the fixture
from tests.sandbox_process import VERIFIER, Connection, SandboxProcess
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config

# Intuit sends CloudEvents only from 2026 (qbo.md §10): every wired test runs with them;
# those about a format's own fields (entity names, a merge's ids, signatures) run with the
# legacy format too, as `@BOTH_FORMATS` (the rest doubled CI's time for no new fact)
BOTH_FORMATS = pytest.mark.parametrize(
    "wired", ["legacy", "cloudevents"], indirect=True
)


@pytest.fixture(params=["cloudevents"])
async def wired(request, tmp_path, broker, http) -> AsyncIterator[Setup]:
    """Syncd and a sandbox whose webhooks (CloudEvents, or `request.param`) reach it."""
    sandbox = SandboxProcess(tmp_path)
    workdir = tmp_path / "s"
    workdir.mkdir()
    tenants = None
    marker = request.node.get_closest_marker("rules")
    if marker is not None:
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES.read_text().replace(*marker.args))
        tenants = {"acme": rules}
    config = write_config(workdir, broker.port, tenants, qbo_base_url=sandbox.origin)
    syncd = SyncdProcess(config, env=QBO_ENV)
    sandbox.args = (
        "--webhook-url",
        f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo",
        "--webhook-delay",
        "0.05",
        "--webhook-format",
        request.param,
    )
    await asyncio.to_thread(sandbox.start)
    await asyncio.to_thread(syncd.start)
    try:
        status, body = await connect(http, syncd)
        assert status == 200, body
        qbo = await Connection(http, sandbox.origin).connect(realm=body["realm_id"])
        async with Crm(broker.port) as crm:
            yield Setup(syncd, qbo, crm, body["realm_id"])
    finally:
        syncd.stop()
        sandbox.stop()


async def _synced_invoice(s: Setup) -> dict[str, Any]:
    await s.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await s.state("INV-1", lambda d: d["sync_state"] == "synced")
    [row] = await s.qbo_rows("select * from Invoice")
    return row


async def _all_told(s: Setup) -> bool:
    """The sandbox has no change or delivery left unanswered."""
    left = await s.qbo.admin("GET", "webhooks/outstanding")
    return bool(left["outstanding"] == 0)


async def _more_deliveries(s: Setup, than: int) -> bool:
    return len(await s.qbo.admin("GET", "webhooks")) > than


async def _pay(s: Setup, invoice: dict[str, Any], amount: str) -> None:
    """A bookkeeper records a payment in QBO."""
    await s.qbo.pay_by_hand(s.realm, invoice, amount)


@BOTH_FORMATS
async def test_a_payment_in_qbo_moves_the_crm_invoice(wired: Setup):
    """RO6 + OD10/HS5: partial then full payment → partially_paid, paid; payments reported."""
    invoice = await _synced_invoice(wired)
    await _pay(wired, invoice, "50.00")
    await wired.crm.wait_for(
        lambda r: len(wired.crm.on("acme/out/invoice/set_status")) >= 1
    )
    first = wired.crm.on("acme/out/invoice/set_status")[0].body["data"]
    assert (first["invoice_id"], first["from"], first["to"]) == (
        "INV-1",
        "open",
        "partially_paid",
    )
    await _pay(wired, invoice, "150.00")
    await wired.crm.wait_for(
        lambda r: len(wired.crm.on("acme/out/invoice/set_status")) >= 2
    )
    second = wired.crm.on("acme/out/invoice/set_status")[1].body["data"]
    assert (second["from"], second["to"]) == ("partially_paid", "paid")
    state = await wired.state("INV-1", lambda d: d["status"] == "paid")
    assert (state["qbo_status"], state["balance"]) == ("paid", "0.00")
    await wired.crm.wait_for(
        lambda r: len(wired.crm.on("acme/out/payment/received")) >= 2
    )
    amounts = [
        m.body["data"]["amount"] for m in wired.crm.on("acme/out/payment/received")
    ]
    assert amounts == ["50.00", "150.00"]
    assert (
        wired.crm.on("acme/out/payment/received")[0]
        .body["data"]["qbo_link"]
        .startswith("https://")
    )


async def test_a_refused_mapping_is_a_failure_and_no_set_status(wired: Setup):
    """RO7, DC4: a QBO void mapped to a move the rules forbid (paid → voided) is refused."""
    invoice = await _synced_invoice(wired)
    await _pay(wired, invoice, "200.00")
    await wired.state("INV-1", lambda d: d["status"] == "paid")
    await wired.qbo.admin("POST", f"realms/{wired.realm}/invoice/{invoice['Id']}/void")
    await wired.crm.wait_for(
        lambda r: any(
            m.body["data"]["operation"] == "qbo_event"
            for m in wired.crm.on("acme/out/sync/failed")
        )
    )
    [failed] = [
        m
        for m in wired.crm.on("acme/out/sync/failed")
        if m.body["data"]["operation"] == "qbo_event"
    ]
    assert "paid → voided" in failed.body["data"]["message"]
    assert "[qbo_events] invoice_voided" in failed.body["data"]["message"]
    assert [
        m.body["data"]["to"] for m in wired.crm.on("acme/out/invoice/set_status")
    ] == ["paid"]
    state = await wired.state("INV-1", lambda d: d["qbo_status"] == "voided")
    assert state["status"] == "paid"


async def test_syncds_own_writes_do_not_echo(wired: Setup):
    """An invoice syncd wrote comes back as a webhook: nothing is sent to the CRM."""
    await _synced_invoice(wired)
    await wired.settled()  # the webhook of syncd's own create has come and been applied
    assert wired.crm.on("acme/out/invoice/set_status") == []
    deliveries = await wired.qbo.admin("GET", "webhooks")
    assert deliveries and all(d["delivered"] for d in deliveries)


@BOTH_FORMATS
async def test_forged_signatures_are_refused(wired: Setup, http):
    """A webhook without the right intuit-signature gets 401 and changes nothing."""
    url = f"http://127.0.0.1:{wired.syncd.http_port}/webhooks/qbo"
    body = json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": wired.realm,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "1",
                                "operation": "Void",
                                "lastUpdated": "x",
                            }
                        ]
                    },
                }
            ]
        }
    ).encode()
    async with http.post(url, data=body, headers={"intuit-signature": "Zm9yZ2Vk"}) as r:
        assert r.status == 401
    async with http.post(url, data=body) as r:
        assert r.status == 401
    good = base64.b64encode(
        hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
    ).decode()
    async with http.post(url, data=body, headers={"intuit-signature": good}) as r:
        assert r.status == 200
    assert '"event":"webhook_bad_signature"' in wired.syncd.log()
    stranger = body.replace(wired.realm.encode(), b"999")  # a company no tenant holds
    signed = base64.b64encode(
        hmac.new(VERIFIER.encode(), stranger, hashlib.sha256).digest()
    ).decode()
    async with http.post(url, data=stranger, headers={"intuit-signature": signed}) as r:
        assert r.status == 200
    await eventually(lambda: '"event":"webhook_unknown_realm"' in wired.syncd.log())


@pytest.fixture
async def unwired(tmp_path, broker, sandbox, http) -> AsyncIterator[Setup]:
    """Syncd reconciling every second; the sandbox sends no webhooks at all."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(
        workdir, broker.port, qbo_base_url=sandbox.origin, qbo="reconcile_interval = 1"
    )
    syncd = SyncdProcess(config, env=QBO_ENV)
    await asyncio.to_thread(syncd.start)
    try:
        status, body = await connect(http, syncd)
        assert status == 200, body
        qbo = await Connection(http, sandbox.origin).connect(realm=body["realm_id"])
        async with Crm(broker.port) as crm:
            yield Setup(syncd, qbo, crm, body["realm_id"])
    finally:
        syncd.stop()


async def test_without_webhooks_cdc_still_converges(unwired: Setup):
    """Webhooks are not a source of truth: with none at all, CDC brings QBO's changes."""
    invoice = await _synced_invoice(unwired)
    await _pay(unwired, invoice, "200.00")
    await unwired.crm.wait_for(
        lambda r: bool(unwired.crm.on("acme/out/invoice/set_status")), timeout=20
    )
    [moved] = unwired.crm.on("acme/out/invoice/set_status")
    assert (moved.body["data"]["from"], moved.body["data"]["to"]) == ("open", "paid")
    await unwired.reconciled(rounds=2)  # more passes: nothing applied or told twice
    await unwired.settled()
    assert len(unwired.crm.on("acme/out/invoice/set_status")) == 1
    assert len(unwired.crm.on("acme/out/payment/received")) == 1
    log = await unwired.qbo.admin("GET", f"requests?realm={unwired.realm}")
    assert any(r["path"].endswith("/cdc") for r in log)
    # CDC found what no webhook brought: syncd looks again sooner while that lasts
    assert '"event":"reconcile_found_missed_changes"' in unwired.syncd.log()


async def test_what_changed_in_qbo_while_a_reconnect_was_due_reaches_the_crm(
    unwired: Setup, http
):
    """RO6, HL9: a reconnection goes on from where reconciliation stopped.

    It started from the new connection's time, and a QBO payment made while the grant
    was lost never reached the CRM (found by the chaos run).
    """
    invoice = await _synced_invoice(unwired)
    await unwired.qbo.admin("POST", "tokens/revoke-all", {"realm": unwired.realm})
    db = DbView(unwired.syncd.config.parent / "syncd.db")
    # the next pass finds the grant gone, and says so
    sql = "SELECT status FROM connections"
    await eventually(lambda: db.query(sql)[0][0] == "needs_reconnect")
    await unwired.fresh_reader()
    await _pay(unwired, invoice, "200.00")
    await unwired.reconciled(rounds=2)  # passes that cannot run: reconnect needed
    await unwired.settled()
    assert unwired.crm.on("acme/out/invoice/set_status") == []
    status, body = await connect(http, unwired.syncd, f"&realm={unwired.realm}")
    assert status == 200, body
    await unwired.crm.wait_for(
        lambda r: bool(unwired.crm.on("acme/out/invoice/set_status")), timeout=20
    )
    moved = unwired.crm.on("acme/out/invoice/set_status")[0].body["data"]
    assert (moved["from"], moved["to"]) == ("open", "paid")


async def test_duplicated_and_delayed_webhooks_apply_once(wired: Setup):
    """At-least-once delivery: duplicates and late repeats change nothing twice."""
    invoice = await _synced_invoice(wired)
    await wired.qbo.admin("PUT", "faults", {"webhooks": {"duplicate": 1.0}})
    await _pay(wired, invoice, "200.00")
    await wired.crm.wait_for(
        lambda r: bool(wired.crm.on("acme/out/invoice/set_status"))
    )
    await wired.settled()  # every duplicate delivered and applied (or seen as known)
    assert len(wired.crm.on("acme/out/invoice/set_status")) == 1
    assert len(wired.crm.on("acme/out/payment/received")) == 1
    deliveries = await wired.qbo.admin("GET", "webhooks")
    assert (
        sum(d["attempts"] for d in deliveries) > len(deliveries) or len(deliveries) >= 2
    )


@BOTH_FORMATS
async def test_invoices_and_customers_created_in_qbo_reach_the_crm(wired: Setup):
    """HS3, HS4: an invoice made by hand in QBO → imported, no deal; HL1: new customer."""
    customer = (
        await wired.qbo.admin(
            "POST",
            f"realms/{wired.realm}/customer",
            {
                "DisplayName": "Walk-in Client",
                "PrimaryEmailAddr": {"Address": "w@c.test"},
            },
            expect=201,
        )
    )["Customer"]
    item = await wired.qbo.item("Repairs")
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 75,
        "Description": "Fix",
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    await wired.qbo.admin(
        "POST",
        f"realms/{wired.realm}/invoice",
        {"CustomerRef": {"value": customer["Id"]}, "Line": [line]},
        expect=201,
    )
    await wired.crm.wait_for(
        lambda r: (
            bool(wired.crm.on("acme/out/invoice/imported"))
            and bool(wired.crm.on("acme/out/contact/created"))
        )
    )
    [imported] = wired.crm.on("acme/out/invoice/imported")
    data = imported.body["data"]
    assert (data["total"], data["deal_id"], data["customer"]["name"]) == (
        "75.00",
        None,
        "Walk-in Client",
    )
    [created] = wired.crm.on("acme/out/contact/created")
    assert (created.body["data"]["name"], created.body["data"]["email"]) == (
        "Walk-in Client",
        "w@c.test",
    )


@pytest.mark.rules("on_first_payment = false", "on_first_payment = true")
async def test_first_payment_asks_for_a_review(wired: Setup):
    """HL2: a customer's first QBO payment requests a review (once)."""
    invoice = await _synced_invoice(wired)
    await _pay(wired, invoice, "50.00")
    await _pay(wired, invoice, "50.00")
    await wired.crm.wait_for(
        lambda r: len(wired.crm.on("acme/out/payment/received")) >= 2
    )
    [review] = wired.crm.on("acme/out/review/requested")
    assert review.body["data"]["name"] == "Acme Ltd"


async def test_a_balance_past_due_shows_overdue(unwired: Setup):
    """QBO's view (qbo.md §9): an open balance past its due date is overdue."""
    from datetime import UTC, datetime, timedelta

    past = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    await unwired.crm.send(
        "acme", "invoice.upserted", _invoice(1, "open", due_date=past)
    )
    state = await unwired.state(
        "INV-1", lambda d: d["qbo_status"] == "overdue", timeout=20
    )
    assert state["sync_state"] == "synced"


async def test_refresh_pulls_an_invoice_and_a_contacts_list(setup: Setup):
    """PD8: `command.refresh` pulls one invoice now, or a contact's invoices in a range."""
    invoice = await _synced_invoice(setup)
    await _pay(setup, invoice, "200.00")  # no webhooks here: nothing happens by itself
    await setup.settled()  # syncd has nothing left to do: it has not heard of it
    assert setup.crm.on("acme/out/invoice/set_status") == []
    await setup.crm.send("acme", "command.refresh", {"invoice_id": "INV-1"})
    await setup.crm.wait_for(
        lambda r: bool(setup.crm.on("acme/out/invoice/set_status"))
    )
    assert setup.crm.on("acme/out/invoice/set_status")[0].body["data"]["to"] == "paid"
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 30,
        "SalesItemLineDetail": {
            "ItemRef": invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]
        },
    }
    await setup.qbo.admin(
        "POST",
        f"realms/{setup.realm}/invoice",
        {"CustomerRef": invoice["CustomerRef"], "Line": [line]},
        expect=201,
    )
    # QBO dates invoices in the company's time zone (-07:00): ask from the day before
    day = date.fromisoformat(invoice["TxnDate"])
    span = {"from": (day - timedelta(days=1)).isoformat(), "to": day.isoformat()}
    for _ in range(2):  # asked twice, listed twice
        await setup.crm.send("acme", "command.refresh", {"contact_id": "C-9", **span})
    await setup.crm.wait_for(
        lambda r: len(setup.crm.on("acme/out/invoice/imported")) >= 2
    )
    assert {
        m.body["data"]["total"] for m in setup.crm.on("acme/out/invoice/imported")
    } == {"30.00"}


async def test_link_and_unlink_a_qbo_invoice_to_a_deal(setup: Setup):
    """HS4, PD8: a QBO-made invoice is linked to no deal until the CRM links it."""
    invoice = await _synced_invoice(setup)
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 30,
        "SalesItemLineDetail": {
            "ItemRef": invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]
        },
    }
    made = (
        await setup.qbo.admin(
            "POST",
            f"realms/{setup.realm}/invoice",
            {"CustomerRef": invoice["CustomerRef"], "Line": [line]},
            expect=201,
        )
    )["Invoice"]
    await setup.crm.send(
        "acme", "command.link", {"qbo_invoice_id": made["Id"], "deal_id": "D-3"}
    )
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("acme/out/invoice/linked")))
    assert setup.crm.on("acme/out/invoice/linked")[0].body["data"] == {
        "qbo_invoice_id": made["Id"],
        "deal_id": "D-3",
    }
    day = date.fromisoformat(invoice["TxnDate"])
    span = {"from": (day - timedelta(days=1)).isoformat(), "to": day.isoformat()}
    await setup.crm.send("acme", "command.refresh", {"contact_id": "C-9", **span})
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("acme/out/invoice/imported")))
    assert setup.crm.on("acme/out/invoice/imported")[0].body["data"]["deal_id"] == "D-3"
    await setup.crm.send("acme", "command.unlink", {"qbo_invoice_id": made["Id"]})
    await setup.crm.wait_for(
        lambda r: len(setup.crm.on("acme/out/invoice/linked")) == 2
    )
    assert setup.crm.on("acme/out/invoice/linked")[1].body["data"]["deal_id"] is None


async def test_a_late_webhook_never_moves_an_invoice_back(wired: Setup):
    """Out-of-order delivery never moves an invoice back.

    QBO's current state is fetched, so a late notification of an earlier partial payment
    does not move a paid invoice back to partially paid.
    """
    invoice = await _synced_invoice(wired)
    await wired.qbo.admin(
        "PUT", "faults", {"webhooks": {"delay": 1.0, "delay_seconds": 1.5}}
    )
    held = len(await wired.qbo.admin("GET", "webhooks"))
    await _pay(wired, invoice, "50.00")  # its webhook is held back
    await eventually(lambda: _more_deliveries(wired, held))
    await wired.qbo.admin("PUT", "faults", {"webhooks": {"delay": 0.0}})
    await _pay(wired, invoice, "150.00")
    await wired.state("INV-1", lambda d: d["status"] == "paid")
    await wired.settled()  # the late one arrives and is applied
    moves = [m.body["data"]["to"] for m in wired.crm.on("acme/out/invoice/set_status")]
    assert moves[-1] == "paid"
    assert "partially_paid" not in moves[moves.index("paid") :]
    deliveries = await wired.qbo.admin("GET", "webhooks")
    assert all(d["delivered"] for d in deliveries)


@BOTH_FORMATS
async def test_a_customer_merged_away_in_qbo_moves_its_link(wired: Setup):
    """Issue 10 §5: `qbo.customer.merged.v1` (deletedId): the CRM contact follows."""
    invoice = await _synced_invoice(wired)
    merged_away = invoice["CustomerRef"]["value"]
    survivor = await wired.qbo.admin(
        "POST",
        f"realms/{wired.realm}/customer",
        {"DisplayName": "Acme Limited"},
        expect=201,
    )
    survivor_id = survivor["Customer"]["Id"]
    await wired.qbo.admin(
        "POST", f"realms/{wired.realm}/customer/{merged_away}/merge?into={survivor_id}"
    )
    db = DbView(wired.syncd.config.parent / "syncd.db")
    sql = "SELECT qbo_id FROM links WHERE tenant = 'acme' AND kind = 'customer'"
    await eventually(lambda: db.query(sql) == [(survivor_id,)])
    second = {**_invoice(1, "open"), "invoice_id": "INV-2", "number": "1002"}
    await wired.crm.send("acme", "invoice.upserted", second)
    await wired.state("INV-2", lambda d: d["sync_state"] == "synced")
    [row] = await wired.qbo_rows("select * from Invoice where DocNumber = '1002'")
    assert row["CustomerRef"]["value"] == survivor_id != merged_away


async def test_a_contacts_listing_pages_past_1000_invoices(setup: Setup):
    """Issue 10 §5 (PD8, qbo.md §10): QBO answers 1,000 rows a query; syncd reads them all."""
    invoice = await _synced_invoice(setup)
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 1,
        "SalesItemLineDetail": {
            "ItemRef": invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]
        },
    }
    body = {"CustomerRef": invoice["CustomerRef"], "Line": [line]}
    for start in range(0, 1100, 50):  # 1,100 invoices made by hand in QBO
        await asyncio.gather(
            *(
                setup.qbo.admin(
                    "POST", f"realms/{setup.realm}/invoice", body, expect=201
                )
                for _ in range(start, start + 50)
            )
        )
    day = date.fromisoformat(invoice["TxnDate"])
    span = {"from": (day - timedelta(days=1)).isoformat(), "to": day.isoformat()}
    await setup.crm.send("acme", "command.refresh", {"contact_id": "C-9", **span})
    await setup.crm.wait_for(
        lambda r: len(setup.crm.on("acme/out/invoice/imported")) >= 1100, timeout=60
    )
    await setup.settled()  # anything told twice would be out by now
    imported = {
        m.body["data"]["qbo_id"] for m in setup.crm.on("acme/out/invoice/imported")
    }
    assert len(imported) == 1100


async def test_one_tenants_trouble_never_holds_up_anothers_webhooks(
    tmp_path, broker, http
):
    """Issue 9's principle on the QBO side: acme's revoked grant must not stop globex.

    Before, a webhook batch that could not be fetched for one realm was retried whole,
    forever: no tenant's QBO change reached its CRM again.
    """
    sandbox = SandboxProcess(tmp_path)
    workdir = tmp_path / "s"
    workdir.mkdir()
    tenants = {"acme": RULES, "globex": RULES}
    config = write_config(workdir, broker.port, tenants, qbo_base_url=sandbox.origin)
    syncd = SyncdProcess(config, env=QBO_ENV)
    sandbox.args = (
        "--webhook-url",
        f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo",
        "--webhook-delay",
        "0.05",
    )
    await asyncio.to_thread(sandbox.start)
    await asyncio.to_thread(syncd.start)
    try:
        realms = {}
        for tenant in ("acme", "globex"):
            status, body = await connect(http, syncd, tenant=tenant)
            assert status == 200, body
            realms[tenant] = body["realm_id"]
        globex = await Connection(http, sandbox.origin).connect(realm=realms["globex"])
        async with Crm(broker.port) as crm:
            await crm.send("globex", "invoice.upserted", _invoice(1, "open"))
            await crm.wait_for(
                lambda r: any(
                    m.body["data"]["sync_state"] == "synced"
                    for m in crm.on("globex/sync/invoice/INV-1")
                )
            )
            # acme's company disconnects the app; a bookkeeper then works in both companies
            await globex.admin("POST", "tokens/revoke-all", {"realm": realms["acme"]})
            await globex.admin(
                "POST",
                f"realms/{realms['acme']}/customer",
                {"DisplayName": "Walk-in"},
                expect=201,
            )
            [row] = (
                await globex.call(
                    "GET", "query", params={"query": "select * from Invoice"}
                )
            )["QueryResponse"]["Invoice"]
            s = Setup(syncd, globex, crm, realms["globex"])
            await eventually(lambda: _all_told(s))  # acme's notification goes first
            await _pay(s, row, "200.00")
            await crm.wait_for(lambda r: bool(crm.on("globex/out/invoice/set_status")))
        [moved] = crm.on("globex/out/invoice/set_status")
        assert moved.body["data"]["to"] == "paid"
        base = f"http://127.0.0.1:{syncd.http_port}"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(
            f"{base}/api/tenants/acme/connection", headers=headers
        ) as r:
            assert (await r.json())["status"] == "needs_reconnect"
    finally:
        syncd.stop()
        sandbox.stop()


def _signed(realm: str, entities: list[dict[str, str]]) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "eventNotifications": [
                {"realmId": realm, "dataChangeEvent": {"entities": entities}}
            ]
        }
    ).encode()
    signature = base64.b64encode(
        hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
    ).decode()
    return body, signature


async def test_a_bulk_change_in_qbo_never_jams_the_realms_webhooks(setup: Setup, http):
    """Issue 22 §2, RO6: 1,000 ids of one realm are fetched 100 at a time.

    All ids went in one `Id IN (…)` GET: past ~550 the URL was too long, the read failed
    (400) and was retried every 5 s for ever, and every later webhook of the realm was
    merged into it: this void never reached the CRM (until CDC, minutes later).
    """
    invoice = await _synced_invoice(setup)
    url = f"http://127.0.0.1:{setup.syncd.http_port}/webhooks/qbo"
    stamp = "2026-01-01T00:00:00.000Z"
    bulk = [
        {
            "name": "Invoice",
            "id": str(900000 + n),
            "operation": "Update",
            "lastUpdated": stamp,
        }
        for n in range(1000)
    ]
    body, signature = _signed(setup.realm, bulk)
    async with http.post(url, data=body, headers={"intuit-signature": signature}) as r:
        assert r.status == 200
    await setup.qbo.admin("POST", f"realms/{setup.realm}/invoice/{invoice['Id']}/void")
    void = [
        {
            "name": "Invoice",
            "id": invoice["Id"],
            "operation": "Void",
            "lastUpdated": stamp,
        }
    ]
    body, signature = _signed(setup.realm, void)
    async with http.post(url, data=body, headers={"intuit-signature": signature}) as r:
        assert r.status == 200
    await setup.crm.wait_for(
        lambda r: any(
            m.body["data"]["to"] == "voided"
            for m in setup.crm.on("acme/out/invoice/set_status")
        )
    )
    assert '"event":"inbound_fetch_failed"' not in setup.syncd.log()
