"""Issue 14 (beyond HL8): `syncd backfill` hands the CRM's history to a running syncd.

Real parts: Mosquitto, the QBO sandbox over HTTP, syncd and the `syncd backfill` command
as processes. Asserted through QBO's own API and the sandbox's request log: every
invoice of the history from `--since` on exactly once, paid ones paid by their payments,
nobody e-mailed, what came before `--since` (and drafts, voided invoices) left out, and a
backfill killed half-way and run again writes nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.crm import invoice
from tests.integration.test_outbound import Setup
from tests.integration.test_outbound import setup as setup  # the fixture
from tests.syncd_process import QBO_ENV

COUNT = 60  # invoices of 2025 in the history
PAID = range(0, COUNT, 4)  # each of these has its payment in the history
NOT_JSON = 5 + 2 * COUNT + 4 + len(PAID) + 1  # the history's last line


def _invoice(n: int, status: str, created: str, version: int = 3) -> dict[str, Any]:
    return invoice(
        f"H-{n}",
        version,
        status,
        number=f"H{n}",
        issue_date=created,
        created_at=created,
        total="150.00",
        customer={"contact_id": f"C-{n % 5}", "name": f"History Co {n % 5}"},
        lines=[
            {
                "description": "Work",
                "item": "Consulting",
                "quantity": "1",
                "unit_price": "150.00",
            }
        ],
    )


def _line(message_type: str, data: dict[str, Any], n: int) -> str:
    body = {"id": f"crm-{n}", "type": message_type, "tenant": "acme", "data": data}
    return json.dumps(body)


def _history(path: Path) -> None:
    lines = [
        _line(
            "contact.upserted", {"contact_id": f"C-{c}", "name": f"History Co {c}"}, c
        )
        for c in range(5)
    ]
    for n in range(COUNT):
        status = "paid" if n in PAID else ("sent" if n % 2 else "open")
        day = f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}"
        lines.append(_line("invoice.upserted", _invoice(n, "draft", day, 1), 100 + n))
        lines.append(_line("invoice.upserted", _invoice(n, status, day), 200 + n))
    lines.append(_line("invoice.upserted", _invoice(900, "open", "2023-06-01"), 900))
    lines.append(_line("invoice.upserted", _invoice(901, "voided", "2025-02-02"), 901))
    lines.append(_line("invoice.upserted", _invoice(902, "draft", "2025-02-03"), 902))
    too_big = _invoice(903, "open", "2025-02-04") | {"notes": "x" * 300_000}
    lines.append(_line("invoice.upserted", too_big, 903))  # over syncd's 256 KiB
    for n in PAID:
        payment = {
            "payment_id": f"P-{n}",
            "invoice_id": f"H-{n}",
            "customer": {"contact_id": f"C-{n % 5}", "name": f"History Co {n % 5}"},
            "amount": "150.00",
            "currency": "USD",
            "date": "2025-12-01",
            "kind": "invoice",
        }
        lines.append(_line("payment.recorded", payment, 300 + n))
    lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")


def _command(config: Path, history: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "syncd",
        "backfill",
        "--config",
        str(config),
        "--tenant",
        "acme",
        "--since",
        "2025-01-01",
        "--file",
        str(history),
    ]


async def _backfill(config: Path, history: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        _command(config, history),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **QBO_ENV},
    )


async def test_history_is_synced_once_paid_and_nobody_mailed(setup: Setup, tmp_path):
    """The whole history, killed half-way and run again, then a third time for nothing.

    One invoice syncd heard of live, kept out by `[sync] since` (HL8), is in the history
    too: it is copied once. The unreadable line and the invoice too big to publish are
    listed, and the exit code says so.
    """
    live = _invoice(7, "sent" if 7 % 2 else "open", "2025-08-08")
    await setup.crm.send("acme", "invoice.upserted", live)
    kept = await setup.state("H-7", lambda d: d["sync_state"] == "skipped")
    assert kept["qbo_id"] is None
    history = tmp_path / "history.jsonl"
    _history(history)

    first = subprocess.Popen(
        _command(setup.syncd.config, history),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **QBO_ENV},
    )
    await setup.crm.wait_for(
        lambda _: sum("/sync/invoice/H-" in m.topic for m in setup.crm.received) > 20,
        timeout=60,
    )
    first.send_signal(signal.SIGKILL)  # half-way through the invoices
    await asyncio.to_thread(first.wait)

    second = await _backfill(setup.syncd.config, history)
    assert second.returncode == 1, second.stderr  # the line that is not JSON
    assert f"line {NOT_JSON}: not JSON" in second.stderr
    assert "applied before" in second.stderr
    total = COUNT + 3 + 5 + len(PAID)  # H-903 is too big to send: never handed over
    assert f"backfill: {total - 1}/{total} handed over" in second.stdout, second.stdout
    assert "invoice.upserted H-903: 300," in second.stderr
    assert "over [mqtt] max_payload_bytes" in second.stderr
    assert f"{COUNT} synced, 0 failed" in second.stdout, second.stdout

    copies = await setup.qbo_rows("select * from Invoice maxresults 1000")
    numbers = sorted(c["DocNumber"] for c in copies)
    assert numbers == sorted(f"H{n}" for n in range(COUNT))  # each once; 900-902 out
    balances = {c["DocNumber"]: c["Balance"] for c in copies}
    assert all(float(balances[f"H{n}"]) == 0 for n in PAID)
    assert all(float(balances[f"H{n}"]) == 150 for n in range(COUNT) if n not in PAID)
    payments = await setup.qbo_rows("select * from Payment maxresults 1000")
    assert len(payments) == len(PAID)
    writes = await setup.writes()
    assert not [w for w in writes if w["path"].endswith("/send")]  # nobody e-mailed
    assert any(w["path"].endswith("/batch") for w in writes)  # history goes in batches

    third = await _backfill(setup.syncd.config, history)
    assert "(0 published this run" in third.stdout, third.stdout
    again = await setup.qbo_rows("select * from Invoice maxresults 1000")
    assert len(again) == COUNT
