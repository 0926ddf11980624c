"""Issue 14: a queue of pushes goes to QBO in batch requests, with single writes' guarantees.

Invoices arrive while the tenant is not connected yet (`[sync] since = "all"`: they
count); once it is, every push is due at once: syncd writes them 30 to a request. Asserted through QBO's own API and the
sandbox's request log: each invoice exactly once, a fault of one item the failure of
that invoice alone, a batch whose answer is lost written once, a lone push a single
request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.crm import Crm, invoice
from tests.eventually import eventually
from tests.integration.test_connect import connect
from tests.integration.test_outbound import TODAY, Setup
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import QBO_ENV, RULES, SyncdProcess, write_config

COUNT = 45


def _invoice(n: int, number: str | None = None) -> dict[str, Any]:
    return invoice(
        f"B-{n}",
        1,
        "open",
        number=number or f"C{n}",
        issue_date=TODAY.isoformat(),
        total="200.00",
        customer={"contact_id": "C-1", "name": "Batch Co"},
        lines=[
            {
                "description": "Work",
                "item": "Consulting",
                "quantity": "2",
                "unit_price": "100.00",
            }
        ],
    )


class Queued(Setup):
    """Syncd whose invoices were queued before the tenant connected."""

    http: Any
    sandbox: SandboxProcess

    async def connect(self) -> None:
        status, body = await connect(self.http, self.syncd)
        assert status == 200, body
        self.realm = body["realm_id"]
        self.qbo = await Connection(self.http, self.sandbox.origin).connect(
            realm=self.realm
        )

    def last_states(self) -> dict[str, str]:
        last = {}
        for m in self.crm.received:
            if "/sync/invoice/" in m.topic:
                last[m.topic.rsplit("/", 1)[1]] = m.body["data"]["sync_state"]
        return last

    async def all_synced(
        self, ids: list[str], timeout: float = 60, ends: tuple[str, ...] = ("synced",)
    ) -> None:
        def done(_: object) -> bool:
            last = self.last_states()
            return all(last.get(i) in ends for i in ids)

        await self.crm.wait_for(done, timeout)

    async def batches(self, kind: str = "b-") -> list[dict[str, Any]]:
        """Batch requests of invoices (`b-`), or of customers and items (`n-`)."""
        return [
            w
            for w in await self.writes()
            if w["path"].endswith("/batch") and w["query"]["requestid"].startswith(kind)
        ]

    async def sandbox_faults(self, **api: float) -> None:
        admin = Connection(self.http, self.sandbox.origin)
        await admin.admin("PUT", "faults", {"api": api})


@pytest.fixture
async def queued(
    request, tmp_path, broker, sandbox: SandboxProcess, http
) -> AsyncIterator[Queued]:
    workdir = tmp_path / "s"
    workdir.mkdir()
    qbo_marker = request.node.get_closest_marker("qbo")
    extra = {"qbo": qbo_marker.args[0]} if qbo_marker else {}
    # invoices from before the connection count (HL8): they are what piles up here
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.read_text().replace('since = "connection"', 'since = "all"'))
    config = write_config(
        workdir, broker.port, {"acme": rules}, qbo_base_url=sandbox.origin, **extra
    )
    proc = SyncdProcess(config, env=QBO_ENV)
    await asyncio.to_thread(proc.start)
    try:
        async with Crm(broker.port) as crm:
            setup = Queued(proc, None, crm, "")  # type: ignore[arg-type]
            setup.http, setup.sandbox = http, sandbox
            yield setup
    finally:
        proc.stop()


async def _queue(setup: Queued, invoices: list[dict[str, Any]]) -> list[str]:
    for data in invoices:
        await setup.crm.send("acme", "invoice.upserted", data)
    ids = [d["invoice_id"] for d in invoices]
    await setup.crm.wait_for(lambda _: set(setup.last_states()) >= set(ids))
    return ids


async def test_a_queue_goes_in_batches_each_invoice_once(queued: Queued):
    """45 queued pushes: 2 batch requests (30 + 15), no single invoice write, 45 copies.

    One of them repeats another's number: QBO refuses that item alone (6140), and only
    that invoice fails, with QBO's reason.
    """
    invoices = [_invoice(n) for n in range(COUNT - 1)]
    invoices.append(_invoice(COUNT - 1, number="C3"))  # QBO refuses a duplicate number
    ids = await _queue(queued, invoices)
    await queued.connect()
    await queued.all_synced(ids, ends=("synced", "failed"))
    copies = await queued.qbo_rows("select * from Invoice maxresults 1000")
    numbers = sorted(c["DocNumber"] for c in copies)
    assert numbers == sorted(f"C{n}" for n in range(COUNT - 1))  # each once
    singles = [w for w in await queued.writes() if w["path"].endswith("/invoice")]
    assert singles == []
    batches = await queued.batches()
    assert len(batches) == 2 and all(
        len(b["query"]["requestid"]) <= 36 for b in batches
    )
    failed = await queued.state(f"B-{COUNT - 1}", lambda d: d["sync_state"] == "failed")
    assert "6140" in failed["error"]
    synced = await queued.state("B-3", lambda d: d["sync_state"] == "synced")
    assert synced["qbo_id"] in {c["Id"] for c in copies}


@pytest.mark.qbo("request_timeout = 1")
async def test_a_batch_whose_answer_is_lost_is_written_once(queued: Queued):
    """QBO commits the batch but answers too late: the resend gets the first answer.

    The batch's requestid makes QBO replay its first answer instead of writing again.
    """
    ids = await _queue(queued, [_invoice(n) for n in range(6)])
    await queued.sandbox_faults(slow_after_commit=1.0, slow_seconds=3)
    await queued.connect()
    await queued.all_synced(ids, timeout=60)
    copies = await queued.qbo_rows("select * from Invoice maxresults 1000")
    assert sorted(c["DocNumber"] for c in copies) == sorted(f"C{n}" for n in range(6))
    # the customer and item were made in a batch held the same way: each once too
    customers = await queued.qbo_rows("select * from Customer")
    assert [c["DisplayName"] for c in customers] == ["Batch Co"]
    items = await queued.qbo_rows("select * from Item where Name = 'Consulting'")
    assert len(items) == 1

    async def both() -> (
        list[Any] | None
    ):  # the first is logged when its held answer goes
        sent = await queued.batches()
        return sent if len(sent) >= 2 else None

    sent = await eventually(both, timeout=10)
    assert len({b["query"]["requestid"] for b in sent}) == 1


async def test_a_crash_while_a_batch_is_in_qbo_writes_nothing_twice(queued: Queued):
    """SIGKILL while QBO holds a batch's answer: after restart each job is in doubt.

    Each looks for its own earlier write (the marker, HS11, OD5) and adopts it: every
    invoice synced, none twice. (The customer and item exist already, so the batch is
    the first write; the invoices wait in the broker while syncd is down.)
    """
    await queued.connect()
    [first] = await _queue(queued, [_invoice(9)])
    await queued.all_synced([first])
    await asyncio.to_thread(queued.syncd.stop)
    ids = [d["invoice_id"] for d in (_invoice(n) for n in range(6))]
    for n in range(6):
        await queued.crm.send("acme", "invoice.upserted", _invoice(n))
    await queued.sandbox_faults(slow_after_commit=1.0, slow_seconds=10)
    await asyncio.to_thread(queued.syncd.start)

    async def in_qbo() -> bool:  # the batch is in QBO (committed, its answer held)
        return len(await queued.qbo_rows("select * from Invoice")) == 7

    await eventually(in_qbo, timeout=5)
    assert await queued.batches() == []  # its answer is not given yet
    queued.syncd.kill()
    await queued.sandbox_faults(slow_after_commit=0.0)
    await asyncio.to_thread(queued.syncd.start)
    await queued.all_synced(ids, timeout=60)
    copies = await queued.qbo_rows("select * from Invoice maxresults 1000")
    expected = sorted(f"C{n}" for n in [*range(6), 9])
    assert sorted(c["DocNumber"] for c in copies) == expected


@pytest.mark.timeout(150)
@pytest.mark.qbo("batch_requests_per_minute = 3")
async def test_pushes_go_as_singles_while_the_minutes_batches_are_spent(
    queued: Queued,
):
    """Issue 25: the realm's whole quota carries pushes, not only its batch requests.

    syncd may send three batch requests a minute here: the new customer and item take
    two, the first 30 invoices the third, and the other 60 go as single writes in the
    minute's other requests, each invoice once, instead of waiting a minute per batch.
    """
    invoices = [_invoice(n) for n in range(90)]
    ids = await _queue(queued, invoices)
    await queued.connect()
    await queued.all_synced(ids, timeout=90)
    copies = await queued.qbo_rows("select * from Invoice maxresults 1000")
    assert sorted(c["DocNumber"] for c in copies) == sorted(f"C{n}" for n in range(90))
    writes = await queued.writes()
    assert len([w for w in writes if w["path"].endswith("/batch")]) <= 3
    singles = [w for w in writes if w["path"].endswith("/invoice")]
    assert len(singles) == 90 - 30 * len(await queued.batches())
    assert len(singles) >= 60


async def test_a_lone_push_is_a_single_request(queued: Queued):
    """Without a queue, a push goes at once as a single write (latency first)."""
    await queued.connect()
    [invoice_id] = await _queue(queued, [_invoice(1)])
    await queued.all_synced([invoice_id])
    assert await queued.batches() == []
    singles = [w for w in await queued.writes() if w["path"].endswith("/invoice")]
    assert len(singles) == 1


def _named(n: int, contact: str, name: str, item: str) -> dict[str, Any]:
    data = _invoice(n)
    data["customer"] = {"contact_id": contact, "name": name}
    data["lines"][0]["item"] = item
    return data


async def test_new_customers_and_items_of_a_queue_are_made_in_batches(
    queued: Queued,
):
    """Issue 14: a queue's new customers and items are settled in batches, none twice.

    29 customers and 3 items new to syncd: found with one query per kind, the missing
    made in one batch request per kind. 10 customers and 1 item exist in QBO already (made by hand): they are matched, not
    made again. Two CRM contacts share a name: one customer, as one by one. A name an
    inactive customer holds is refused in the batch (6240): that customer alone is
    made one by one, under a distinct name, as before.
    """
    await queued.connect()
    await asyncio.to_thread(queued.syncd.stop)
    for n in range(10):
        await queued.qbo.create("Customer", {"DisplayName": f"Cust {n}"})
    held = await queued.qbo.create("Customer", {"DisplayName": "Cust 28"})
    await queued.qbo.call(  # inactive: no query finds it, yet it holds the name
        "POST",
        "customer",
        {
            "Id": held["Id"],
            "SyncToken": held["SyncToken"],
            "sparse": True,
            "Active": False,
        },
    )
    accounts = await queued.qbo_rows("select * from Account where Name = 'Services'")
    account = {"value": accounts[0]["Id"]} if accounts else {"value": "1"}
    await queued.qbo.create(
        "Item", {"Name": "Design", "Type": "Service", "IncomeAccountRef": account}
    )
    invoices = [
        _named(n, f"K-{n}", f"Cust {n}", ("Design", "Audit", "Support")[n % 3])
        for n in range(29)
    ]
    invoices.append(_named(29, "K-29", "Cust 12", "Audit"))  # another contact, a name
    ids = await _queue_while_down(queued, invoices)
    requests = f"requests?realm={queued.realm}"
    before = len(await queued.qbo.admin("GET", requests))
    await asyncio.to_thread(queued.syncd.start)
    await queued.all_synced(ids, timeout=60)
    log = (await queued.qbo.admin("GET", requests))[before:]

    customers = await queued.qbo_rows("select * from Customer maxresults 1000")
    names = sorted(c["DisplayName"] for c in customers)
    expected = [f"Cust {n}" for n in range(28)] + ["Cust 28 (K-28)"]
    assert names == sorted(expected)  # each once; the held name made distinct
    by_id = {c["Id"]: c["DisplayName"] for c in customers}
    copies = await queued.qbo_rows("select * from Invoice maxresults 1000")
    billed = {c["DocNumber"]: by_id[c["CustomerRef"]["value"]] for c in copies}
    assert billed["C12"] == billed["C29"] == "Cust 12"
    assert billed["C28"] == "Cust 28 (K-28)" and billed["C5"] == "Cust 5"
    items = await queued.qbo_rows("select * from Item maxresults 1000")
    assert sorted(i["Name"] for i in items if i["Name"] != "Services") == [
        "Audit",
        "Design",
        "Support",
    ]

    made = [
        r["path"].rsplit("/", 1)[1]
        for r in log
        if r["method"] == "POST" and r["status"] == 200
    ]
    assert made.count("customer") == 1  # Cust 28 (K-28) alone
    assert made.count("item") == 0
    assert len(await queued.batches("n-")) == 2  # customers, items
    asked = [r["query"].get("query", "") for r in log if r["path"].endswith("/query")]
    about = [q for q in asked if "from Customer" in q or "from Item" in q]
    assert len([q for q in about if " in (" in q]) == 2
    assert len([q for q in about if " in (" not in q]) == 1  # Cust 28's own look-up


async def _queue_while_down(setup: Queued, invoices: list[dict[str, Any]]) -> list[str]:
    """Invoices sent while syncd is stopped: they wait in the broker, due together."""
    for data in invoices:
        await setup.crm.send("acme", "invoice.upserted", data)
    return [d["invoice_id"] for d in invoices]
