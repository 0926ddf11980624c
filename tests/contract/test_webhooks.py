"""qbo.md §7: webhooks (signed, both formats, retried, at least once) and CDC."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.eventually import eventually
from tests.sandbox_process import VERIFIER, Connection, SandboxProcess


class Receiver:
    """The app's webhook endpoint: records deliveries, answers as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def wait(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.calls) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield hook, str(server.make_url("/hook"))


async def _sandbox(tmp_path, url: str, fmt: str) -> SandboxProcess:
    process = SandboxProcess(
        tmp_path,
        "--webhook-url",
        url,
        "--webhook-format",
        fmt,
        "--webhook-delay",
        "0.1",
        "--time-scale",
        "100",
    )
    await asyncio.to_thread(process.start)
    return process


def _signature(body: bytes) -> str:
    return base64.b64encode(
        hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
    ).decode()


async def test_legacy_notifications_are_signed_and_batched(tmp_path, receiver, http):
    """§7: eventNotifications per realm, intuit-signature = base64 HMAC-SHA256 of the body."""
    hook, url = receiver
    process = await _sandbox(tmp_path, url, "legacy")
    try:
        qbo = await Connection(http, process.origin).connect()
        customer = await qbo.customer()
        await qbo.call(
            "POST",
            "customer",
            {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "x"},
        )
        await hook.wait(1)
        headers, body = hook.calls[0]
        assert headers["intuit-signature"] == _signature(body)
        [note] = json.loads(body)["eventNotifications"]
        assert note["realmId"] == qbo.realm
        entities = note["dataChangeEvent"]["entities"]
        assert [(e["name"], e["id"], e["operation"]) for e in entities] == [
            ("Customer", customer["Id"], "Create"),
            ("Customer", customer["Id"], "Update"),
        ]
        assert entities[0]["lastUpdated"].endswith("-07:00")
    finally:
        process.stop()


async def test_cloudevents_mix_realms_and_name_operations(tmp_path, receiver, http):
    """§7: a CloudEvents array (may mix realms), type qbo.<entity>.<op>.v1, ids unique."""
    hook, url = receiver
    process = await _sandbox(tmp_path, url, "cloudevents")
    try:
        one = await Connection(http, process.origin).connect()
        two = await Connection(http, process.origin).connect()
        invoice = await one.invoice(await one.customer(), await one.item())
        await two.customer()
        await one.call(
            "POST",
            "invoice",
            {"Id": invoice["Id"], "SyncToken": "0"},
            params={"operation": "void"},
        )
        await hook.wait(1)
        await _told(one)
        events = [e for _, body in hook.calls for e in json.loads(body)]
        assert hook.calls[0][0]["Content-Type"].startswith(
            "application/cloudevents+json"
        )
        assert hook.calls[0][0]["intuit-signature"] == _signature(hook.calls[0][1])
        types = {(e["type"], e["intuitaccountid"]) for e in events}
        assert ("qbo.invoice.created.v1", one.realm) in types
        assert ("qbo.invoice.void.v1", one.realm) in types  # §10: `void`, not `voided`
        assert ("qbo.customer.created.v1", two.realm) in types
        assert len({e["id"] for e in events}) == len(events)
        assert all(e["specversion"] == "1.0" and e["data"] == {} for e in events)
    finally:
        process.stop()


async def test_a_failed_delivery_is_retried_with_the_same_body(
    tmp_path, receiver, http
):
    """§7: non-200 → retried (10 s, 20 s, … scaled); the same body and ids come again."""
    hook, url = receiver
    hook.answers = [500, 503]
    process = await _sandbox(tmp_path, url, "cloudevents")
    try:
        qbo = await Connection(http, process.origin).connect()
        await qbo.customer()
        await hook.wait(3, timeout=15)
        assert hook.calls[0][1] == hook.calls[1][1] == hook.calls[2][1]
        deliveries = await qbo.admin("GET", "webhooks")
        assert deliveries[0]["statuses"] == [500, 503, 200]
        assert deliveries[0]["delivered"] is True
    finally:
        process.stop()


async def test_webhook_faults_drop_and_duplicate(tmp_path, receiver, http):
    """Faults: a dropped delivery never comes; a duplicated one comes twice."""
    hook, url = receiver
    process = await _sandbox(tmp_path, url, "legacy")
    try:
        qbo = await Connection(http, process.origin).connect()
        await qbo.admin("PUT", "faults", {"webhooks": {"drop": 1.0}})
        await qbo.customer("Dropped")
        await _told(qbo)
        assert hook.calls == []
        await qbo.admin("PUT", "faults", {"webhooks": {"drop": 0.0, "duplicate": 1.0}})
        await qbo.customer("Twice")
        await hook.wait(2)
        assert hook.calls[0][1] == hook.calls[1][1]
    finally:
        process.stop()


async def test_person_in_qbo_changes_are_notified(tmp_path, receiver, http):
    """Admin API: a payment received by a bookkeeper changes QBO and is notified."""
    hook, url = receiver
    process = await _sandbox(tmp_path, url, "legacy")
    try:
        qbo = await Connection(http, process.origin).connect()
        invoice = await qbo.invoice(await qbo.customer(), await qbo.item(), "80.00")
        payment = {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": 80,
            "Line": [
                {
                    "Amount": 80,
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        }
        await qbo.admin("POST", f"realms/{qbo.realm}/payment", payment, expect=201)
        paid = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
        assert paid["Balance"] == 0
        await hook.wait(1)
        await _told(qbo)
        names = [
            (e["name"], e["operation"])
            for _, b in hook.calls
            for n in json.loads(b)["eventNotifications"]
            for e in n["dataChangeEvent"]["entities"]
        ]
        assert ("Payment", "Create") in names
        log = await qbo.admin("GET", f"requests?realm={qbo.realm}")
        assert all(entry["path"].startswith("/v3/") for entry in log)
    finally:
        process.stop()


async def test_cdc_returns_changes_and_deletions_since(qbo: Connection):
    """§7 CDC: changed objects since a time, deleted ones as `status: Deleted`."""
    before = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    customer, item = await qbo.customer(), await qbo.item()
    gone = await qbo.invoice(customer, item)
    kept = await qbo.invoice(customer, item)
    await qbo.call(
        "POST",
        "invoice",
        {"Id": gone["Id"], "SyncToken": "0"},
        params={"operation": "delete"},
    )
    answer = await qbo.call(
        "GET",
        "cdc",
        params={"entities": "Invoice,Customer,Payment", "changedSince": before},
    )
    invoices, customers, payments = answer["CDCResponse"][0]["QueryResponse"]
    statuses = {i["Id"]: i.get("status") for i in invoices["Invoice"]}
    assert statuses == {kept["Id"]: None, gone["Id"]: "Deleted"}
    assert [c["Id"] for c in customers["Customer"]] == [customer["Id"]]
    assert payments == {}
    later = (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    nothing = await qbo.call(
        "GET", "cdc", params={"entities": "Invoice", "changedSince": later}
    )
    assert nothing["CDCResponse"][0]["QueryResponse"] == [{}]


async def test_cdc_limits(qbo: Connection):
    """§7 CDC: 30 days back at most; TaxCode is not available."""
    old = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%d")
    fault = await qbo.call(
        "GET", "cdc", params={"entities": "Invoice", "changedSince": old}, expect=400
    )
    assert "30 days" in fault["Fault"]["Error"][0]["Detail"]
    recent = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    fault = await qbo.call(
        "GET",
        "cdc",
        params={"entities": "TaxCode", "changedSince": recent},
        expect=400,
    )
    assert fault["Fault"]["Error"][0]["code"] == "500"


async def test_cdc_answers_at_most_1000_objects(qbo: Connection):
    """§7 CDC: a saturated answer holds 1,000 objects; shorter windows get the rest."""
    before = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for round_ in range(34):
        batch = [
            {
                "bId": str(n),
                "operation": "create",
                "Customer": {"DisplayName": f"N{round_}-{n}"},
            }
            for n in range(30)
        ]
        await qbo.call("POST", "batch", {"BatchItemRequest": batch})
    answer = await qbo.call(
        "GET", "cdc", params={"entities": "Customer", "changedSince": before}
    )
    assert len(answer["CDCResponse"][0]["QueryResponse"][0]["Customer"]) == 1000


async def test_delayed_deliveries_arrive_out_of_order(tmp_path, receiver, http):
    """Faults: a delayed delivery lets later ones overtake it (events out of sequence)."""
    hook, url = receiver
    process = await _sandbox(tmp_path, url, "legacy")
    try:
        qbo = await Connection(http, process.origin).connect()
        await qbo.admin(
            "PUT", "faults", {"webhooks": {"delay": 1.0, "delay_seconds": 0.8}}
        )
        first = await qbo.customer("First")
        await eventually(lambda: _deliveries(qbo))  # made, and held back
        await qbo.admin("PUT", "faults", {"webhooks": {"delay": 0.0}})
        second = await qbo.customer("Second")
        await hook.wait(2)
        order = [
            json.loads(b)["eventNotifications"][0]["dataChangeEvent"]["entities"][0][
                "id"
            ]
            for _, b in hook.calls
        ]
        assert order == [second["Id"], first["Id"]]
    finally:
        process.stop()


async def test_cloudevents_carry_at_most_100_events_and_merges_name_the_deleted(
    tmp_path, receiver, http
):
    """§10: up to 100 events per delivery; a merge names the survivor, with deletedId."""
    hook, url = receiver
    # CloudEvents: the default format
    process = SandboxProcess(
        tmp_path, "--webhook-url", url, "--webhook-delay", "1.5", "--time-scale", "100"
    )
    await asyncio.to_thread(process.start)
    try:
        qbo = await Connection(http, process.origin).connect()
        made = [
            await qbo.admin(
                "POST",
                f"realms/{qbo.realm}/customer",
                {"DisplayName": f"C {n}"},
                expect=201,
            )
            for n in range(150)
        ]
        gone, into = made[0]["Customer"]["Id"], made[1]["Customer"]["Id"]
        await qbo.admin("POST", f"realms/{qbo.realm}/customer/{gone}/merge?into={into}")
        await hook.wait(2, timeout=15)
        await _told(qbo)
        deliveries = [json.loads(body) for _, body in hook.calls]
        assert all(len(d) <= 100 for d in deliveries)
        events = [e for d in deliveries for e in d]
        assert sum(e["type"] == "qbo.customer.created.v1" for e in events) == 150
        [merge] = [e for e in events if e["type"] == "qbo.customer.merged.v1"]
        assert (merge["intuitentityid"], merge["data"]) == (into, {"deletedId": gone})
        await qbo.call("GET", f"customer/{gone}", expect=400)  # merged away: gone
    finally:
        process.stop()


async def _told(qbo: Connection) -> None:
    """Wait until the sandbox has no change or delivery left unanswered (or dropped)."""

    async def none_left() -> bool:
        left = await qbo.admin("GET", "webhooks/outstanding")
        return bool(left["outstanding"] == 0)

    await eventually(none_left)


async def _deliveries(qbo: Connection) -> int:
    return len(await qbo.admin("GET", "webhooks"))


async def test_a_bookkeeper_change_can_go_unheard_or_be_dated_past_cdc(
    tmp_path, receiver, http
):
    """Issue 27's bookkeeper: a change no webhook tells, or one dated 40 days back.

    `?webhook=0` tells no webhook; `?age_days=40` dates the change (and what it touched)
    back: no webhook, CDC (30 days deep) misses it, a query by LastUpdatedTime finds it.
    """
    hook, url = receiver
    process = await _sandbox(tmp_path, url, "legacy")
    try:
        qbo = await Connection(http, process.origin).connect()
        invoice = await qbo.invoice(await qbo.customer(), await qbo.item(), "80.00")
        await hook.wait(1)
        await _told(qbo)
        heard = len(hook.calls)
        since = (datetime.now(UTC) - timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = f"realms/{qbo.realm}/invoice/{invoice['Id']}"
        due = (datetime.now(UTC) + timedelta(days=60)).date().isoformat()
        quiet = await qbo.admin("POST", path + "?webhook=0", {"DueDate": due})
        assert quiet["Invoice"]["SyncToken"] == "1"
        payment = {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": 80,
            "Line": [
                {
                    "Amount": 80,
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        }
        aged = await qbo.admin(
            "POST", f"realms/{qbo.realm}/payment?age_days=40", payment, expect=201
        )
        old = datetime.fromisoformat(aged["Payment"]["MetaData"]["LastUpdatedTime"])
        assert datetime.now(UTC) - old > timedelta(days=39)
        paid = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
        assert paid["Balance"] == 0  # the change happened, dated back with the invoice
        assert datetime.fromisoformat(paid["MetaData"]["LastUpdatedTime"]) == old
        await _told(qbo)
        assert len(hook.calls) == heard  # neither was told
        cdc = await qbo.call(
            "GET", "cdc", params={"entities": "Invoice,Payment", "changedSince": since}
        )
        assert cdc["CDCResponse"][0]["QueryResponse"] == [{}, {}]
        stamp = (old - timedelta(seconds=1)).isoformat()
        found = await qbo.call(
            "GET",
            "query",
            params={
                "query": f"select * from Payment where MetaData.LastUpdatedTime >= '{stamp}'"
            },
        )
        assert [p["Id"] for p in found["QueryResponse"]["Payment"]] == [
            aged["Payment"]["Id"]
        ]
    finally:
        process.stop()
