"""The QBO sandbox's own request rate, so it is never the bottleneck of syncd's benchmarks.

    python -m benchmarks.bench_sandbox [--requests 5000] [--in-flight 32]

Starts `syncd sandbox` (limits lifted), connects one company over OAuth, then times reads
(GET customer/{id}), writes (POST customer) and queries over real HTTP on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.sandbox_process import Connection, SandboxProcess


async def _rate(
    count: int, in_flight: int, call: Callable[[int], Awaitable[object]]
) -> float:
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            await call(n)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - start)


async def run(origin: str, count: int, in_flight: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as http:
        qbo = await Connection(http, origin).connect()
        customer = await qbo.customer("Bench Co")
        rates = {}
        rates["read  GET customer/{id}"] = await _rate(
            count, in_flight, lambda n: qbo.call("GET", f"customer/{customer['Id']}")
        )
        rates["write POST customer"] = await _rate(
            count,
            in_flight,
            lambda n: qbo.create("Customer", {"DisplayName": f"Bench {n}"}),
        )
        by_id = {"query": f"select * from Customer where Id = '{customer['Id']}'"}
        rates["query SELECT … WHERE Id ="] = await _rate(
            count, in_flight, lambda n: qbo.call("GET", "query", params=by_id)
        )
        scan = {"query": "select * from Customer where DisplayName like 'Bench 1%'"}
        rates[f"query LIKE over {count} customers"] = await _rate(
            count // 50, in_flight, lambda n: qbo.call("GET", "query", params=scan)
        )
        return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = SandboxProcess(
            Path(tmp), "--per-minute", "100000000", "--concurrent", "100000"
        )
        sandbox.start()
        try:
            rates = asyncio.run(run(sandbox.origin, args.requests, args.in_flight))
        finally:
            sandbox.stop()
    print(
        f"sandbox, {args.requests} requests each, {args.in_flight} in flight, one realm:"
    )
    for name, rate in rates.items():
        print(f"  {name}: {rate:,.0f} requests/s")


if __name__ == "__main__":
    main()
