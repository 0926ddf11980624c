"""Inbound figures: webhook answer time under a burst, and QBO change → CRM message time.

    python -m benchmarks.bench_inbound [--burst 1000]

1. A burst of signed webhooks (one notification each) at syncd's /webhooks/qbo, 50 at a
   time: p50/p99 answer time (QBO wants 200 within 3 s).
2. A payment recorded "by a person in QBO" on a synced invoice, until the CRM receives
   `…/out/invoice/set_status`: with webhooks (sandbox batching window 0.2 s), and with every
   webhook dropped (CDC every 2 s). Also QBO reads per inbound event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.crm import Crm, invoice
from tests.integration.test_connect import connect
from tests.mosquitto import Broker
from tests.sandbox_process import VERIFIER, Connection, SandboxProcess
from tests.syncd_process import QBO_ENV, SyncdProcess, write_config


async def burst(url: str, count: int) -> list[float]:
    async with aiohttp.ClientSession() as http:
        gate = asyncio.Semaphore(50)

        async def one(n: int) -> float:
            body = json.dumps(
                {
                    "eventNotifications": [
                        {
                            "realmId": "999",
                            "dataChangeEvent": {
                                "entities": [
                                    {
                                        "name": "Invoice",
                                        "id": str(n),
                                        "operation": "Update",
                                        "lastUpdated": f"t{n}",
                                    }
                                ]
                            },
                        }
                    ]
                }
            ).encode()
            sig = base64.b64encode(
                hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
            ).decode()
            async with gate:
                start = time.perf_counter()
                async with http.post(
                    url, data=body, headers={"intuit-signature": sig}
                ) as r:
                    assert r.status == 200
                return time.perf_counter() - start

        return list(await asyncio.gather(*(one(n) for n in range(count))))


async def change_to_message(
    broker: Broker, sandbox: SandboxProcess, syncd: SyncdProcess
) -> tuple[float, int]:
    async with aiohttp.ClientSession() as http:
        status, body = await connect(http, syncd)
        assert status == 200, body
        realm = body["realm_id"]
        qbo = await Connection(http, sandbox.origin).connect(realm=realm)
        async with Crm(broker.port) as crm:
            invoice_id = f"INV-{time.monotonic_ns()}"  # retained states of earlier runs stay apart
            data = invoice(
                invoice_id,
                1,
                "open",
                total="200.00",
                issue_date=time.strftime("%Y-%m-%d", time.gmtime()),
                customer={"name": "Bench Co"},
            )
            await crm.send("acme", "invoice.upserted", data)
            await crm.wait_for(
                lambda r: any(
                    m.body["data"].get("sync_state") == "synced"
                    for m in crm.on(f"sync/invoice/{invoice_id}")
                )
            )
            [row] = (
                await qbo.call(
                    "GET", "query", params={"query": "select * from Invoice"}
                )
            )["QueryResponse"]["Invoice"]
            before = len(await qbo.admin("GET", f"requests?realm={realm}"))
            payment = {
                "CustomerRef": row["CustomerRef"],
                "TotalAmt": 200,
                "Line": [
                    {
                        "Amount": 200,
                        "LinkedTxn": [{"TxnId": row["Id"], "TxnType": "Invoice"}],
                    }
                ],
            }
            start = time.perf_counter()
            await qbo.admin("POST", f"realms/{realm}/payment", payment, expect=201)
            await crm.wait_for(
                lambda r: bool(crm.on("acme/out/invoice/set_status")), timeout=60
            )
            elapsed = time.perf_counter() - start
            reads = [
                r
                for r in (await qbo.admin("GET", f"requests?realm={realm}"))[before:]
                if r["method"] == "GET"
            ]
            return elapsed, len(reads)


def _syncd(
    tmp: Path, broker: Broker, sandbox: SandboxProcess, qbo: str = ""
) -> SyncdProcess:
    workdir = tmp / f"syncd-{time.monotonic_ns()}"
    workdir.mkdir()
    return SyncdProcess(
        write_config(workdir, broker.port, qbo_base_url=sandbox.origin, qbo=qbo),
        env=QBO_ENV,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker")
        broker.start()
        try:
            plain = SandboxProcess(tmp)
            plain.start()
            syncd = _syncd(tmp, broker, plain)
            syncd.start()
            times = asyncio.run(
                burst(f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo", args.burst)
            )
            syncd.stop()
            q = statistics.quantiles(times, n=100)
            print(
                f"webhook answers, burst of {args.burst} (50 at a time): p50 {q[49] * 1000:.1f} ms, "
                f"p99 {q[98] * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
            )
            wired = SandboxProcess(tmp)
            syncd = _syncd(tmp, broker, wired)
            wired.args = (
                "--webhook-url",
                f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo",
            )
            wired.start()
            syncd.start()
            elapsed, reads = asyncio.run(change_to_message(broker, wired, syncd))
            print(
                f"QBO payment → CRM set_status, webhooks on: {elapsed * 1000:.0f} ms, {reads} QBO reads"
            )
            syncd.stop()
            wired.stop()
            syncd = _syncd(tmp, broker, plain, "reconcile_interval = 2")
            syncd.start()
            elapsed, reads = asyncio.run(change_to_message(broker, plain, syncd))
            print(
                f"QBO payment → CRM set_status, no webhooks (CDC every 2 s): {elapsed * 1000:.0f} ms"
            )
            syncd.stop()
            plain.stop()
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
