"""The drift check over 1,000 invoices (issue 27), through broker, syncd and the sandbox.

A bookkeeper works on the company behind syncd's back: lines and tax edited by hand,
due dates changed with no webhook, payments and deletes dated 40 days back with no
webhook (past CDC's window), a customer merged, invoices made by hand and never told,
and payments whose move the rules refuse. The check finds every one with its cause and
nothing else (descriptions with stray spaces, "100" for "100.00", addresses answered
with ISO-3 countries are no difference), mends each per `[drift.owner]` with no
duplicate in QBO, and the next check finds only what the rules refuse.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_connect import connect
from tests.integration.test_outbound import TODAY, Setup
from tests.integration.test_outbound import setup as setup  # the fixture
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config

COUNT = 1000
# the test's rules: who owns what, and partly paid may not become paid (the refusal)
EDITS = [
    ("interval = 86400 ", "interval = 0 "),
    ('lines = "report"', 'lines = "crm"'),
    ('due_date = "report"', 'due_date = "crm"'),
    ('customer = "report"', 'customer = "qbo"'),
    ('status = "report"', 'status = "qbo"'),
    ('payments = "report"', 'payments = "qbo"'),
    ('existence = "report"', 'existence = "qbo"'),
    ('partially_paid = ["paid", "overdue", "voided"]', 'partially_paid = ["overdue"]'),
    (
        'open = ["draft", "sent", "partially_paid", "paid", "overdue", "voided"]',
        'open = ["draft", "sent", "partially_paid", "paid", "overdue", "voided", "deleted"]',
    ),
]


@pytest.fixture
async def drifting(tmp_path, broker, http) -> AsyncIterator[Setup]:
    """Syncd with webhooks from its own sandbox and the rules above."""
    sandbox = SandboxProcess(tmp_path)
    workdir = tmp_path / "s"
    workdir.mkdir()
    text = RULES.read_text()
    for old, new in EDITS:
        assert old in text, old
        text = text.replace(old, new)
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    config = write_config(
        workdir, broker.port, {"acme": rules}, qbo_base_url=sandbox.origin
    )
    syncd = SyncdProcess(config, env=QBO_ENV)
    sandbox.args = (
        "--webhook-url",
        f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo",
        "--webhook-delay",
        "0.05",
    )
    await asyncio.to_thread(sandbox.start)
    await asyncio.to_thread(syncd.start)
    try:
        status, body = await connect(http, syncd)
        assert status == 200, body
        qbo = await Connection(http, sandbox.origin).connect(realm=body["realm_id"])
        async with Crm(broker.port) as crm:
            yield Setup(syncd, qbo, crm, body["realm_id"])
    finally:
        syncd.stop()
        sandbox.stop()


def _invoice(n: int) -> dict[str, Any]:
    """Invoice D-n: most of a few big customers, three of a small one (merged later)."""
    customer = (
        {"contact_id": "C-small", "name": "Small Co"}
        if n < 3
        else {
            "contact_id": f"C-{n % 7}",
            "name": f"Customer {n % 7}",
            "address": {"line1": "1 Main St", "city": "Springfield", "country": "US"},
        }
    )
    return invoice(
        f"D-{n}",
        1,
        "open",
        number=f"D{n}",
        issue_date=TODAY.isoformat(),
        total="200" if n % 2 else "200.00",  # "200" is 200.00: no difference
        customer=customer,
        lines=[
            {
                "description": "  Work   done " if n % 3 else "Work done",
                "item": "Consulting",
                "quantity": "2",
                "unit_price": "100" if n % 5 else "100.00",
            }
        ],
    )


async def _api(s: Setup, method: str, path: str, expect: int = 200) -> Any:
    url = f"http://127.0.0.1:{s.syncd.http_port}/api/tenants/acme/{path}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with s.qbo.session.request(method, url, headers=headers) as r:
        assert r.status == expect, await r.text()
        return await r.json()


async def _check(s: Setup) -> dict[str, Any]:
    """A check asked for over HTTP, and its report once it is in."""
    before = (await _api(s, "GET", "drift"))["checked_at"]
    await _api(s, "POST", "drift/check", expect=202)

    async def done() -> bool:
        report = await _api(s, "GET", "drift")
        return bool(report["checked_at"] and report["checked_at"] != before)

    await eventually(done, timeout=120)
    return dict(await _api(s, "GET", "drift"))


async def _edit(s: Setup, qbo_id: str, body: dict[str, Any], query: str = "") -> None:
    await s.qbo.admin("POST", f"realms/{s.realm}/invoice/{qbo_id}{query}", body)


async def test_a_check_over_1000_invoices_finds_each_drift_and_mends_it(
    drifting: Setup,
):
    """Issue 27: every injected divergence found with its cause, none else, mended once."""
    s = drifting
    for n in range(COUNT):
        await s.crm.send("acme", "invoice.upserted", _invoice(n))
    db = DbView(s.syncd.config.parent / "syncd.db")
    await eventually(
        lambda: (
            db.query("SELECT count(*) FROM invoices WHERE sync_state = 'synced'")[0][0]
            == COUNT
        ),
        timeout=300,
    )
    await s.settled(timeout=60)
    rows = {r["DocNumber"]: r for r in await _all_invoices(s)}
    qbo = {f"D-{n}": rows[f"D{n}"] for n in range(COUNT)}

    clean = await _check(s)
    assert clean["differences"] == [], clean["differences"][:5]
    assert clean["invoices_checked"] == COUNT
    print(
        f"\nunchanged company of {COUNT} invoices: {clean['qbo_reads']} QBO reads "
        f"(target: 1 count + 1 per 1,000 = {clean['reads_target']}; a 10,000-invoice "
        "company: 11)"
    )
    assert clean["qbo_reads"] <= clean["reads_target"] == 2

    expected = await _inject(s, qbo)
    await eventually(lambda: _quiet(s), timeout=60)
    report = await _check(s)
    found = {
        (d["invoice_id"] or d["qbo_id"], d["field"], d["cause"])
        for d in report["differences"]
    }
    assert found == expected, (sorted(found - expected), sorted(expected - found))
    changed = len({key[0] for key in expected})
    print(
        f"{changed} changed invoices ({len(expected)} differences): "
        f"{report['qbo_reads']} QBO reads (target {report['reads_target']})"
    )
    assert report["qbo_reads"] <= report["reads_target"] <= 2 + changed
    said = [m.body["data"] for m in s.crm.on("acme/out/drift/found")]
    assert {
        (d["invoice_id"] or d["qbo_id"], d["field"], d["cause"]) for d in said
    } == expected

    await s.settled(timeout=60)
    after = await _check(s)
    left = {(d["invoice_id"], d["field"], d["cause"]) for d in after["differences"]}
    refused = {key for key in expected if key[2] == "refused"}
    assert left == refused, sorted(left ^ refused)
    # mended once: no duplicate invoice, every CRM invoice still one QBO invoice
    numbers = [r.get("DocNumber") for r in await _all_invoices(s)]
    assert len(numbers) == len(set(numbers)) == COUNT - 5 + 3
    history = await _api(s, "GET", "invoices/D-10")
    assert any("drift check" in h["cause"] for h in history["history"])
    metrics = await _metrics(s)
    assert metrics[("syncd_drift_open", (("tenant", "acme"),))] == len(refused)
    assert metrics[("syncd_drift_checked_total", (("tenant", "acme"),))] == 3

    # the command line: the same report, followed, listed only; exit 1 as some differ
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "syncd", "drift", "--config", str(s.syncd.config),
         "--tenant", "acme"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **QBO_ENV},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    for invoice_id, _field, _cause in refused:
        assert f"{invoice_id}  qbo" in done.stdout
    assert "a move the rules refused" in done.stdout
    assert "would" not in done.stdout  # refusals are reported, never mended
    assert f"{len(refused)} differences" in done.stdout.splitlines()[-1]


async def _metrics(s: Setup) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{s.syncd.http_port}/metrics"
    async with s.qbo.session.get(url) as r:
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _all_invoices(s: Setup) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = await s.qbo_rows(
            f"select * from Invoice startposition {len(out) + 1} maxresults 1000"
        )
        out += page
        if len(page) < 1000:
            return out


async def _quiet(s: Setup) -> bool:
    left = await s.qbo.admin("GET", "webhooks/outstanding")
    return bool(left["outstanding"] == 0)


async def _inject(
    s: Setup, qbo: dict[str, dict[str, Any]]
) -> set[tuple[str, str, str]]:
    """About 5 % of the invoices drift, some in two ways; what the check must find."""
    expected: set[tuple[str, str, str]] = set()
    for n in range(10, 20):  # lines edited by hand (its webhook arrives)
        obj = qbo[f"D-{n}"]
        line = dict(obj["Line"][0])
        line["Amount"] = "300.00"
        line["SalesItemLineDetail"] = {**line["SalesItemLineDetail"], "Qty": 3}
        await _edit(s, obj["Id"], {"Line": [line]})
        expected |= {
            (f"D-{n}", "lines", "qbo_edited"),
            (f"D-{n}", "total", "qbo_edited"),
        }
    for n in (15, 16, 20, 21, 22):  # due date changed, no webhook (two of them twice)
        obj = qbo[f"D-{n}"]
        later = (TODAY + timedelta(days=90)).isoformat()
        await _edit(s, obj["Id"], {"DueDate": later}, "?webhook=0")
        expected.add((f"D-{n}", "due_date", "qbo_edited"))
    for n in range(30, 40):  # paid by hand 40 days back: webhook and CDC both missed
        await s.qbo.admin(
            "POST",
            f"realms/{s.realm}/payment?age_days=40",
            _payment(qbo[f"D-{n}"], "200.00"),
            expect=201,
        )
        expected |= {(f"D-{n}", "balance", "missed"), (f"D-{n}", "status", "missed")}
    for n in range(40, 45):  # deleted 40 days back, unheard
        await s.qbo.admin(
            "POST", f"realms/{s.realm}/invoice/{qbo[f'D-{n}']['Id']}/delete?age_days=40"
        )
        expected.add((f"D-{n}", "invoice", "deleted_in_qbo"))
    for n in range(50, 55):  # partly then fully paid: partially_paid → paid is refused
        await s.qbo.pay_by_hand(s.realm, qbo[f"D-{n}"], "50.00")
        invoice_id = f"D-{n}"
        await s.state(invoice_id, lambda d: d["status"] == "partially_paid", 30)
        await s.qbo.pay_by_hand(s.realm, qbo[f"D-{n}"], "150.00")
        expected.add((f"D-{n}", "status", "refused"))
    small = qbo["D-0"]["CustomerRef"]["value"]  # merged into a big customer, unheard
    into = qbo["D-3"]["CustomerRef"]["value"]
    await s.qbo.admin(
        "POST", f"realms/{s.realm}/customer/{small}/merge?into={into}&webhook=0"
    )
    expected |= {(f"D-{n}", "customer", "merged_customer") for n in range(3)}
    item = qbo["D-3"]["Line"][0]["SalesItemLineDetail"]["ItemRef"]
    for k in range(3):  # made by hand, never told
        made = await s.qbo.admin(
            "POST",
            f"realms/{s.realm}/invoice?webhook=0",
            {
                "CustomerRef": {"value": into},
                "DocNumber": f"HAND-{k}",
                "Line": [
                    {
                        "DetailType": "SalesItemLineDetail",
                        "Amount": "75.00",
                        "SalesItemLineDetail": {"ItemRef": item},
                    }
                ],
            },
            expect=201,
        )
        expected.add((str(made["Invoice"]["Id"]), "invoice", "created_in_qbo"))
    return expected


def _payment(obj: dict[str, Any], amount: str) -> dict[str, Any]:
    return {
        "CustomerRef": obj["CustomerRef"],
        "TotalAmt": amount,
        "Line": [
            {
                "Amount": amount,
                "LinkedTxn": [{"TxnId": obj["Id"], "TxnType": "Invoice"}],
            }
        ],
    }


async def test_a_check_that_cannot_run_says_why_and_is_not_retried_at_once(
    setup: Setup,
):
    """A revoked grant: the check fails, says so, and its request ends.

    No loop of retries every few seconds; then the tenant, not connected any more, is
    refused at the door (409).
    """
    await setup.crm.send("acme", "invoice.upserted", _invoice(1))
    await setup.state("D-1", lambda d: d["sync_state"] == "synced")
    await setup.qbo.admin("POST", "tokens/revoke-all", {"realm": setup.realm})
    await _api(setup, "POST", "drift/check", expect=202)

    async def failed() -> bool:
        report = await _api(setup, "GET", "drift")
        return bool(
            (report["running"] or "").startswith("failed: ")
            and report["requested_at"] is None
        )

    await eventually(failed, timeout=30)
    report = await _api(setup, "GET", "drift")
    assert report["checked_at"] is None and "reconnect" in report["running"]
    refused = await _api(setup, "POST", "drift/check", expect=409)
    assert "acme" in refused["error"]
