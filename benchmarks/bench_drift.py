"""QBO reads of a drift check (issue 27): a whole company, unchanged, then partly changed.

    python -m benchmarks.bench_drift [--invoices 10000] [--changed 100]

Every invoice goes through broker, syncd and the sandbox; then a check over HTTP of the
unchanged company (target: at most 30 reads for 10,000 invoices), then a bookkeeper
edits `--changed` invoices' lines and deletes a tenth as many, unheard (no webhook), and a
second check must find each (target: at most 1 read per changed invoice beyond the
unchanged check's). The sandbox's request log counts the reads; syncd's report says the
same and its own figure is printed beside.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_connect import connect
from tests.mosquitto import Broker
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config

TODAY = time.strftime("%Y-%m-%d", time.gmtime())


def _invoice(n: int) -> dict[str, Any]:
    line = {
        "description": "Work",
        "item": "Consulting",
        "quantity": "1",
        "unit_price": "90",
    }
    return invoice(
        f"X-{n}",
        1,
        "open",
        number=f"X{n}",
        total="90.00",
        issue_date=TODAY,
        customer={"contact_id": f"C-{n % 50}", "name": f"Customer {n % 50}"},
        lines=[line],
    )


class Api:
    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http, self.base = http, f"http://127.0.0.1:{port}/api/tenants/acme"

    async def call(self, method: str, path: str) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with self.http.request(method, self.base + path, headers=headers) as r:
            return await r.json()

    async def check(self) -> tuple[dict[str, Any], float]:
        before = (await self.call("GET", "/drift"))["checked_at"]
        started = time.monotonic()
        await self.call("POST", "/drift/check?heal=0")

        async def done() -> bool:
            return bool((await self.call("GET", "/drift"))["checked_at"] != before)

        await eventually(done, timeout=600, every=0.2)
        return await self.call("GET", "/drift"), time.monotonic() - started


async def _reads(admin: Connection, realm: str, since: int) -> tuple[int, int]:
    log = await admin.admin("GET", f"requests?realm={realm}")
    return len(log), sum(1 for r in log[since:] if r["method"] == "GET")


async def run(args: argparse.Namespace, tmp: Path) -> None:
    broker = Broker(tmp / "broker")
    broker.start()
    sandbox = SandboxProcess(tmp)
    workdir = tmp / "syncd"
    workdir.mkdir()
    rules = tmp / "rules.toml"
    rules.write_text(RULES.read_text().replace("interval = 86400 ", "interval = 0 "))
    config = write_config(
        workdir,
        broker.port,
        {"acme": rules},
        qbo_base_url=sandbox.origin,
        qbo="reconcile_interval = 3600",  # its passes would count among the reads
    )
    syncd = SyncdProcess(config, env=QBO_ENV)
    sandbox.args = ("--per-second", "0")
    sandbox.start()
    syncd.start()
    try:
        async with aiohttp.ClientSession() as http, Crm(broker.port) as crm:
            status, body = await connect(http, syncd)
            assert status == 200, body
            realm = body["realm_id"]
            admin = Connection(http, sandbox.origin)
            started = time.monotonic()
            for n in range(args.invoices):
                await crm.send("acme", "invoice.upserted", _invoice(n))
            db = DbView(workdir / "syncd.db")
            synced = "SELECT count(*) FROM invoices WHERE sync_state = 'synced'"
            await eventually(
                lambda: db.query(synced)[0][0] == args.invoices, timeout=3600
            )
            print(
                f"{args.invoices} invoices synced in {time.monotonic() - started:.0f} s"
            )
            api = Api(http, syncd.http_port)
            mark, _ = await _reads(admin, realm, 0)
            clean, took = await api.check()
            mark, reads = await _reads(admin, realm, mark)
            print(
                f"unchanged: {clean['qbo_reads']} reads by syncd's count, {reads} by "
                f"QBO's log (target <= 30), {len(clean['differences'])} differences, "
                f"{took:.1f} s"
            )
            qbo = await Connection(http, sandbox.origin).connect(realm=realm)
            changed = await _change(admin, qbo, realm, args.changed)
            mark, _ = await _reads(admin, realm, 0)
            report, took = await api.check()
            mark, reads_changed = await _reads(admin, realm, mark)
            found = {d["invoice_id"] for d in report["differences"]}
            print(
                f"{changed} changed ({args.changed} edited, {args.changed // 10} "
                f"deleted): {report['qbo_reads']} reads by syncd's count, "
                f"{reads_changed} by QBO's log, {reads_changed - reads} beyond the "
                f"unchanged check (target <= {changed}); {len(found)} invoices found "
                f"differing, {took:.1f} s"
            )
    finally:
        syncd.stop()
        sandbox.stop()
        broker.stop()


async def _change(admin: Connection, qbo: Connection, realm: str, count: int) -> int:
    """Lines edited on `count` invoices, a tenth as many deleted: no webhook told."""
    step = 7
    for k in range(count + count // 10):
        number = f"X{k * step}"
        answer = await qbo.call(
            "GET",
            "query",
            params={"query": f"select * from Invoice where DocNumber = '{number}'"},
        )
        [obj] = answer["QueryResponse"]["Invoice"]
        if k < count:
            line = {**obj["Line"][0], "Amount": "95.00"}
            line["SalesItemLineDetail"] = {
                **line["SalesItemLineDetail"],
                "UnitPrice": "95",
            }
            body = {"Line": [line]}
            await admin.admin(
                "POST", f"realms/{realm}/invoice/{obj['Id']}?webhook=0", body
            )
        else:
            await admin.admin(
                "POST", f"realms/{realm}/invoice/{obj['Id']}/delete?webhook=0"
            )
    return count + count // 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=10000)
    parser.add_argument("--changed", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
