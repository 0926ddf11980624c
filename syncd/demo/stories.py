"""The stories the demo plays, each step printed as it happens.

Told from the seed products' help pages: an invoice finalised in the CRM is copied to
QBO, QBO e-mails it, the customer pays part then all of it in QBO and the CRM hears
each time; an invoice voided in QBO is voided in the CRM; a move the rules do not allow
is refused with the reason; a sync that fails (an item QBO does not have, with
`on_missing = "fail"`) is fixed in QBO and retried by the admin; the money after the
invoice (issue 26): a payment made in the CRM, part of it refunded there (a refund
receipt in QBO), then the payment deleted in QBO by the bookkeeper (the CRM told).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp

from syncd.demo.crm import Crm
from syncd.demo.qbo_person import QboPerson
from syncd.demo.services import Services

ACME, GLOBEX = "acme", "globex"  # default rules; `on_missing = "fail"` for items


class Table:
    """Rows printed as they come: when, which invoice, what was done, what happened."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo, self._started = echo, time.monotonic()
        self.rows: list[tuple[str, str, str]] = []
        echo(f"{'time':>6}  {'invoice':<18} {'step':<44} result")
        echo(f"{'-' * 6}  {'-' * 18} {'-' * 44} {'-' * 40}")

    def row(self, invoice: str, step: str, result: str) -> None:
        """Print one step."""
        self.rows.append((invoice, step, result))
        seconds = time.monotonic() - self._started
        self._echo(f"{seconds:5.1f}s  {invoice:<18} {step:<44} {result}")


def _invoice(
    invoice_id: str, version: int, status: str, item: str, price: str
) -> dict[str, Any]:
    total = Decimal(price) * 2
    return {
        "invoice_id": invoice_id,
        "version": version,
        "status": status,
        "number": invoice_id.removeprefix("INV-"),
        "currency": "USD",
        "total": str(total),
        "customer": {
            "contact_id": f"C-{invoice_id}",
            "name": "Acme Ltd" if invoice_id < "INV-2" else "Globex Corp",
            "billing_email": "ap@acme.test",
        },
        "lines": [
            {
                "description": f"{item}, November",
                "item": item,
                "quantity": "2",
                "unit_price": price,
            }
        ],
    }


async def play(services: Services, http: aiohttp.ClientSession, table: Table) -> None:
    """Play every story; raise TimeoutError when syncd does not answer in time."""
    async with Crm(services.broker_port) as crm:
        await _paid_in_qbo(services, http, crm, table)
        await _voided_in_qbo(services, http, crm, table)
        await _refused(crm, table)
        await _failed_and_retried(services, http, crm, table)
        await _refunded_and_removed(services, http, crm, table)


def _state(invoice_id: str, test: Callable[[dict[str, Any]], bool]) -> tuple[str, Any]:
    return f"sync/invoice/{invoice_id}", test


async def _paid_in_qbo(
    services: Services, http: aiohttp.ClientSession, crm: Crm, table: Table
) -> None:
    name = "INV-1001 (acme)"
    await crm.send(
        ACME,
        "invoice.upserted",
        _invoice("INV-1001", 1, "draft", "Consulting", "150.00"),
    )
    await crm.wait(*_state("INV-1001", lambda d: d["status"] == "draft"))
    table.row(
        name,
        "CRM: created as draft",
        "kept in the CRM only (draft is not a sync status)",
    )
    await crm.send(
        ACME,
        "invoice.upserted",
        _invoice("INV-1001", 2, "open", "Consulting", "150.00"),
    )
    synced = await crm.wait(*_state("INV-1001", lambda d: d["sync_state"] == "synced"))
    table.row(
        name,
        "CRM: finalised (draft → open)",
        f"copied to QBO as #{synced['qbo_doc_number']}, balance {synced['balance']}",
    )
    person = await QboPerson.sign_in(http, services, services.realms[ACME])
    qbo_id = str(synced["qbo_id"])
    await crm.send(
        ACME,
        "invoice.upserted",
        _invoice("INV-1001", 3, "sent", "Consulting", "150.00"),
    )
    await crm.wait(
        *_state(
            "INV-1001", lambda d: d["status"] == "sent" and d["sync_state"] == "synced"
        )
    )
    emailed = await _until(
        lambda: person.invoice(qbo_id), lambda i: i.get("EmailStatus") == "EmailSent"
    )
    table.row(
        name,
        "CRM: sent (open → sent)",
        f"QBO e-mailed it to {emailed['BillEmail']['Address']}",
    )
    await person.receive_payment(qbo_id, Decimal("100.00"))
    moved = await crm.wait(
        "out/invoice/set_status", lambda d: d["to"] == "partially_paid"
    )
    table.row(
        name, "QBO: 100.00 received", f"CRM told: {moved['from']} → {moved['to']}"
    )
    await person.receive_payment(qbo_id, Decimal("200.00"))
    moved = await crm.wait("out/invoice/set_status", lambda d: d["to"] == "paid")
    state = await crm.wait(*_state("INV-1001", lambda d: d["qbo_status"] == "paid"))
    table.row(
        name,
        "QBO: 200.00 received",
        f"CRM told: {moved['from']} → {moved['to']} (balance {state['balance']})",
    )


async def _voided_in_qbo(
    services: Services, http: aiohttp.ClientSession, crm: Crm, table: Table
) -> None:
    name = "INV-1002 (acme)"
    await crm.send(
        ACME, "invoice.upserted", _invoice("INV-1002", 1, "open", "Consulting", "80.00")
    )
    synced = await crm.wait(*_state("INV-1002", lambda d: d["sync_state"] == "synced"))
    table.row(
        name, "CRM: created open", f"copied to QBO as #{synced['qbo_doc_number']}"
    )
    person = await QboPerson.sign_in(http, services, services.realms[ACME])
    await person.void(str(synced["qbo_id"]))
    moved = await crm.wait(
        "out/invoice/set_status",
        lambda d: d["invoice_id"] == "INV-1002" and d["to"] == "voided",
    )
    table.row(name, "QBO: voided", f"CRM told: {moved['from']} → {moved['to']}")


async def _refused(crm: Crm, table: Table) -> None:
    name = "INV-1001 (acme)"
    wanted = _invoice("INV-1001", 4, "draft", "Consulting", "150.00")
    message_id = await crm.send(ACME, "invoice.upserted", wanted)
    refused = await crm.wait(
        "out/input/rejected", lambda d: d.get("message_id") == message_id
    )
    table.row(name, "CRM: paid → draft", f"refused: {refused['reason']}")


async def _failed_and_retried(
    services: Services, http: aiohttp.ClientSession, crm: Crm, table: Table
) -> None:
    name = "INV-2001 (globex)"
    await crm.send(
        GLOBEX,
        "invoice.upserted",
        _invoice("INV-2001", 1, "open", "Gold Plan", "500.00"),
    )
    failed = await crm.wait(
        "out/sync/failed", lambda d: d.get("invoice_id") == "INV-2001"
    )
    table.row(name, "CRM: created open", f"failed: {failed['message']}")
    person = await QboPerson.sign_in(http, services, services.realms[GLOBEX])
    await person.add_item("Gold Plan")
    table.row(name, "QBO: item 'Gold Plan' added", "(the cause is fixed)")
    headers = {"Authorization": f"Bearer {services.admin_token}"}
    base = f"{services.syncd_url}/api/tenants/{GLOBEX}"
    async with http.get(f"{base}/failures", headers=headers) as r:
        failures = await r.json()
    [failure] = [f for f in failures if f["invoice_id"] == "INV-2001"]
    async with http.post(
        f"{base}/failures/{failure['id']}/retry", headers=headers
    ) as r:
        r.raise_for_status()
    synced = await crm.wait(*_state("INV-2001", lambda d: d["sync_state"] == "synced"))
    table.row(name, "admin: retry", f"copied to QBO as #{synced['qbo_doc_number']}")


async def _refunded_and_removed(
    services: Services, http: aiohttp.ClientSession, crm: Crm, table: Table
) -> None:
    name = "INV-1003 (acme)"
    await crm.send(
        ACME, "invoice.upserted", _invoice("INV-1003", 1, "open", "Consulting", "60.00")
    )
    synced = await crm.wait(*_state("INV-1003", lambda d: d["sync_state"] == "synced"))
    table.row(
        name, "CRM: created open", f"copied to QBO as #{synced['qbo_doc_number']}"
    )
    payment = {
        "payment_id": "P-1003",
        "invoice_id": "INV-1003",
        "customer": {"name": "Acme Ltd"},
        "amount": "120.00",
        "currency": "USD",
        "date": str(synced["last_synced_at"])[:10],
        "method": "card",
        "kind": "invoice",
    }
    await crm.send(ACME, "payment.recorded", payment)
    await crm.send(
        ACME, "invoice.upserted", _invoice("INV-1003", 2, "paid", "Consulting", "60.00")
    )
    paid = await crm.wait(*_state("INV-1003", lambda d: d["qbo_status"] == "paid"))
    table.row(
        name, "CRM: 120.00 paid", f"QBO payment applied, balance {paid['balance']}"
    )
    refund = {
        "refund_id": "R-1003",
        "payment_id": "P-1003",
        "invoice_id": "INV-1003",
        "customer": {"name": "Acme Ltd"},
        "amount": "40.00",
        "currency": "USD",
        "date": payment["date"],
        "reason": "one hour not worked",
    }
    await crm.send(ACME, "payment.refunded", refund)
    person = await QboPerson.sign_in(http, services, services.realms[ACME])
    receipts = await _until(
        lambda: person.rows("select * from RefundReceipt", "RefundReceipt"), bool
    )
    table.row(
        name,
        "CRM: 40.00 refunded",
        f"QBO refund receipt #{receipts[0]['DocNumber']} ({receipts[0]['TotalAmt']})",
    )
    rows = await person.rows("select * from Payment", "Payment")
    [ours] = [p for p in rows if p.get("PaymentRefNum") == "P-1003"]
    await person.delete_payment(str(ours["Id"]))
    removed = await crm.wait(
        "out/payment/removed", lambda d: d["payment_id"] == "P-1003"
    )
    moved = await crm.wait(
        "out/invoice/set_status",
        lambda d: d["invoice_id"] == "INV-1003" and d["to"] == "open",
    )
    table.row(
        name,
        "QBO: the payment deleted",
        f"CRM told: {removed['how']}, balance {removed['balance']}; "
        f"{moved['from']} → {moved['to']}",
    )


async def _until(
    read: Callable[[], Any], test: Callable[[Any], bool], within: float = 20
) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await read()
        if test(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)
