"""Issue 10 §2 (HL6, HL7, HS10, RO5): tax after the discount, and automated sales tax.

A CRM invoice of 2 x 100.00 + 1 x 50.00, a 10 % invoice discount, 8 % tax on both
lines: the CRM says 243.00 (tax on the discounted 225.00). QBO taxes before the discount
unless told otherwise (245.00); a company with automated sales tax ignores the codes.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.integration.test_connect import connect
from tests.integration.test_outbound import Setup, _invoice, setup

__all__ = ["setup"]

CALIFORNIA = ('code = ""', 'code = "California"')
LINES = [
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
        "tax": "VAT20",
    },
]


def _taxed(total: str) -> dict[str, Any]:
    return _invoice(1, "open", lines=LINES, discount={"percent": "10"}, total=total)


async def _synced(setup: Setup, total: str) -> dict[str, Any]:
    await setup.crm.send("acme", "invoice.upserted", _taxed(total))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    [qbo] = await setup.qbo_rows("select * from Invoice")
    return dict(qbo)


@pytest.mark.rules(*CALIFORNIA)
async def test_tax_after_the_discount_by_default(setup: Setup):
    """HL6/HL7: 8 % of 225.00 = 18.00; total 243.00 as the CRM says, to the cent."""
    qbo = await _synced(setup, "243.00")
    assert qbo["ApplyTaxAfterDiscount"] is True
    assert qbo["TxnTaxDetail"]["TotalTax"] == Decimal("18.00")
    assert qbo["TotalAmt"] == Decimal("243.00")


@pytest.mark.rules(*CALIFORNIA)
@pytest.mark.rules("after_discount = true", "after_discount = false")
async def test_tax_before_the_discount_when_the_rules_say_so(setup: Setup):
    """HL6/HL7: `after_discount = false`: 8 % of 250.00 = 20.00; total 245.00."""
    qbo = await _synced(setup, "245.00")
    assert qbo["ApplyTaxAfterDiscount"] is False
    assert qbo["TxnTaxDetail"]["TotalTax"] == Decimal("20.00")
    assert qbo["TotalAmt"] == Decimal("245.00")


async def _automated(setup: Setup, http) -> None:
    """The company switches automated sales tax on (7.25 % here); syncd reconnects."""
    await setup.qbo.admin(
        "POST", f"realms/{setup.realm}/automated-sales-tax", {"rate": "7.25"}
    )
    status, body = await connect(http, setup.syncd, f"&realm={setup.realm}")
    assert status == 200, body
    assert body["preferences"]["automated_sales_tax"] is True


@pytest.mark.rules(*CALIFORNIA)
async def test_automated_sales_tax_gets_the_crms_tax_as_an_override(setup: Setup, http):
    """qbo.md §10: codes are ignored; the CRM's 18.00 goes as TotalTax; 243.00 to the cent."""
    await _automated(setup, http)
    qbo = await _synced(setup, "243.00")
    assert qbo["TxnTaxDetail"]["TotalTax"] == Decimal("18.00")
    assert qbo["TotalAmt"] == Decimal("243.00")


@pytest.mark.rules(*CALIFORNIA)
@pytest.mark.rules('method = "auto"', 'method = "codes"')
async def test_codes_in_an_automated_company_fail_with_both_figures(setup: Setup, http):
    """Without the override QBO's own 7.25 % of 225.00 (16.31) makes 241.31: refused."""
    await _automated(setup, http)
    await setup.crm.send("acme", "invoice.upserted", _taxed("243.00"))
    failed = await setup.state("INV-1", lambda d: d["sync_state"] == "failed")
    assert (
        "QBO computed a total of 241.31 but the CRM total is 243.00" in failed["error"]
    )


@pytest.mark.rules(*CALIFORNIA)
@pytest.mark.rules('method = "auto"', 'method = "override"')
async def test_an_override_in_a_manual_tax_company_is_not_honoured(setup: Setup):
    """qbo.md §10: only automated sales tax honours TotalTax; manual tax uses the code.

    The CRM taxed before the discount (20.00, total 245.00) and syncd sends that as an
    override; QBO computes 8 % of 225.00 (18.00) from the code: refused with both figures.
    """
    await setup.crm.send("acme", "invoice.upserted", _taxed("245.00"))
    failed = await setup.state("INV-1", lambda d: d["sync_state"] == "failed")
    assert (
        "QBO computed a total of 243.00 but the CRM total is 245.00" in failed["error"]
    )
