"""CRM snapshot → QBO Invoice body: the tax fields (issue 10 §2; HL6, HL7, RO5)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from syncd.outbound.mapping import Resolved, invoice_body
from tests.test_inbox import RULES

RESOLVED = Resolved(
    customer_id="1", items={"Consulting": "7"}, tax_codes={"California": "2"}
)


def _rules(**taxes: Any):
    return replace(RULES, taxes=replace(RULES.taxes, **taxes))


def _data(**extra: Any) -> dict[str, Any]:
    line = {
        "item": "Consulting",
        "quantity": "2",
        "unit_price": "100.00",
        "tax": "VAT20",
    }
    return {"invoice_id": "I", "lines": [line], "total": "194.40", **extra}


@pytest.mark.parametrize(
    ("discount", "total", "tax"),
    [
        ({"percent": "10"}, "194.40", Decimal("14.40")),  # 8 % of 180.00
        ({"amount": "20.00"}, "194.40", Decimal("14.40")),
        (None, "216.00", Decimal("16.00")),
    ],
)
def test_override_is_the_tax_in_the_crm_total(discount, total, tax):
    """`override`: TotalTax = total - (lines - discount), to the cent."""
    data = _data(total=total, **({"discount": discount} if discount else {}))
    body = invoice_body(
        "acme", data, _rules(method="override", code="California"), RESOLVED
    )
    assert body["TxnTaxDetail"] == {"TxnTaxCodeRef": {"value": "2"}, "TotalTax": tax}
    assert ("ApplyTaxAfterDiscount" in body) is (discount is not None)


def test_auto_overrides_only_with_automated_sales_tax():
    """`auto`: codes for ordinary companies, the override where codes are ignored."""
    rules, data = _rules(code="California"), _data(total="216.00")
    plain = invoice_body("acme", data, rules, RESOLVED)
    assert plain["TxnTaxDetail"] == {"TxnTaxCodeRef": {"value": "2"}}
    automated = invoice_body("acme", data, rules, replace(RESOLVED, automated_tax=True))
    assert automated["TxnTaxDetail"]["TotalTax"] == Decimal("16.00")


def test_a_total_below_the_lines_sends_no_override():
    """A CRM total under the lines' net is no tax: no override, the total check speaks."""
    body = invoice_body(
        "acme", _data(total="150.00"), _rules(method="override"), RESOLVED
    )
    assert "TxnTaxDetail" not in body


def test_no_tax_fields_unless_asked():
    """No code, no discount, `codes`: the body says nothing of tax (QBO's defaults)."""
    body = invoice_body("acme", _data(), _rules(method="codes"), RESOLVED)
    assert "TxnTaxDetail" not in body
    assert "ApplyTaxAfterDiscount" not in body
