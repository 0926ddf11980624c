"""Core throughput: N invoice.upserted moves through a real broker into syncd and back.

Prints the raw broker rate (QoS 1 publish → receive, no syncd) measured the same way,
then syncd's end-to-end rate (publish → committed → retained state message received)
with p50/p99 latency. Every message is durable before its ack: SQLite (synchronous=FULL)
and PostgreSQL (a database of its own on the local server), side by side in one run.

    python -m benchmarks.bench_core [--messages 20000] [--invoices 1000]
        [--store sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from tests.crm import NODELAY
from tests.mosquitto import Broker
from tests.postgres import drop_made
from tests.syncd_process import SyncdProcess, write_config

_WINDOW = 200  # publishes in flight from the CRM side


def _moves(count: int, invoices: int, tag: str = "") -> list[tuple[str, bytes]]:
    """Draft → open → draft → open …, versions growing, spread over `invoices`."""
    out = []
    for n in range(count):
        inv, step = n % invoices, n // invoices
        status = "draft" if step % 2 == 0 else "open"
        env = {
            "id": f"bench{tag}-{n}",
            "type": "invoice.upserted",
            "tenant": "acme",
            "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": {
                "invoice_id": f"INV{tag}-{inv}",
                "version": step + 1,
                "status": status,
                "currency": "USD",
                "total": "120.00",
            },
        }
        out.append(("syncd/acme/crm/invoice/upserted", json.dumps(env).encode()))
    return out


async def _publish_all(
    client: aiomqtt.Client, messages, sent_at: dict[str, float], rate: float = 0
):
    """Publish with 200 in flight; at `rate` messages/s when given, else flat out."""
    window = _WINDOW if not rate else max(1, int(rate / 100))
    began = time.perf_counter()
    for start in range(0, len(messages), window):
        chunk = messages[start : start + window]
        if rate:
            await asyncio.sleep(max(0.0, began + start / rate - time.perf_counter()))
        now = time.perf_counter()
        for _, payload in chunk:
            if payload.startswith(b"{"):
                sent_at[json.loads(payload)["id"]] = now
        await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))


async def raw_rate(port: int, count: int) -> float:
    """QoS 1 publish → receive loop through the broker alone."""
    messages = [("bench/raw", b"x" * 200) for _ in range(count)]
    async with (
        aiomqtt.Client(
            "127.0.0.1", port, identifier="raw-sub", socket_options=NODELAY
        ) as sub,
        aiomqtt.Client(
            "127.0.0.1", port, identifier="raw-pub", socket_options=NODELAY
        ) as pub,
    ):
        pub.pending_calls_threshold = 100_000
        await sub.subscribe("bench/raw", qos=1)
        start = time.perf_counter()
        received = 0

        async def consume() -> None:
            nonlocal received
            async for _ in sub.messages:
                received += 1
                if received == count:
                    return

        consumer = asyncio.create_task(consume())
        await _publish_all(pub, messages, {})
        await asyncio.wait_for(consumer, 120)
        return count / (time.perf_counter() - start)


async def syncd_rate(
    port: int, count: int, invoices: int, rate: float = 0, tag: str = ""
) -> tuple[float, list[float]]:
    """Publish moves; wait for each one's state message; return rate and latencies."""
    messages = _moves(count, invoices, tag)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    async with (
        aiomqtt.Client(
            "127.0.0.1", port, identifier="bench-sub", socket_options=NODELAY
        ) as sub,
        aiomqtt.Client(
            "127.0.0.1", port, identifier="bench-pub", socket_options=NODELAY
        ) as pub,
    ):
        pub.pending_calls_threshold = 100_000
        await sub.subscribe("syncd/acme/sync/invoice/#", qos=1)
        await sub.subscribe("syncd/acme/out/#", qos=1)

        async def consume() -> None:
            async for m in sub.messages:
                body = json.loads(m.payload)
                cause = body.get("causation_id")
                if cause in sent_at:
                    latencies.append(time.perf_counter() - sent_at.pop(cause))
                    if len(latencies) == count:
                        return

        consumer = asyncio.create_task(consume())
        start = time.perf_counter()
        await _publish_all(pub, messages, sent_at, rate)
        await asyncio.wait_for(consumer, 300)
        return count / (time.perf_counter() - start), latencies


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) a process, or one of its threads, has used so far."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--invoices", type=int, default=1_000)
    parser.add_argument("--paced-rate", type=float, default=1_000, help="msg/s")
    parser.add_argument(
        "--broker-nagle",
        action="store_true",
        help="leave Mosquitto's set_tcp_nodelay at its default (false)",
    )
    parser.add_argument(
        "--store", choices=("sqlite", "postgresql", "both"), default="both"
    )
    args = parser.parse_args()
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker", nodelay=not args.broker_nagle)
        broker.start()
        try:
            raw = asyncio.run(raw_rate(broker.port, args.messages))
            found = {s: _measure(Path(tmp), broker, s, args) for s in stores}
        finally:
            broker.stop()
            drop_made()
    print(f"messages: {args.messages} over {args.invoices} invoices")
    print(
        f"broker: mosquitto, set_tcp_nodelay {'false' if args.broker_nagle else 'true'}"
    )
    print(f"raw broker QoS1 publish→receive: {raw:,.0f} msg/s")
    for store, (rate, lat, per_event, paced_lat) in found.items():
        print(f"--- store: {store}")
        print(
            f"syncd end to end (publish → commit → state received): {rate:,.0f} events/s"
        )
        print(f"syncd / raw: {rate / raw:.0%}")
        print(
            f"syncd CPU per event: {per_event[0] * 1e6:.0f} µs, of it the main thread "
            f"{per_event[1] * 1e6:.0f} µs (one thread: at most "
            f"{1 / per_event[1]:,.0f} events/s)"
        )
        q = statistics.quantiles(lat, n=100)
        print(f"latency flat out: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")
        q = statistics.quantiles(paced_lat, n=100)
        print(
            f"latency at {args.paced_rate:,.0f} msg/s: "
            f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"
        )


def _measure(
    tmp: Path, broker: Broker, store: str, args: argparse.Namespace
) -> tuple[float, list[float], list[float], list[float]]:
    """Syncd on `store`: its rate, latencies flat out, CPU per event, paced latencies."""
    workdir = tmp / f"syncd-{store}"
    workdir.mkdir()
    syncd = SyncdProcess(write_config(workdir, broker.port, database=store))
    syncd.start()
    assert syncd.proc is not None
    pid = syncd.proc.pid
    try:
        used = cpu_seconds(pid), cpu_seconds(pid, pid)
        rate, lat = asyncio.run(syncd_rate(broker.port, args.messages, args.invoices))
        per_event = [
            (cpu_seconds(pid) - used[0]) / args.messages,
            (cpu_seconds(pid, pid) - used[1]) / args.messages,
        ]
        paced = args.messages // 4
        _, paced_lat = asyncio.run(
            syncd_rate(broker.port, paced, args.invoices, args.paced_rate, store[0])
        )
    finally:
        syncd.stop()
    return rate, lat, per_event, paced_lat


if __name__ == "__main__":
    main()
