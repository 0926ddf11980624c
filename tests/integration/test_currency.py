"""Issue 10 §5 (PD4): a foreign-currency invoice carries its exchange rate, never 1.

qbo.md §10: QBO books a foreign-currency invoice sent without `ExchangeRate` at 1.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.integration.test_connect import connect
from tests.integration.test_outbound import TODAY, Setup, _invoice, setup

__all__ = ["setup"]


def _euro(invoice_id: str, number: str, **extra: Any) -> dict[str, Any]:
    data = _invoice(1, "open", currency="EUR", **extra)
    data["invoice_id"], data["number"] = invoice_id, number
    data["customer"] = {
        **data["customer"],
        "contact_id": "C-10",
        "name": "Euro Co",
        "currency": "EUR",
    }
    return data


async def test_foreign_invoices_carry_the_crms_rate_or_qbos(setup: Setup, http):
    """PD4: the CRM's `exchange_rate`, else QBO's rate for the issue date, read once."""
    await setup.qbo.admin("POST", f"realms/{setup.realm}/multicurrency")
    status, body = await connect(http, setup.syncd, f"&realm={setup.realm}")
    assert status == 200, body
    assert body["preferences"]["multicurrency"] is True
    await setup.crm.send(
        "acme", "invoice.upserted", _euro("INV-1", "2001", exchange_rate="1.10")
    )
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    for invoice_id, number in (("INV-2", "2002"), ("INV-3", "2003")):
        await setup.crm.send("acme", "invoice.upserted", _euro(invoice_id, number))
        await setup.state(invoice_id, lambda d: d["sync_state"] == "synced")
    rows = {r["DocNumber"]: r for r in await setup.qbo_rows("select * from Invoice")}
    assert rows["2001"]["ExchangeRate"] == Decimal("1.10")
    assert (
        rows["2002"]["ExchangeRate"]
        == rows["2003"]["ExchangeRate"]
        == Decimal("1.0842")
    )
    assert all(r["CurrencyRef"]["value"] == "EUR" for r in rows.values())
    log = await setup.qbo.admin("GET", f"requests?realm={setup.realm}")
    asked = [r for r in log if r["path"].endswith("/exchangerate")]
    assert len(asked) == 1  # one read for the company, currency and day
    assert TODAY.isoformat() in str(asked[0])
