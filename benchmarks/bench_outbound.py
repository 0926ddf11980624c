"""QBO calls per synced invoice, and the end-to-end rate, through broker, syncd and sandbox.

    python -m benchmarks.bench_outbound [--invoices 200]

Publishes N invoices (one customer, one item) entering `open`; waits until all are synced;
then counts what the sandbox received for the company: no read per invoice (the customer
and item cost their look-up and create once), one write request per invoice sent alone,
one per 30 when they queue (batch requests).
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
LINES = [
    {
        "description": "Work",
        "item": "Consulting",
        "quantity": "2",
        "unit_price": "100.00",
    }
]


async def run(
    broker: Broker, sandbox: SandboxProcess, syncd: SyncdProcess, count: int
) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await connect(http, syncd)
        assert status == 200, body
        realm = body["realm_id"]
        admin = Connection(http, sandbox.origin)
        before = len(await admin.admin("GET", f"requests?realm={realm}"))
        async with Crm(broker.port) as crm:
            start = time.perf_counter()
            for n in range(count):
                customer = {"contact_id": "C-1", "name": "Bench Co"}
                data = invoice(
                    f"INV-{n}",
                    1,
                    "open",
                    total="200.00",
                    issue_date=TODAY,
                    customer=customer,
                    lines=LINES,
                )
                await crm.send("acme", "invoice.upserted", data)
            synced: set[str] = set()

            def done(received: list[Any]) -> bool:
                for m in received:
                    if (
                        "/sync/invoice/" in m.topic
                        and m.body["data"]["sync_state"] == "synced"
                    ):
                        synced.add(m.body["data"]["invoice_id"])
                return len(synced) == count

            await crm.wait_for(done, timeout=600)
            elapsed = time.perf_counter() - start
        log = (await admin.admin("GET", f"requests?realm={realm}"))[before:]
    kinds = Counter(
        ("write" if r["method"] == "POST" else "read")
        + " "
        + r["path"].rsplit("/", 1)[1]
        for r in log
    )
    # the first invoice also looks up (and creates) the customer, the item and its account
    first = next(
        n for n, r in enumerate(log) if r["path"].endswith(("/invoice", "/batch"))
    )
    steady = log[first:]
    writes = sum(1 for r in steady if r["method"] == "POST")
    reads = len(steady) - writes
    print(
        f"invoices synced: {count} in {elapsed:.1f} s ({count / elapsed:,.1f}/s end to end)"
    )
    print(f"QBO requests: {dict(kinds)}")
    print(
        f"from the first invoice write on: {writes / count:.2f} write requests and "
        f"{reads / count:.2f} reads per invoice (a queue goes 30 to a batch request)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        sandbox = SandboxProcess(
            Path(tmp), "--per-minute", "100000000", "--concurrent", "1000"
        )
        sandbox.start()
        workdir = Path(tmp) / "syncd"
        workdir.mkdir()
        syncd = SyncdProcess(
            write_config(workdir, broker.port, qbo_base_url=sandbox.origin), env=QBO_ENV
        )
        syncd.start()
        try:
            asyncio.run(run(broker, sandbox, syncd, args.invoices))
        finally:
            syncd.stop()
            sandbox.stop()
            broker.stop()


if __name__ == "__main__":
    main()
