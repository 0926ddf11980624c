"""QBO reads per synced invoice over a whole lifecycle (Intuit meters reads, qbo.md §10).

    python -m benchmarks.bench_reads [--invoices 40]

Each invoice lives a whole life through broker, syncd and the sandbox: created open,
edited (a new total), sent (QBO e-mails it), then paid in full by a bookkeeper in QBO,
which comes back to the CRM as `set_status` paid. The sandbox's request log then says how
many reads syncd made from its first invoice write on, by kind (the one-time look-ups of
the customer and item, and the reconciliation passes a realm makes whatever its traffic,
are shown apart). Target: at most 1 read per invoice.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.crm import Crm, invoice
from tests.integration.test_connect import connect
from tests.mosquitto import Broker
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import QBO_ENV, SyncdProcess, write_config

TODAY = time.strftime("%Y-%m-%d", time.gmtime())
CUSTOMER = {"contact_id": "C-1", "name": "Reads Co", "billing_email": "ap@reads.test"}


def _invoice(n: int, version: int, status: str, total: str) -> dict[str, Any]:
    line = {
        "description": "Work",
        "item": "Consulting",
        "quantity": "1",
        "unit_price": total,
    }
    return invoice(
        f"R-{n}",
        version,
        status,
        number=f"R{n}",
        total=total,
        issue_date=TODAY,
        customer=CUSTOMER,
        lines=[line],
    )


class Lifecycle:
    def __init__(self, crm: Crm, count: int) -> None:
        self.crm, self.count = crm, count

    def _latest(self) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for m in self.crm.received:
            if "/sync/invoice/" in m.topic:
                data = m.body["data"]
                latest[data["invoice_id"]] = data
        return latest

    async def step(self, version: int, status: str, total: str) -> None:
        for n in range(self.count):
            await self.crm.send(
                "acme", "invoice.upserted", _invoice(n, version, status, total)
            )

        def done(_: object) -> bool:
            latest = self._latest()
            return all(
                latest.get(f"R-{n}", {}).get("version") == version
                and latest[f"R-{n}"].get("sync_state") == "synced"
                for n in range(self.count)
            )

        await self.crm.wait_for(done, timeout=300)

    async def paid(self) -> None:
        def done(_: object) -> bool:
            moved = {
                m.body["data"]["invoice_id"]
                for m in self.crm.on("/out/invoice/set_status")
                if m.body["data"]["to"] == "paid"
            }
            return len(moved) == self.count

        await self.crm.wait_for(done, timeout=300)


async def run(args: argparse.Namespace, tmp: Path) -> None:
    broker = Broker(tmp / "broker")
    broker.start()
    sandbox = SandboxProcess(tmp)
    workdir = tmp / "syncd"
    workdir.mkdir()
    config = write_config(workdir, broker.port, qbo_base_url=sandbox.origin)
    syncd = SyncdProcess(config, env=QBO_ENV)
    # QBO's webhooks (CloudEvents, batched 0.2 s) go to syncd, as Intuit's would
    hook = f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo"
    sandbox.args = ("--webhook-url", hook, "--per-second", "0")
    sandbox.start()
    syncd.start()
    try:
        async with aiohttp.ClientSession() as http, Crm(broker.port) as crm:
            status, body = await connect(http, syncd)
            assert status == 200, body
            realm = body["realm_id"]
            admin = Connection(http, sandbox.origin)
            life = Lifecycle(crm, args.invoices)
            await life.step(1, "open", "100.00")
            await life.step(2, "open", "120.00")
            await life.step(3, "sent", "120.00")
            qbo = await Connection(http, sandbox.origin).connect(realm=realm)
            for n in range(args.invoices):
                found = await qbo.call(
                    "GET",
                    "query",
                    params={"query": f"select * from Invoice where DocNumber = 'R{n}'"},
                )
                [copy] = found["QueryResponse"]["Invoice"]
                await admin.pay_by_hand(realm, copy, copy["Balance"])
            await life.paid()
            log = await admin.admin("GET", f"requests?realm={realm}")
    finally:
        syncd.stop()
        sandbox.stop()
        broker.stop()
    first = next(
        n for n, r in enumerate(log) if r["path"].endswith(("/invoice", "/batch"))
    )
    ours = [r for r in log[first:] if "/_sandbox/" not in r["path"]]
    # the test's own reads (its look-up of each copy) are not syncd's
    ours = [r for r in ours if "DocNumber" not in str(r["query"].get("query", ""))]
    reads = [r for r in ours if r["method"] == "GET"]
    kinds = Counter(_kind(r) for r in reads)
    cdc = kinds.get("cdc", 0)
    per_invoice = (len(reads) - cdc) / args.invoices
    writes = Counter(r["path"].rsplit("/", 1)[1] for r in ours if r["method"] == "POST")
    print(f"invoices: {args.invoices}, each created, edited, sent, paid in QBO")
    print(f"QBO reads by kind: {dict(kinds)}; writes: {dict(writes)}")
    print(
        f"reads per invoice over its life: {per_invoice:.2f} "
        f"(plus {cdc} reconciliation passes for the realm)"
    )


def _kind(request: dict[str, Any]) -> str:
    path = request["path"].rsplit("/", 1)[1]
    if path == "query":
        statement = str(request["query"].get("query", "")).split()
        return f"query {statement[3] if len(statement) > 3 else ''}".strip()
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--invoices", type=int, default=40, help="a sandbox company e-mails 40 a day"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
