"""Webhook burst: N signed notifications about real invoices of a connected company.

    python -m benchmarks.bench_webhooks [--notifications 10000] [--invoices 1000]

M invoices are made "by hand" in the sandbox's company (its own webhooks off), then N
notifications name them (Update, each invoice N/M times with a new `lastUpdated`, as a
busy bookkeeper's edits would) at syncd's /webhooks/qbo, one per request, 50 at a time.
Prints the answer times (QBO wants 200 within 3 s; target p99 < 50 ms), the time until
every notification is applied (each invoice imported once, `…/out/invoice/imported`),
and QBO reads per notification (target < 0.2).
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
from typing import Any

import aiohttp

from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.integration.test_connect import connect
from tests.mosquitto import Broker
from tests.sandbox_process import VERIFIER, Connection, SandboxProcess
from tests.syncd_process import QBO_ENV, SyncdProcess, write_config

_AT_ONCE = 50


def _signed(realm: str, qbo_id: str, round_: int) -> tuple[bytes, str]:
    entity = {
        "name": "Invoice",
        "id": qbo_id,
        "operation": "Update",
        "lastUpdated": f"2026-11-28T10:{round_ // 60:02d}:{round_ % 60:02d}.000Z",
    }
    body = json.dumps(
        {
            "eventNotifications": [
                {"realmId": realm, "dataChangeEvent": {"entities": [entity]}}
            ]
        }
    ).encode()
    digest = hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
    return body, base64.b64encode(digest).decode()


async def _burst(
    http: aiohttp.ClientSession, url: str, realm: str, ids: list[str], count: int
) -> list[float]:
    gate = asyncio.Semaphore(_AT_ONCE)

    async def one(n: int) -> float:
        body, sig = _signed(realm, ids[n % len(ids)], n // len(ids))
        async with gate:
            start = time.perf_counter()
            async with http.post(
                url, data=body, headers={"intuit-signature": sig}
            ) as r:
                assert r.status == 200, r.status
            return time.perf_counter() - start

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _hand_made(
    qbo: Connection, realm: str, refs: dict[str, Any], count: int
) -> list[str]:
    gate = asyncio.Semaphore(20)

    async def one(n: int) -> str:
        line = {
            "DetailType": "SalesItemLineDetail",
            "Amount": 10 + n,
            "SalesItemLineDetail": {"ItemRef": refs["item"]},
        }
        body = {"CustomerRef": refs["customer"], "Line": [line], "DocNumber": f"H{n}"}
        async with gate:
            made = await qbo.admin("POST", f"realms/{realm}/invoice", body, expect=201)
        return str(made["Invoice"]["Id"])

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def run(
    broker: Broker,
    sandbox: SandboxProcess,
    syncd: SyncdProcess,
    invoices: int,
    count: int,
    wait: float,
) -> None:
    db = DbView(syncd.config.parent / "syncd.db")
    async with aiohttp.ClientSession() as http, Crm(broker.port) as crm:
        status, body = await connect(http, syncd)
        assert status == 200, body
        realm = body["realm_id"]
        qbo = await Connection(http, sandbox.origin).connect(realm=realm)
        seed = invoice("SEED", 1, "open", total="200.00", customer={"name": "Burst Co"})
        await crm.send("acme", "invoice.upserted", seed)
        await crm.wait_for(
            lambda _: any(
                m.body["data"].get("sync_state") == "synced"
                for m in crm.on("sync/invoice/SEED")
            ),
            timeout=60,
        )
        [row] = (
            await qbo.call("GET", "query", params={"query": "select * from Invoice"})
        )["QueryResponse"]["Invoice"]
        refs = {
            "customer": row["CustomerRef"],
            "item": row["Line"][0]["SalesItemLineDetail"]["ItemRef"],
        }
        ids = await _hand_made(qbo, realm, refs, invoices)
        await qbo.admin("DELETE", "requests", expect=204)
        url = f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo"
        start = time.perf_counter()
        times = await _burst(http, url, realm, ids, count)
        answered = time.perf_counter() - start

        def applied() -> bool:
            imported = len(crm.on("acme/out/invoice/imported"))
            pending = db.query("SELECT count(*) FROM inbound WHERE done = 0")[0][0]
            return imported >= invoices and pending == 0

        deadline = time.monotonic() + wait
        while not applied():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all applied within {wait} s")
            await asyncio.sleep(0.05)
        done = time.perf_counter() - start
        log = await qbo.admin("GET", f"requests?realm={realm}")
        reads = sum(1 for r in log if r["method"] == "GET")
        imported = len(crm.on("acme/out/invoice/imported"))
    q = statistics.quantiles(times, n=100)
    print(
        f"| notifications | {count:,} about {invoices:,} hand-made invoices, {_AT_ONCE} at a time |"
    )
    print(
        f"| answers p50 / p99 / max | {q[49] * 1000:.1f} / {q[98] * 1000:.1f} / {max(times) * 1000:.1f} ms |"
    )
    print(f"| all answered | {answered:.1f} s ({count / answered:,.0f}/s) |")
    print(
        f"| all applied (from the first) | {done:.1f} s; {imported:,} imported (once each: {imported == invoices}) |"
    )
    print(f"| QBO reads | {reads:,} = {reads / count:.3f} per notification |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--invoices", type=int, default=1_000)
    parser.add_argument("--wait", type=float, default=600, help="seconds to apply all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp / "broker")
        broker.start()
        sandbox = SandboxProcess(tmp)
        sandbox.start()
        workdir = tmp / "syncd"
        workdir.mkdir()
        config = write_config(
            workdir,
            broker.port,
            qbo_base_url=sandbox.origin,
            qbo="reconcile_interval = 3600",
        )
        syncd = SyncdProcess(config, env=QBO_ENV)
        syncd.start()
        try:
            asyncio.run(
                run(
                    broker, sandbox, syncd, args.invoices, args.notifications, args.wait
                )
            )
        except BaseException:
            print(syncd.log()[-3000:])
            raise
        finally:
            syncd.stop()
            sandbox.stop()
            broker.stop()


if __name__ == "__main__":
    main()
