"""Outbound sync end to end: MQTT → syncd → the QBO sandbox, asserted through QBO's API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_connect import connect
from tests.sandbox_process import Connection, SandboxProcess
from tests.syncd_process import ADMIN, QBO_ENV, RULES, SyncdProcess, write_config

TODAY = datetime.now(UTC).date()


class Setup:
    def __init__(
        self, syncd: SyncdProcess, qbo: Connection, crm: Crm, realm: str
    ) -> None:
        self.syncd, self.qbo, self.crm, self.realm = syncd, qbo, crm, realm

    async def qbo_rows(self, statement: str) -> list[dict[str, Any]]:
        answer = await self.qbo.call("GET", "query", params={"query": statement})
        rows = list(answer["QueryResponse"].values())
        return rows[0] if rows and isinstance(rows[0], list) else []

    async def state(
        self, invoice_id: str, predicate, timeout: float = 15
    ) -> dict[str, Any]:
        """Wait for a retained state message of the invoice that satisfies `predicate`."""
        topic = f"sync/invoice/{invoice_id}"
        await self.crm.wait_for(
            lambda r: any(predicate(m.body["data"]) for m in self.crm.on(topic)),
            timeout,
        )
        found: list[dict[str, Any]] = [
            m.body["data"] for m in self.crm.on(topic) if predicate(m.body["data"])
        ]
        return found[-1]

    async def fresh_reader(self) -> None:
        """The test's own QBO access, after a test killed every token of the company."""
        self.qbo = await Connection(self.qbo.session, self.qbo.origin).connect(
            realm=self.realm
        )

    async def admin_invoice(self, invoice_id: str) -> tuple[str, str | None]:
        """The sync state and reason the admin API shows."""
        url = f"http://127.0.0.1:{self.syncd.http_port}/api/tenants/acme/invoices/{invoice_id}"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with self.qbo.session.get(url, headers=headers) as r:
            body = await r.json()
        return body["sync_state"], body["error"]

    async def settled(self, timeout: float = 15) -> None:
        """Wait until nothing is left to happen: a positive signal, not a sleep.

        QBO's webhooks all answered, every stored one applied, no job waiting or in
        flight, and the outbox empty (what syncd had to say is out).
        """
        db = DbView(self.syncd.config.parent / "syncd.db")

        async def quiet() -> bool:
            left = await self.qbo.admin("GET", "webhooks/outstanding")
            return (
                left["outstanding"] == 0
                and db.query("SELECT count(*) FROM inbound WHERE done = 0")[0][0] == 0
                and db.query(
                    "SELECT count(*) FROM jobs WHERE status IN ('pending', 'in_flight')"
                )[0][0]
                == 0
                and db.outbox_size() == 0
            )

        await eventually(quiet, timeout=timeout)
        await self.crm.barrier()  # and what was published has reached the CRM

    async def metric(self, name: str) -> float:
        """One unlabelled sample of syncd's /metrics (0 when absent)."""
        url = f"http://127.0.0.1:{self.syncd.http_port}/metrics"
        async with self.qbo.session.get(url) as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    async def reconciled(self, rounds: int = 2, timeout: float = 20) -> None:
        """Wait until reconciliation has run `rounds` more rounds (a positive signal)."""
        name = "syncd_reconcile_rounds_total"
        target = await self.metric(name) + rounds
        await eventually(lambda: self._reached(name, target), timeout=timeout)

    async def _reached(self, name: str, target: float) -> bool:
        return await self.metric(name) >= target

    async def writes(self) -> list[dict[str, Any]]:
        log = await self.qbo.admin("GET", f"requests?realm={self.realm}")
        return [r for r in log if r["method"] == "POST"]


@pytest.fixture
async def setup(
    request, tmp_path, broker, sandbox: SandboxProcess, http
) -> AsyncIterator[Setup]:
    """Syncd connected to a fresh sandbox company; `@pytest.mark.rules(old, new)` edits the rules."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    tenants = None
    markers = list(request.node.iter_markers("rules"))
    if markers:
        text = RULES.read_text()
        for marker in markers:
            assert marker.args[0] in text, marker.args[0]
            text = text.replace(*marker.args)
        rules = tmp_path / "rules.toml"
        rules.write_text(text)
        tenants = {"acme": rules}
    qbo_marker = request.node.get_closest_marker("qbo")
    extra = {"qbo": qbo_marker.args[0]} if qbo_marker else {}
    config = write_config(
        workdir, broker.port, tenants, qbo_base_url=sandbox.origin, **extra
    )
    proc = SyncdProcess(config, env=QBO_ENV)
    await asyncio.to_thread(proc.start)
    try:
        status, body = await connect(http, proc)
        assert status == 200, body
        # the test reads QBO as the app would: its own token on the same company
        qbo = await Connection(http, sandbox.origin).connect(realm=body["realm_id"])
        async with Crm(broker.port) as crm:
            yield Setup(proc, qbo, crm, body["realm_id"])
    finally:
        proc.stop()


def _invoice(version: int, status: str, **extra: Any) -> dict[str, Any]:
    data = invoice(
        "INV-1",
        version,
        status,
        number="1001",
        issue_date=TODAY.isoformat(),
        total="200.00",
        customer={
            "contact_id": "C-9",
            "name": "Acme Ltd",
            "billing_email": "ap@acme.test",
        },
        lines=[
            {
                "description": "Ticket #42: fix login",
                "item": "Consulting",
                "quantity": "2",
                "unit_price": "100.00",
            }
        ],
    )
    data.update(extra)
    return data


def _payment(**extra: Any) -> dict[str, Any]:
    """A CRM payment of 50.00 on INV-1."""
    return {
        "payment_id": "P-1",
        "invoice_id": "INV-1",
        "customer": {"name": "Acme Ltd"},
        "amount": "50.00",
        "currency": "USD",
        "date": TODAY.isoformat(),
        "method": "card",
        "kind": "invoice",
        **extra,
    }


async def test_open_invoice_is_created_once_with_its_lines(setup: Setup):
    """RO3, OD4, OD8, HL5: entering a sync status creates the QBO invoice; lines keep descriptions."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "draft"))
    await setup.crm.send("acme", "invoice.upserted", _invoice(2, "open"))
    state = await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    assert (
        state["qbo_doc_number"],
        state["total"],
        state["balance"],
        state["qbo_status"],
    ) == ("1001", "200.00", "200.00", "open")
    [qbo] = await setup.qbo_rows("select * from Invoice")
    assert qbo["Id"] == state["qbo_id"]
    line = qbo["Line"][0]
    assert line["Description"] == "Ticket #42: fix login"
    assert line["SalesItemLineDetail"]["ItemRef"]["name"] == "Consulting"
    assert qbo["CustomerRef"]["name"] == "Acme Ltd"
    assert qbo["TotalAmt"] == Decimal("200.00")
    assert (
        qbo["DueDate"] == (TODAY + timedelta(days=30)).isoformat()
    )  # PD2: issue + due_days
    assert qbo["PrivateNote"] == "syncd:acme:INV-1"
    invoice_writes = [w for w in await setup.writes() if w["path"].endswith("/invoice")]
    assert len(invoice_writes) == 1  # steady state: one write, no read after it


async def test_edits_update_the_same_invoice_and_unchanged_makes_no_call(setup: Setup):
    """OD5: a later edit updates the same QBO invoice (sparse); an unchanged snapshot calls nothing."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    lines = [
        {
            "description": "Ticket #42: fix login",
            "item": "Consulting",
            "quantity": "3",
            "unit_price": "100.00",
        }
    ]
    await setup.crm.send(
        "acme", "invoice.upserted", _invoice(2, "open", lines=lines, total="300.00")
    )
    await setup.state(
        "INV-1",
        lambda d: (
            d["sync_state"] == "synced"
            and d["total"] == "300.00"
            and d["balance"] == "300.00"
        ),
    )
    before = len(await setup.writes())
    sent = await setup.crm.send(
        "acme", "invoice.upserted", _invoice(3, "open", lines=lines, total="300.00")
    )
    db = DbView(setup.syncd.config.parent / "syncd.db")
    await eventually(lambda: sent["id"] in db.outcomes("acme"))
    await setup.settled()
    assert len(await setup.writes()) == before
    rows = await setup.qbo_rows("select * from Invoice")
    assert len(rows) == 1
    assert rows[0]["TotalAmt"] == Decimal("300.00")
    assert rows[0]["SyncToken"] == "1"


async def test_command_sync_send_and_void(setup: Setup):
    """RO3 manual sync; OD6 send e-mails through QBO; PD7 void is final."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "draft"))
    await setup.crm.send("acme", "command.sync", {"invoice_id": "INV-1"})
    synced = await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    await setup.crm.send("acme", "command.send", {"invoice_id": "INV-1"})
    await setup.crm.wait_for(lambda r: True)

    async def sent() -> dict[str, Any] | None:
        [row] = await setup.qbo_rows("select * from Invoice")
        return row if row.get("EmailStatus") == "EmailSent" else None

    row = await eventually(sent, timeout=5)
    assert row["BillEmail"] == {"Address": "ap@acme.test"}
    await setup.crm.send("acme", "command.void", {"invoice_id": "INV-1"})
    voided = await setup.state("INV-1", lambda d: d["qbo_status"] == "voided")
    assert voided["qbo_id"] == synced["qbo_id"]
    [row] = await setup.qbo_rows("select * from Invoice")
    assert row["TotalAmt"] == 0


async def test_totals_that_differ_fail_loudly(setup: Setup):
    """HL6: QBO's TotalAmt must equal the CRM total to the cent, else the sync fails with both."""
    await setup.crm.send(
        "acme", "invoice.upserted", _invoice(1, "open", total="199.50")
    )
    failed = await setup.state("INV-1", lambda d: d["sync_state"] == "failed")
    assert "200.00" in failed["error"] and "199.50" in failed["error"]
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("acme/out/sync/failed")))
    [message] = setup.crm.on("acme/out/sync/failed")
    assert message.body["data"]["code"] == "total_mismatch"


async def test_only_invoices_created_since_the_connection(setup: Setup):
    """HL8 (issue 10 §3): `since = "connection"` is about creation, not the issue date.

    Created before the connection: skipped, and the state says so (never a silent
    `pending`). Created now but dated last week: synced. No `created_at`: syncd's first
    hearing of it counts.
    """
    before = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    last_week = (TODAY - timedelta(days=7)).isoformat()
    await setup.crm.send(
        "acme", "invoice.upserted", _invoice(1, "open", created_at=before)
    )
    skipped = await setup.state("INV-1", lambda d: d["sync_state"] == "skipped")
    assert skipped["qbo_id"] is None
    assert skipped["error"].startswith("not synced: created ")
    assert "before the QBO connection" in skipped["error"]
    now = datetime.now(UTC).isoformat()
    dated = {
        **_invoice(1, "open", issue_date=last_week, created_at=now),
        "invoice_id": "INV-2",
        "number": "1002",
    }
    undated = {
        **_invoice(1, "open", issue_date=(TODAY - timedelta(days=40)).isoformat()),
        "invoice_id": "INV-3",
        "number": "1003",
    }
    for data in (dated, undated):
        await setup.crm.send("acme", "invoice.upserted", data)
        await setup.state(data["invoice_id"], lambda d: d["sync_state"] == "synced")
    rows = await setup.qbo_rows("select * from Invoice")
    assert sorted(r["DocNumber"] for r in rows) == ["1002", "1003"]
    assert await setup.admin_invoice("INV-1") == ("skipped", skipped["error"])


@pytest.mark.rules('since = "connection"', 'since = "2026-01-01"')
async def test_since_a_date_counts_creation_too(setup: Setup):
    """HL8: `since = "<date>"` keeps out what the CRM created before that day."""
    old = {**_invoice(1, "open"), "created_at": "2025-12-31T23:59:00Z"}
    await setup.crm.send("acme", "invoice.upserted", old)
    skipped = await setup.state("INV-1", lambda d: d["sync_state"] == "skipped")
    assert "before [sync] since (2026-01-01)" in skipped["error"]


async def test_payments_link_to_the_invoice_and_receipts_stand_alone(setup: Setup):
    """HL5, RO4, HL3, HL4: Payments on the synced invoice, Sales Receipts without one.

    A partial payment leaves the right balance; a payment with no invoice is a Sales
    Receipt whose customer is matched (or created) by e-mail.
    """
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    payment = _payment()
    await setup.crm.send("acme", "payment.recorded", payment)
    state = await setup.state("INV-1", lambda d: d["balance"] == "150.00")
    assert state["qbo_status"] == "partially_paid"
    [qbo_invoice] = await setup.qbo_rows("select * from Invoice")
    assert qbo_invoice["Balance"] == Decimal("150.00")
    [qbo_payment] = await setup.qbo_rows("select * from Payment")
    assert qbo_payment["Line"][0]["LinkedTxn"] == [
        {"TxnId": qbo_invoice["Id"], "TxnType": "Invoice"}
    ]
    assert qbo_payment["DepositToAccountRef"]["name"] == "Undeposited Funds"
    await setup.crm.send(
        "acme", "payment.recorded", {**payment, "payment_id": "P-2", "amount": "150.00"}
    )
    paid = await setup.state("INV-1", lambda d: d["balance"] == "0.00")
    assert paid["qbo_status"] == "paid"
    booking = {
        "payment_id": "B-7",
        "customer": {"name": "Walk In", "email": "walk@in.test"},
        "amount": "35.00",
        "currency": "USD",
        "date": TODAY.isoformat(),
        "kind": "booking",
    }
    await setup.crm.send("acme", "payment.recorded", booking)
    [receipt] = await eventually(lambda: setup.qbo_rows("select * from SalesReceipt"))
    assert receipt["TotalAmt"] == Decimal("35.00")
    assert receipt["Line"][0]["SalesItemLineDetail"]["ItemRef"]["name"] == "Booking"
    [customer] = await setup.qbo_rows(
        "select * from Customer where DisplayName = 'Walk In'"
    )
    assert customer["PrimaryEmailAddr"] == {"Address": "walk@in.test"}
    assert len(await setup.qbo_rows("select * from Payment")) == 2
    known = await setup.qbo.customer(
        "Known Person", PrimaryEmailAddr={"Address": "known@in.test"}
    )
    await setup.crm.send(
        "acme",
        "payment.recorded",
        {
            **booking,
            "payment_id": "B-8",
            "customer": {"name": "Someone Else", "email": "known@in.test"},
        },
    )

    async def two() -> list[dict[str, Any]] | None:
        receipts = await setup.qbo_rows("select * from SalesReceipt")
        return receipts if len(receipts) == 2 else None

    receipts = await eventually(two)
    assert receipts[1]["CustomerRef"]["value"] == known["Id"]  # HL4: matched by e-mail


async def test_pdf_route_streams_qbos_pdf(setup: Setup, http):
    """HS8: the admin route streams the QBO PDF of a synced invoice (admin token needed)."""
    import io

    import pypdf

    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    url = (
        f"http://127.0.0.1:{setup.syncd.http_port}/api/tenants/acme/invoices/INV-1/pdf"
    )
    async with http.get(url) as r:
        assert r.status == 401
    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.content_type == "application/pdf"
        text = pypdf.PdfReader(io.BytesIO(await r.read())).pages[0].extract_text()
    assert "Invoice 1001" in text


@pytest.mark.rules('on_missing = "create"', 'on_missing = "fail"')
async def test_a_failure_is_listed_and_its_retry_works_once_fixed(setup: Setup, http):
    """PD3 + HS2: a missing item fails clearly; after the admin adds it, a retry syncs."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    failed = await setup.state("INV-1", lambda d: d["sync_state"] == "failed")
    assert "no item named 'Consulting'" in failed["error"]
    base = f"http://127.0.0.1:{setup.syncd.http_port}/api/tenants/acme"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{base}/failures", headers=headers) as r:
        [failure] = await r.json()
    assert (failure["operation"], failure["code"], failure["retryable"]) == (
        "invoice.push",
        "not_resolved",
        False,
    )
    await setup.qbo.create(
        "Item", {"Name": "Consulting", "IncomeAccountRef": {"value": "1"}}
    )
    async with http.post(
        f"{base}/failures/{failure['id']}/retry", headers=headers
    ) as r:
        assert r.status == 202
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    async with http.get(f"{base}/invoices?sync_state=synced", headers=headers) as r:
        assert [i["invoice_id"] for i in await r.json()] == ["INV-1"]
    async with http.get(f"{base}/invoices/INV-1", headers=headers) as r:
        detail = await r.json()
    assert [(h["from"], h["to"]) for h in detail["history"]] == [(None, "open")]


@pytest.mark.rules(
    'deposit_account = "Undeposited Funds"', 'deposit_account = "Petty Cash"'
)
async def test_a_failed_payment_is_retried_with_its_amount(setup: Setup, http):
    """HS2, HL5: a payment refused by QBO (no such deposit account) is retried whole.

    The retry runs the failed job again with what it carried (the payment's amount and
    date), once the admin has made the account in QBO.
    """
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    payment = _payment()
    await setup.crm.send("acme", "payment.recorded", payment)
    failed = await setup.crm.wait_for(
        lambda r: any("/out/sync/failed" in m.topic for m in r)
    )
    [message] = [m.body for m in failed if "/out/sync/failed" in m.topic]
    assert message["data"]["operation"] == "payment.push"
    base = f"http://127.0.0.1:{setup.syncd.http_port}/api/tenants/acme"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{base}/failures", headers=headers) as r:
        [failure] = await r.json()
    await setup.qbo.create(
        "Account", {"Name": "Petty Cash", "AccountType": "Other Current Asset"}
    )
    async with http.post(
        f"{base}/failures/{failure['id']}/retry", headers=headers
    ) as r:
        assert r.status == 202
    state = await setup.state("INV-1", lambda d: d["balance"] == "150.00")
    assert state["qbo_status"] == "partially_paid"
    [qbo_payment] = await setup.qbo_rows("select * from Payment")
    assert qbo_payment["TotalAmt"] == Decimal("50.00")
    assert qbo_payment["DepositToAccountRef"]["name"] == "Petty Cash"


async def test_money_taxes_discounts_custom_fields_currency(setup: Setup):
    """RO5, HS10, HS9, PD4: taxes, discounts, custom fields and currency.

    The tax table maps CRM taxes to QBO codes; one invoice-level discount, line discounts
    folded in; custom fields by name; the currency must be the customer's (else a clear
    failure).
    """
    lines = [
        {
            "description": "Work",
            "item": "Consulting",
            "quantity": "2",
            "unit_price": "100.00",
            "tax": "VAT20",
        },
        {
            "description": "Setup",
            "item": "Setup",
            "quantity": "1",
            "unit_price": "50.00",
            "discount": "10.00",
        },
    ]
    data = _invoice(
        1,
        "open",
        lines=lines,
        discount={"percent": "5"},
        total="228.00",
        custom_fields={"po_number": "PO-77"},
    )
    await setup.crm.send("acme", "invoice.upserted", data)
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    [qbo] = await setup.qbo_rows("select * from Invoice")
    sales = [ln for ln in qbo["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    assert [ln["Amount"] for ln in sales] == [Decimal("200.00"), Decimal("40.00")]
    assert sales[0]["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "TAX"}
    assert sales[1]["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "NON"}
    [discount] = [ln for ln in qbo["Line"] if ln["DetailType"] == "DiscountLineDetail"]
    assert discount["Amount"] == Decimal("12.00")
    assert qbo["TotalAmt"] == Decimal("228.00")
    assert qbo["CustomField"] == [
        {
            "DefinitionId": "1",
            "Name": "PO Number",
            "Type": "StringType",
            "StringValue": "PO-77",
        }
    ]
    euro = _invoice(1, "open", currency="EUR")
    euro["invoice_id"] = "INV-2"
    euro["customer"] = {
        **euro["customer"],
        "contact_id": "C-10",
        "name": "Euro Co",
        "currency": "EUR",
    }
    await setup.crm.send("acme", "invoice.upserted", euro)
    failed = await setup.state("INV-2", lambda d: d["sync_state"] == "failed")
    assert "Multicurrency is not enabled" in failed["error"]


@pytest.mark.rules("push_updates = false", "push_updates = true")
async def test_contact_changes_are_pushed_when_allowed(setup: Setup):
    """PD5: a linked customer's new e-mail and address reach QBO (only what differs)."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    contact = {
        "contact_id": "C-9",
        "name": "Acme Ltd",
        "email": "billing@acme.test",
        "address": {"line1": "1 Main St", "city": "Springfield"},
    }
    await setup.crm.send("acme", "contact.upserted", contact)

    async def updated() -> dict[str, Any] | None:
        [customer] = await setup.qbo_rows(
            "select * from Customer where DisplayName = 'Acme Ltd'"
        )
        return customer if customer.get("PrimaryEmailAddr") else None

    customer = await eventually(updated)
    assert customer["PrimaryEmailAddr"] == {"Address": "billing@acme.test"}
    assert customer["BillAddr"]["City"] == "Springfield"


async def test_send_without_a_billing_email_copies_and_says_so(setup: Setup):
    """OD9: sending needs a billing e-mail; without one the invoice is only copied."""
    data = _invoice(1, "sent")
    data["customer"] = {"contact_id": "C-9", "name": "Acme Ltd"}
    await setup.crm.send("acme", "invoice.upserted", data)
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("acme/out/sync/failed")))
    [note] = setup.crm.on("acme/out/sync/failed")
    assert "not e-mailed" in note.body["data"]["message"]
    [row] = await setup.qbo_rows("select * from Invoice")
    assert row["EmailStatus"] == "NotSet"


async def test_an_inactive_namesake_gets_a_distinct_display_name(setup: Setup):
    """OD7: QBO display names are unique even across inactive names: a new one is distinct."""
    old = await setup.qbo.customer("Acme Ltd")
    await setup.qbo.call(
        "POST",
        "customer",
        {"Id": old["Id"], "SyncToken": "0", "sparse": True, "Active": False},
    )
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    [row] = await setup.qbo_rows("select * from Invoice")
    assert row["CustomerRef"]["name"] == "Acme Ltd (C-9)"


async def test_switching_to_another_company_is_refused_while_linked(setup: Setup, http):
    """RO1: with invoices linked to one company, connecting another is refused unless forced."""
    from tests.integration.test_connect import connect

    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    status, body = await connect(http, setup.syncd)
    assert status == 409
    assert "would split the books" in body["error"]
    status, body = await connect(http, setup.syncd, "&force=1")
    assert status == 200
    assert body["realm_id"] != setup.realm


@pytest.mark.rules("currencies = []            # [] = any", 'currencies = ["USD"]')
async def test_filters_decide_eligibility(setup: Setup):
    """HS1: invoices below min_total or in another currency stay out of QBO, and say why."""
    await setup.crm.send(
        "acme",
        "invoice.upserted",
        _invoice(
            1,
            "open",
            total="0.00",
            lines=[
                {
                    "description": "Free",
                    "item": "Consulting",
                    "quantity": "1",
                    "unit_price": "0.00",
                }
            ],
        ),
    )
    small = await setup.state("INV-1", lambda d: "min_total" in (d["error"] or ""))
    assert (small["qbo_id"], small["sync_state"]) == (None, "skipped")
    other = _invoice(1, "open", currency="EUR")
    other["invoice_id"] = "INV-2"
    await setup.crm.send("acme", "invoice.upserted", other)
    euro = await setup.state("INV-2", lambda d: "currencies" in (d["error"] or ""))
    assert euro["qbo_id"] is None
    assert await setup.qbo_rows("select * from Invoice") == []
    await setup.crm.send(
        "acme", "invoice.upserted", {**_invoice(1, "open"), "invoice_id": "INV-3"}
    )
    await setup.state("INV-3", lambda d: d["sync_state"] == "synced")
    [item] = await setup.qbo_rows("select * from Item where Name = 'Consulting'")
    assert (
        item["IncomeAccountRef"]["name"] == "Services"
    )  # OD2/OD3: the rules' income account


async def test_invoice_deleted_in_the_crm_deletes_the_qbo_copy(setup: Setup):
    """PD7: `invoice.deleted` deletes the QBO invoice (delete_on is set in the rules)."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    await setup.crm.send(
        "acme", "invoice.deleted", {"invoice_id": "INV-1", "version": 2}
    )
    gone = await setup.state("INV-1", lambda d: d["qbo_status"] == "deleted")
    assert gone["sync_state"] == "synced"
    assert await setup.qbo_rows("select * from Invoice") == []
