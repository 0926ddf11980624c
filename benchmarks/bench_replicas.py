"""Replicas (issue 25): 1, 2 and 3 syncd processes on one PostgreSQL and one broker.

Intake: N `invoice.upserted` moves over many invoices and several tenants, published to
a shared subscription (`$share/syncd/…`), each waited for until its state message comes
back; events/s end to end, CPU per event of each replica, and PostgreSQL's commit time
meanwhile (a probe committing one row every 50 ms beside the load). QBO: invoices
entering `open` for six tenants (each its own QBO company in the sandbox), synced per
minute, with each realm's work run by the replica holding its lease.

    python -m benchmarks.bench_replicas [--messages 12000] [--replicas 1,2,3]
        [--qbo-invoices 120] [--time-scale 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import psycopg

from benchmarks.bench_core import cpu_seconds
from benchmarks.bench_outbound import LINES, TODAY
from tests.crm import NODELAY, Crm, invoice
from tests.integration.test_connect import connect
from tests.mosquitto import Broker
from tests.postgres import drop_made, new_database
from tests.sandbox_process import SandboxProcess
from tests.syncd_process import QBO_ENV, RULES, SyncdProcess, write_config

TENANTS = [f"t{n}" for n in range(1, 7)]
_WINDOW = 200


def _moves(count: int, invoices: int, tag: str) -> list[tuple[str, bytes]]:
    """Draft → open → draft …, each invoice's moves spread over the run, six tenants."""
    out = []
    for n in range(count):
        inv, step = n % invoices, n // invoices
        tenant = TENANTS[inv % len(TENANTS)]
        env = {
            "id": f"{tag}-{n}",
            "type": "invoice.upserted",
            "tenant": tenant,
            "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": {
                "invoice_id": f"INV-{tag}-{inv}",
                "version": step + 1,
                "status": "draft" if step % 2 == 0 else "open",
                "currency": "USD",
                "total": "120.00",
            },
        }
        out.append((f"syncd/{tenant}/crm/invoice/upserted", json.dumps(env).encode()))
    return out


async def intake(port: int, count: int, invoices: int, tag: str) -> float:
    """Publish the moves; wait for each one's state message; events/s."""
    messages = _moves(count, invoices, tag)
    waiting = {json.loads(p)["id"] for _, p in messages}
    async with (
        aiomqtt.Client(
            "127.0.0.1", port, identifier=f"sub-{tag}", socket_options=NODELAY
        ) as sub,
        aiomqtt.Client(
            "127.0.0.1", port, identifier=f"pub-{tag}", socket_options=NODELAY
        ) as pub,
    ):
        pub.pending_calls_threshold = 100_000
        await sub.subscribe("syncd/+/sync/invoice/#", qos=1)

        async def consume() -> None:
            async for m in sub.messages:
                waiting.discard(json.loads(m.payload).get("causation_id"))
                if not waiting:
                    return

        consumer = asyncio.create_task(consume())
        start = time.perf_counter()
        for n in range(0, len(messages), _WINDOW):
            chunk = messages[n : n + _WINDOW]
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in chunk))
        await asyncio.wait_for(consumer, 600)
        return count / (time.perf_counter() - start)


class CommitProbe:
    """Commits one row every 50 ms on the database; the times it took."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS probe (n BIGINT)")
            await conn.commit()
            while not self._stop.is_set():
                began = time.perf_counter()
                await conn.execute("INSERT INTO probe VALUES (1)")
                await conn.commit()
                self.times.append(time.perf_counter() - began)
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


def _start(
    tmp: Path, broker: Broker, count: int, url: str, **extra: str
) -> list[SyncdProcess]:
    replicas = []
    for n in range(1, count + 1):
        workdir = tmp / f"r{n}"
        workdir.mkdir()
        config = write_config(
            workdir,
            broker.port,
            dict.fromkeys(TENANTS, RULES),
            database=url,
            mqtt='shared_group = "syncd"',
            **extra,
        )
        env = QBO_ENV | {"SYNCD_REPLICA": f"r{n}"}
        replicas.append(SyncdProcess(config, env=env))
    for replica in replicas:
        replica.start()
    return replicas


def measure_intake(tmp: Path, broker: Broker, count: int, args: Any) -> dict[str, Any]:
    url = new_database()
    replicas = _start(tmp, broker, count, url)
    pids = [r.proc.pid for r in replicas if r.proc is not None]
    try:
        # every replica holds its share of the realms (the leases settle) first
        asyncio.run(intake(broker.port, 600, 300, f"warm{count}"))
        used = [cpu_seconds(p) for p in pids]

        async def loaded() -> tuple[float, list[float]]:
            probe = CommitProbe(url)
            task = asyncio.create_task(probe.run())
            rate = await intake(broker.port, args.messages, 2000, f"n{count}")
            probe.stop()
            await task
            return rate, probe.times

        rate, commits = asyncio.run(loaded())
        cpu = [(cpu_seconds(p) - u) for p, u in zip(pids, used, strict=True)]
    finally:
        for replica in replicas:
            replica.stop()
    q = statistics.quantiles(commits, n=100)
    return {
        "rate": rate,
        "cpu_per_event": sum(cpu) / args.messages,
        "cpu_share": [c / sum(cpu) for c in cpu],
        "commit_p50": q[49],
        "commit_p99": q[98],
    }


async def qbo_minute(
    replicas: list[SyncdProcess], broker: Broker, per_tenant: int, tag: str
) -> tuple[float, int]:
    """Invoices entering `open` for every tenant; synced per real minute.

    Each run names its invoices apart (`tag`) and counts only its own: the broker
    keeps the runs' retained states before, which would count as synced at once.
    """
    async with aiohttp.ClientSession() as http:
        for tenant in TENANTS:
            status, body = await connect(http, replicas[0], tenant=tenant)
            assert status == 200, body
        async with Crm(broker.port) as crm:
            start = time.perf_counter()
            for n in range(per_tenant):
                for tenant in TENANTS:
                    data = invoice(
                        f"Q{tag}-{n}",
                        1,
                        "open",
                        total="200.00",
                        issue_date=TODAY,
                        customer={"contact_id": "C-1", "name": "Bench Co"},
                        lines=LINES,
                    )
                    await crm.send(tenant, "invoice.upserted", data)
            total = per_tenant * len(TENANTS)

            done: set[tuple[str, str]] = set()
            seen = 0

            def synced(received: list[Any]) -> bool:
                nonlocal seen
                for r in received[seen:]:
                    if "/sync/invoice/" not in r.topic:
                        continue
                    body = r.body
                    if (
                        body.get("type") == "invoice.sync_state"
                        and body["data"].get("sync_state") == "synced"
                        and str(body["data"]["invoice_id"]).startswith(f"Q{tag}-")
                    ):
                        done.add((body["tenant"], body["data"]["invoice_id"]))
                seen = len(received)
                return len(done) >= total

            await crm.wait_for(synced, timeout=600)
            seconds = time.perf_counter() - start
        return total / seconds * 60, 0


def measure_qbo(
    tmp: Path, broker: Broker, count: int, per_tenant: int, scale: int
) -> float:
    sandbox = SandboxProcess(tmp / "sandbox", "--time-scale", str(scale))
    (tmp / "sandbox").mkdir()
    url = new_database()
    sandbox.start()
    try:
        replicas = _start(
            tmp,
            broker,
            count,
            url,
            qbo_base_url=sandbox.origin,
            qbo=f"time_scale = {scale}",
        )
        try:
            rate, _ = asyncio.run(qbo_minute(replicas, broker, per_tenant, str(count)))
        finally:
            for replica in replicas:
                replica.stop()
    finally:
        sandbox.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=12_000)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument(
        "--qbo-invoices", type=int, default=120, help="per tenant (0: no QBO part)"
    )
    parser.add_argument(
        "--time-scale",
        type=int,
        default=1,
        help="QBO-minutes a real minute (the sandbox's quotas and syncd's pacing)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]
    found: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        try:
            for count in counts:
                run = Path(tmp) / f"intake-{count}"
                run.mkdir()
                found[count] = measure_intake(run, broker, count, args)
                run = Path(tmp) / f"qbo-{count}"
                run.mkdir()
                found[count]["qbo"] = measure_qbo(
                    run, broker, count, args.qbo_invoices, args.time_scale
                )
        finally:
            broker.stop()
            drop_made()
    print(
        f"intake: {args.messages} moves over 2,000 invoices of {len(TENANTS)} tenants"
    )
    print(
        f"QBO: {args.qbo_invoices} invoices entering open per tenant, 6 companies, "
        f"QBO clock x{args.time_scale} (each company's ceiling: 1,552 a QBO-minute "
        "as syncd paces, 1,660 as QBO allows)"
    )
    for count, f in found.items():
        shares = ", ".join(f"{s:.0%}" for s in f["cpu_share"])
        print(f"--- replicas: {count}")
        print(f"intake end to end: {f['rate']:,.0f} events/s")
        print(
            f"syncd CPU per event (all replicas): {f['cpu_per_event'] * 1e6:.0f} µs "
            f"(shares: {shares})"
        )
        print(
            f"PostgreSQL commit meanwhile: p50 {f['commit_p50'] * 1000:.1f} ms, "
            f"p99 {f['commit_p99'] * 1000:.1f} ms"
        )
        print(
            f"QBO invoices synced a real minute (6 companies): {f['qbo']:,.0f}, "
            f"a QBO-minute: {f['qbo'] / args.time_scale:,.0f}"
        )


if __name__ == "__main__":
    main()
