"""A bulk import at QBO's real quotas: invoices per QBO-minute against the batch ceiling.

    python -m benchmarks.bench_bulk [--invoices 10000] [--realms 1] [--time-scale 10]
                                    [--customers 1]

The sandbox enforces QBO's per-realm quotas (500 requests a minute, 10 at once, 40 batch
requests a minute of up to 30 objects: a ceiling of 1,200 objects a minute in batches,
1,660 with the other 460 requests carrying one each) on a scaled
clock (`--time-scale 10`: a QBO-minute lasts 6 s), and syncd paces itself on the same
clock (`[qbo] time_scale`). The CRM publishes every invoice at once, per realm (one
tenant each); the figure is invoices synced per QBO-minute, beside the ceiling. Then
QBO's own API is asked: every invoice once (no duplicate), and the sandbox's request log
for 429s (throttle failures). `--customers N` spreads the invoices over N customers new
to QBO (a first import, a backfill): syncd makes them as it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from tests.crm import NODELAY, envelope, invoice
from tests.integration.test_connect import connect
from tests.mosquitto import Broker
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import QBO_ENV, RULES, SyncdProcess, write_config

# QBO: 40 batch requests a minute of 30 objects, and the other 460 of its 500 requests
# one object each: 1,660 objects a minute when every request carries what it can
CEILING = 40 * 30 + (500 - 40)
BATCHES_ONLY = 40 * 30
LINES = [
    {
        "description": "Work",
        "item": "Consulting",
        "quantity": "2",
        "unit_price": "100.00",
    }
]


def _messages(tenant: str, count: int, customers: int) -> list[tuple[str, bytes]]:
    out = []
    for n in range(count):
        who = n % customers
        data = invoice(
            f"{tenant}-{n}",
            1,
            "open",
            number=f"C{n}",
            total="200.00",
            customer={"contact_id": f"C-{who}", "name": f"Bulk Co {who}"},
            lines=LINES,
        )
        env = envelope(tenant, "invoice.upserted", data)
        topic = f"syncd/{tenant}/crm/invoice/upserted"
        out.append((topic, json.dumps(env).encode()))
    return out


async def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bulk-pub", socket_options=NODELAY
    ) as pub:
        pub.pending_calls_threshold = 100_000
        for start in range(0, len(messages), 200):
            chunk = messages[start : start + 200]
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))


async def _wait_synced(
    port: int, wanted: int, timeout: float
) -> dict[str, list[float]]:
    """Until every invoice's state says synced (or failed); when each one did, by tenant."""
    finished: dict[str, list[float]] = {}
    last: dict[str, str] = {}
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bulk-sub", socket_options=NODELAY
    ) as sub:
        await sub.subscribe("syncd/+/sync/invoice/#", qos=1)
        async with asyncio.timeout(timeout):
            async for m in sub.messages:
                data = json.loads(m.payload)["data"]
                before = last.get(data["invoice_id"])
                last[data["invoice_id"]] = data["sync_state"]
                if data["sync_state"] in ("synced", "failed") and before != "synced":
                    tenant = m.topic.value.split("/")[1]
                    finished.setdefault(tenant, []).append(time.perf_counter())
                    done = sum(1 for s in last.values() if s in ("synced", "failed"))
                    if done == wanted:
                        break
    failed = sum(1 for s in last.values() if s == "failed")
    if failed:
        print(f"failed: {failed}")
    return finished


async def run(args: argparse.Namespace, tmp: Path) -> None:
    broker = Broker(tmp / "broker")
    broker.start()
    sandbox = SandboxProcess(
        tmp, "--time-scale", str(args.time_scale), "--per-second", "10"
    )
    sandbox.start()
    workdir = tmp / "syncd"
    workdir.mkdir()
    tenants = [f"t{n}" for n in range(args.realms)]
    config = write_config(
        workdir,
        broker.port,
        dict.fromkeys(tenants, RULES),
        qbo_base_url=sandbox.origin,
        qbo=f"time_scale = {args.time_scale}",
    )
    syncd = SyncdProcess(config, env=QBO_ENV)
    syncd.start()
    try:
        async with aiohttp.ClientSession() as http:
            realms = {}
            for tenant in tenants:
                status, body = await connect(http, syncd, tenant=tenant)
                assert status == 200, body
                realms[tenant] = body["realm_id"]
            messages = [
                m for t in tenants for m in _messages(t, args.invoices, args.customers)
            ]
            started = time.perf_counter()
            waiter = asyncio.create_task(
                _wait_synced(broker.port, len(messages), args.timeout)
            )
            await asyncio.sleep(0.5)  # subscribed before the first state
            await _publish(broker.port, messages)
            finished = await waiter
            admin = Connection(http, sandbox.origin)
            report = []
            minute = 60 / args.time_scale
            for tenant, realm in realms.items():
                times = sorted(finished[tenant])
                elapsed = times[-1] - started
                # past the first QBO-minute: a sliding window lets a whole minute's
                # quota go at once at the start, then paces
                later = [t for t in times if t - started > minute]
                steady = (
                    len(later) / ((times[-1] - started - minute) / minute)
                    if len(later) > 1
                    else float("nan")
                )
                # syncd's requests first: the check's own reads below are not syncd's
                log = await admin.admin("GET", f"requests?realm={realm}")
                statuses = Counter(r["status"] for r in log)
                kinds = Counter(
                    r["path"].rsplit("/", 1)[1] for r in log if r["method"] == "POST"
                )
                kinds["reads"] = sum(r["path"].endswith("/query") for r in log)
                refused = (await admin.admin("GET", "throttle")).get(realm, {})
                if refused:  # which of QBO's limits a 429 was for
                    kinds["429s by limit"] = refused
                qbo = await Connection(http, sandbox.origin).connect(realm=realm)
                numbers = await _numbers(qbo, minute)
                qbo_minutes = elapsed * args.time_scale / 60
                report.append(
                    (
                        tenant,
                        args.invoices / qbo_minutes,
                        steady,
                        len(numbers),
                        len(set(numbers)),
                        statuses.get(429, 0),
                        dict(kinds),
                        elapsed,
                    )
                )
    finally:
        syncd.stop()
        sandbox.stop()
        broker.stop()
    print(
        f"invoices per realm: {args.invoices:,}; customers: {args.customers:,}; "
        f"realms: {args.realms}; QBO clock x{args.time_scale:g}"
    )
    print(
        "| realm | invoices / QBO-minute (all; after the first minute) | of the "
        f"ceiling ({CEILING:,}) | of batches alone ({BATCHES_ONLY:,}) | QBO copies "
        "| duplicates | 429s | writes | real s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for tenant, rate, steady, copies, unique, throttled, writes, elapsed in report:
        print(
            f"| {tenant} | {rate:,.0f}; {steady:,.0f} | {rate / CEILING:.0%}; "
            f"{steady / CEILING:.0%} | {rate / BATCHES_ONLY:.0%} | {copies:,} | "
            f"{copies - unique} | {throttled} | "
            f"{writes} | {elapsed:.1f} |"
        )
    if len(report) > 1:
        last = max(r[-1] for r in report)  # real seconds until the last realm was done
        total = len(report) * args.invoices / (last / 60 * args.time_scale)
        print(
            f"all realms together: {len(report) * args.invoices:,} invoices in "
            f"{last:.0f} s = {total:,.0f} invoices / QBO-minute "
            f"({total / CEILING:.1f}x one realm's ceiling)"
        )


async def _numbers(qbo: Connection, minute: float) -> list[str]:
    """Every QBO invoice's number, read as QBO's quota allows (syncd may have spent it)."""
    numbers: list[str] = []
    while True:
        status, _, raw = await qbo.call(
            "GET",
            "query",
            params={
                "query": "select * from Invoice "
                f"startposition {len(numbers) + 1} maxresults 1000"
            },
            expect=None,
            raw=True,
        )
        if status == 429:
            await asyncio.sleep(minute / 10)
            continue
        assert status == 200, raw[:2000]
        answer = json.loads(raw)
        page: list[dict[str, Any]] = answer["QueryResponse"].get("Invoice", [])
        numbers += [str(i["DocNumber"]) for i in page]
        if len(page) < 1000:
            return numbers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--realms", type=int, default=1)
    parser.add_argument(
        "--customers", type=int, default=1, help="distinct customers, new to QBO"
    )
    parser.add_argument("--time-scale", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
