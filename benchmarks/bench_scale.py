"""Cost at scale: a store of 10k, 100k (1M by flag) invoices, built with syncd's schema.

    python -m benchmarks.bench_scale [--sizes 10000,100000] [--events 5000]
        [--store sqlite|postgresql|both]

For each size: a store is filled (one tenant; each invoice synced, with a CRM snapshot, the
body last written to QBO, 3 history lines, 3 ledger rows and 2 finished jobs, 1 % past
due); then
- syncd starts on it (time to /readyz, RSS after start and at the end, peak RSS);
- `--events` invoice moves go through the real broker into syncd (events/s);
- in process, on the same file: a look-up by QBO id (what every webhook and CDC batch
  does), the overdue pass, and the longest wait a small CRM commit had while it ran
  (intake pause);
- the file's bytes per invoice.
With `--store postgresql` (or `both`), the same store is then copied into a PostgreSQL
database of its own (`syncd store copy`, timed) and measured the same way there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.bench_core import syncd_rate
from syncd.config import load_config
from syncd.inbound.reconcile import Reconciler
from syncd.models import ChangeSet, HistoryEntry, Invoice, SyncState
from syncd.store import Store, database, rows
from syncd.store.copy import copy_to_postgres
from syncd.store.postgres import PostgresStore
from syncd.store.sqlite import SqliteStore
from tests.mosquitto import Broker
from tests.postgres import drop_made, new_database
from tests.syncd_process import RULES, SyncdProcess, write_config

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC)
TODAY = NOW.date()
LINES = [
    {
        "description": f"Line {n} of the work done this month",
        "item": "Consulting",
        "quantity": "2",
        "unit_price": "100.00",
    }
    for n in range(4)
]


def _invoice(n: int) -> Invoice:
    due = TODAY - timedelta(days=3) if n % 100 == 0 else TODAY + timedelta(days=30)
    data: dict[str, Any] = {
        "invoice_id": f"S-{n}",
        "version": 3,
        "status": "open",
        "currency": "USD",
        "total": "800.00",
        "due_date": due.isoformat(),
        "customer": {"contact_id": f"C-{n % 500}", "name": f"Customer {n % 500}"},
        "lines": LINES,
    }
    pushed = {
        "CustomerRef": {"value": str(n % 500 + 1)},
        "DocNumber": f"S-{n}",
        "DueDate": due.isoformat(),
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": "200.00",
                "Description": line["description"],
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": "2"},
            }
            for line in LINES
        ],
    }
    return Invoice(
        tenant="acme",
        invoice_id=f"S-{n}",
        status="open",
        version=3,
        data=data,
        updated_at=NOW - timedelta(seconds=n),
        sync_state=SyncState.SYNCED,
        qbo_id=str(10_000 + n),
        qbo_sync_token=str(1),
        qbo_status="open",
        balance="800.00",
        last_synced_at=NOW,
        pushed_body=pushed,
        first_seen_at=NOW - timedelta(days=1),
    )


def build(path: Path, size: int) -> None:
    """Fill a store: syncd migrates the file, rows are written as syncd writes them."""

    async def migrate() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    marks = ", ".join("?" * len(rows.INVOICE_WRITTEN.split(", ")))
    for start in range(0, size, 10_000):
        chunk = range(start, min(size, start + 10_000))
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO invoices ({rows.INVOICE_WRITTEN}) VALUES ({marks})",
            [rows.invoice_row(_invoice(n)) for n in chunk],
        )
        db.executemany(
            "INSERT INTO history (tenant, invoice_id, from_status, to_status, cause,"
            " event_id, at) VALUES ('acme', ?, ?, ?, 'crm invoice.upserted', ?, ?)",
            [
                (f"S-{n}", before, after, f"m-{n}-{k}", NOW.isoformat())
                for n in chunk
                for k, (before, after) in enumerate(
                    [(None, "draft"), ("draft", "open"), ("open", "open")]
                )
            ],
        )
        db.executemany(
            "INSERT INTO messages VALUES ('acme', ?, ?, 'invoice.upserted', 'applied',"
            " '', ?, NULL)",
            [
                (f"m-{n}-{k}", "syncd/acme/crm/invoice/upserted", NOW.isoformat())
                for n in chunk
                for k in range(3)
            ],
        )
        db.executemany(
            "INSERT INTO jobs (tenant, queue, kind, status, attempts, next_attempt_at,"
            " payload, subject) VALUES ('acme', ?, 'invoice.push', 'done', 1, ?,"
            " x'7b7d', ?)",
            [(f"S-{n}", NOW.isoformat(), f"S-{n}") for n in chunk for _ in range(2)],
        )
        db.execute("COMMIT")
    db.close()


def _rss(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a process."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def through_syncd(
    workdir: Path, broker: Broker, events: int, check: str, url: str = ""
) -> dict[str, float]:
    """Start syncd on the store, time it, push moves through it, watch its memory.

    `url`: a PostgreSQL copy of the store, used instead of the file.
    """
    config = write_config(
        workdir,
        broker.port,
        {"acme": RULES},
        database=url or "sqlite",
        store=f'check = "{check}"',
    )
    syncd = SyncdProcess(config)
    started = time.perf_counter()
    syncd.start()
    figures = {"startup_s": time.perf_counter() - started}
    assert syncd.proc is not None
    figures["rss_start_mb"] = _rss(syncd.proc.pid)[0]
    try:
        tag = "u" if url else "x"  # each run its own invoices (and retained states)
        rate, latencies = asyncio.run(syncd_rate(broker.port, events, 1000, tag=tag))
        figures["events_per_s"] = rate
        figures["p99_ms"] = statistics.quantiles(latencies, n=100)[98] * 1000
        if not url and (
            checked := _checked_in_background(syncd, workdir / "syncd.db", check)
        ):
            # the first figures were taken while the whole-file check read the store
            figures["check_s"] = checked
            figures["events_per_s_during_check"] = figures["events_per_s"]
            rate, latencies = asyncio.run(
                syncd_rate(broker.port, events, 1000, tag="y")
            )
            figures["events_per_s"] = rate
            figures["p99_ms"] = statistics.quantiles(latencies, n=100)[98] * 1000
        figures["rss_end_mb"], figures["rss_peak_mb"] = _rss(syncd.proc.pid)
    finally:
        syncd.stop()
    return figures


def _checked_in_background(syncd: SyncdProcess, path: Path, check: str) -> float | None:
    """Seconds the background store check took (waited for); None when there was none."""
    if not database.checks_after_start(check, path):
        return None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for line in syncd.log().splitlines():
            if "store_checked" in line:
                return float(orjson.loads(line)["seconds"])
        time.sleep(0.5)
    raise RuntimeError("the background store check did not end in 5 minutes")


async def in_process(
    path: Path, size: int, url: str = "", only_open: bool = False
) -> dict[str, float]:
    """Look-ups, the overdue pass and the intake pause it causes, on the same store."""
    store: Store = PostgresStore(url) if url else SqliteStore(path)
    began = time.perf_counter()
    await store.open()
    figures = {"open_s": time.perf_counter() - began}
    if only_open:  # the schema made, nothing measured
        await store.close()
        return figures
    ids = [str(10_000 + random.randrange(size)) for _ in range(200)]
    began = time.perf_counter()
    for qbo_id in ids:
        await store.invoices_by_qbo_ids("acme", [qbo_id])
    figures["lookup_ms"] = (time.perf_counter() - began) / len(ids) * 1000
    config = load_config(ROOT / "syncd.toml", {})
    none: Any = None
    reconciler = Reconciler(config, store, none, none, lambda: NOW, lambda: None)
    waits: list[float] = []
    done = asyncio.Event()

    async def intake() -> None:  # a CRM message's commit, every 10 ms
        n = 0
        while not done.is_set():
            entry = HistoryEntry(
                tenant="acme",
                invoice_id="S-0",
                from_status="open",
                to_status="open",
                cause="bench",
                event_id=f"bench-{n}",
                at=NOW,
            )
            began = time.perf_counter()
            await store.commit(ChangeSet(history=[entry]))
            waits.append(time.perf_counter() - began)
            n += 1
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(intake())
    began = time.perf_counter()
    await reconciler._overdue("acme")
    figures["overdue_pass_s"] = time.perf_counter() - began
    done.set()
    await writer
    figures["intake_pause_ms"] = max(waits) * 1000
    overdue = await store.past_due("acme", TODAY, 10)
    figures["left_past_due"] = len(overdue)
    await store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument(
        "--store-check",
        default="quick",
        choices=("quick", "at-start", "background", "schema"),
        help="[store] check (quick: the whole-file read is in the background from 512 MB)",
    )
    parser.add_argument(
        "--store", choices=("sqlite", "postgresql", "both"), default="sqlite"
    )
    args = parser.parse_args()
    results: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        try:
            for size in [int(s) for s in args.sizes.split(",")]:
                workdir = Path(tmp) / f"s{size}"
                workdir.mkdir()
                began = time.perf_counter()
                build(workdir / "syncd.db", size)
                print(f"built {size:,} invoices in {time.perf_counter() - began:.0f} s")
                # PostgreSQL first: it is copied from the file as built
                if args.store in ("postgresql", "both"):
                    figures = _on_postgres(workdir, broker, size, args)
                    results.append((f"{size:,} postgresql", figures))
                    print(orjson.dumps(figures).decode())
                if args.store in ("sqlite", "both"):
                    figures = _on_sqlite(workdir, broker, size, args)
                    results.append((f"{size:,} sqlite", figures))
                    print(orjson.dumps(figures).decode())
        finally:
            broker.stop()
            drop_made()
    _table(results)


def _on_sqlite(
    workdir: Path, broker: Broker, size: int, args: argparse.Namespace
) -> dict[str, float]:
    figures = through_syncd(workdir, broker, args.events, args.store_check)
    figures |= asyncio.run(in_process(workdir / "syncd.db", size))
    stored = sum(os.path.getsize(p) for p in workdir.glob("syncd.db*") if p.is_file())
    figures["bytes_per_invoice"] = stored / size
    return figures | _kept_for_good(workdir / "syncd.db", size)


def _on_postgres(
    workdir: Path, broker: Broker, size: int, args: argparse.Namespace
) -> dict[str, float]:
    """The same store copied into PostgreSQL (timed), then measured there."""
    url = new_database()
    asyncio.run(in_process(workdir / "syncd.db", 1, url=url, only_open=True))
    began = time.perf_counter()
    copy_to_postgres(workdir / "syncd.db", url, None)
    figures = {"copy_s": time.perf_counter() - began}
    pg_dir = workdir / "pg"
    pg_dir.mkdir()
    figures |= through_syncd(pg_dir, broker, args.events, args.store_check, url=url)
    figures |= asyncio.run(in_process(workdir / "syncd.db", size, url=url))
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    figures["bytes_per_invoice"] = (row[0] if row else 0) / size
    return figures


_BOUNDED = ("messages", "jobs", "inbound", "inbound_events", "failures")


def _kept_for_good(path: Path, size: int) -> dict[str, float]:
    """Bytes per invoice: what stays for good, and what retention bounds.

    For good: invoices, history, links, their indexes. Bounded: the ledger, jobs,
    webhook bodies and failures, kept by age, not by how many invoices there are.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages = db.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name"
        ).fetchall()
        owner = dict(
            db.execute(
                "SELECT name, tbl_name FROM sqlite_schema WHERE name IS NOT NULL"
            )
        )
    finally:
        db.close()
    bounded = sum(n for name, n in pages if owner.get(name, name) in _BOUNDED)
    total = sum(n for _, n in pages)
    return {
        "kept_bytes_per_invoice": (total - bounded) / size,
        "bounded_bytes_per_invoice": bounded / size,
    }


def _table(results: list[tuple[str, dict[str, float]]]) -> None:
    shown = [
        ("copied from SQLite (syncd store copy)", "copy_s", "{:.1f} s"),
        ("start-up to /readyz", "startup_s", "{:.2f} s"),
        ("RSS after start / end / peak", None, ""),
        ("store check in the background", "check_s", "{:.1f} s"),
        ("events/s while it reads", "events_per_s_during_check", "{:,.0f}"),
        ("events/s through the broker", "events_per_s", "{:,.0f}"),
        ("event p99 (flat out)", "p99_ms", "{:.0f} ms"),
        ("look-up by QBO id", "lookup_ms", "{:.2f} ms"),
        ("overdue pass (1 % past due)", "overdue_pass_s", "{:.2f} s"),
        ("longest intake wait during it", "intake_pause_ms", "{:.0f} ms"),
        ("store bytes per invoice", "bytes_per_invoice", "{:,.0f}"),
        (
            "… of it kept for good (invoice, history)",
            "kept_bytes_per_invoice",
            "{:,.0f}",
        ),
        (
            "… bounded by retention (3 ledger rows, 2 jobs)",
            "bounded_bytes_per_invoice",
            "{:,.0f}",
        ),
    ]
    print()
    print("| figure | " + " | ".join(name for name, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for label, key, form in shown:
        cells = []
        for _, f in results:
            if key is None:
                cells.append(
                    f"{f['rss_start_mb']:.0f} / {f['rss_end_mb']:.0f} / "
                    f"{f['rss_peak_mb']:.0f} MB"
                )
            else:
                cells.append(form.format(f[key]) if key in f else "—")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
