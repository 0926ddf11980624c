"""CRM invoice snapshot → QBO Invoice body, using the tenant's Rules. Pure: no I/O.

Lines carry the CRM descriptions and their item (OD8, PD3); per-line discounts are folded
into the line amount and the invoice-level discount becomes QBO's single discount line
(HS10, HL6); taxes go through the rules' mapping table (RO5); due date = issue date +
`due_days` when the CRM gives none (PD2); custom fields map by name (HS9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from syncd.rules.model import Rules

CENT = Decimal("0.01")
DOC_NUMBER_MAX = 21  # QBO's DocNumber length


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """QBO ids found or created for what the invoice names."""

    customer_id: str
    items: dict[str, str]  # CRM item name → QBO Item Id
    tax_codes: dict[str, str] = field(default_factory=dict)  # QBO tax code name → Id
    custom_fields: dict[str, str] = field(
        default_factory=dict
    )  # QBO name → DefinitionId
    automated_tax: bool = False  # the company has automated sales tax (TaxPrefs)
    exchange_rate: Decimal | None = (
        None  # a foreign-currency invoice's, never 1 by default
    )


def money(value: Any) -> Decimal:
    """A CRM decimal string as Decimal, to the cent."""
    return Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)


def marker(tenant: str, invoice_id: str) -> str:
    """What syncd writes in the QBO invoice's PrivateNote, to find its own writes again."""
    return f"syncd:{tenant}:{invoice_id}"


def item_names(data: dict[str, Any]) -> list[str]:
    """The distinct item names the invoice's lines use."""
    return sorted(
        {str(line.get("item") or "Services") for line in data.get("lines") or []}
    )


def invoice_body(
    tenant: str, data: dict[str, Any], rules: Rules, resolved: Resolved
) -> dict[str, Any]:
    """The QBO Invoice for a CRM snapshot (no Id, SyncToken or sparse flag)."""
    lines = [_line(line, rules, resolved) for line in data.get("lines") or []]
    discount = _discount(data.get("discount"))
    body: dict[str, Any] = {
        "CustomerRef": {"value": resolved.customer_id},
        "Line": lines + ([discount] if discount else []),
        "PrivateNote": marker(tenant, data["invoice_id"]),
    }
    _taxes(body, data, rules, resolved, lines, discount)
    if data.get("number"):
        body["DocNumber"] = str(data["number"])[:DOC_NUMBER_MAX]
    if data.get("currency"):
        body["CurrencyRef"] = {"value": data["currency"]}
    if resolved.exchange_rate is not None:
        body["ExchangeRate"] = resolved.exchange_rate
    _dates(body, data, rules)
    email = (data.get("customer") or {}).get("billing_email")
    if email:
        body["BillEmail"] = {"Address": email}
    fields = _custom_fields(data, rules, resolved)
    if fields:
        body["CustomField"] = fields
    return body


def credit_memo_body(
    tenant: str, data: dict[str, Any], rules: Rules, resolved: Resolved
) -> dict[str, Any]:
    """The QBO CreditMemo for a CRM credit note: lines and taxes as an invoice's."""
    lines = [_line(line, rules, resolved) for line in data.get("lines") or []]
    body: dict[str, Any] = {
        "CustomerRef": {"value": resolved.customer_id},
        "Line": lines,
        "PrivateNote": f"syncd:{tenant}:credit_note:{data['credit_note_id']}",
    }
    _taxes(body, data, rules, resolved, lines, None)
    if data.get("currency"):
        body["CurrencyRef"] = {"value": data["currency"]}
    if data.get("issue_date"):
        body["TxnDate"] = data["issue_date"]
    return body


def changed_fields(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """The top-level fields of `new` that differ from the last body written (canonical)."""
    if old is None:
        return dict(new)
    return {k: v for k, v in new.items() if old.get(k) != canonical(v)}


def _line(line: dict[str, Any], rules: Rules, resolved: Resolved) -> dict[str, Any]:
    qty = Decimal(str(line.get("quantity") or "1"))
    price = Decimal(str(line.get("unit_price") or "0"))
    cut = money(line.get("discount") or "0")
    amount = money(line["amount"]) if line.get("amount") else money(qty * price) - cut
    detail: dict[str, Any] = {
        "ItemRef": {"value": resolved.items[str(line.get("item") or "Services")]},
        "TaxCodeRef": {"value": _tax_code(line.get("tax"), rules, resolved)},
    }
    if not cut and not line.get("amount"):
        # QBO checks Amount = Qty * UnitPrice, so both go only when no discount is folded in
        detail["Qty"], detail["UnitPrice"] = qty, price
    out: dict[str, Any] = {
        "DetailType": "SalesItemLineDetail",
        "Amount": amount,
        "SalesItemLineDetail": detail,
    }
    if line.get("description"):
        out["Description"] = str(line["description"])[:4000]
    return out


def _tax_code(crm_tax: Any, rules: Rules, resolved: Resolved) -> str:
    taxes = rules.taxes
    wanted = taxes.map.get(str(crm_tax), taxes.default) if crm_tax else taxes.default
    return resolved.tax_codes.get(wanted, wanted)


def _taxes(
    body: dict[str, Any],
    data: dict[str, Any],
    rules: Rules,
    resolved: Resolved,
    lines: list[dict[str, Any]],
    discount: dict[str, Any] | None,
) -> None:
    """HL6/HL7: tell QBO the tax the CRM computed, so that the totals agree.

    `after_discount`: QBO taxes before the invoice discount unless told otherwise; most
    CRMs tax after it. `method`: `codes` lets QBO compute from the lines' codes and the
    invoice's `code`; `override` sends the CRM's tax (total - lines + discount) as
    `TxnTaxDetail.TotalTax`, the only thing automated sales tax honours; `auto` picks
    `override` for companies with automated sales tax, else `codes`.
    """
    taxes = rules.taxes
    if discount is not None:
        body["ApplyTaxAfterDiscount"] = taxes.after_discount
    method = taxes.method
    if method == "auto":
        method = "override" if resolved.automated_tax else "codes"
    detail: dict[str, Any] = {}
    code = taxes.code
    if code:
        detail["TxnTaxCodeRef"] = {"value": resolved.tax_codes.get(code, code)}
    if method == "override":
        tax = crm_tax(data, lines, discount)
        if tax is not None:
            detail["TotalTax"] = tax
    if detail:
        body["TxnTaxDetail"] = detail


def crm_tax(
    data: dict[str, Any], lines: list[dict[str, Any]], discount: dict[str, Any] | None
) -> Decimal | None:
    """The tax in the CRM's total: total - (lines - discount); None without a total."""
    if not data.get("total"):
        return None
    subtotal = sum((line["Amount"] for line in lines), Decimal(0))
    off = Decimal(0)
    if discount is not None:
        detail = discount["DiscountLineDetail"]
        off = (
            money(subtotal * detail["DiscountPercent"] / 100)
            if detail.get("PercentBased")
            else discount["Amount"]
        )
    tax = money(data["total"]) - (subtotal - off)
    return tax if tax >= 0 else None


def _discount(discount: Any) -> dict[str, Any] | None:
    """QBO holds one invoice-level discount: by percent or by amount."""
    if not isinstance(discount, dict):
        return None
    if discount.get("percent") and Decimal(str(discount["percent"])):
        detail = {
            "PercentBased": True,
            "DiscountPercent": Decimal(str(discount["percent"])),
        }
        return {"DetailType": "DiscountLineDetail", "DiscountLineDetail": detail}
    if discount.get("amount") and money(discount["amount"]):
        return {
            "DetailType": "DiscountLineDetail",
            "Amount": money(discount["amount"]),
            "DiscountLineDetail": {"PercentBased": False},
        }
    return None


def _dates(body: dict[str, Any], data: dict[str, Any], rules: Rules) -> None:
    issue = data.get("issue_date")
    if issue:
        body["TxnDate"] = issue
    if data.get("due_date"):
        body["DueDate"] = data["due_date"]
    elif issue:
        days = rules.fields.due_days
        body["DueDate"] = (date.fromisoformat(issue) + timedelta(days=days)).isoformat()


def _custom_fields(
    data: dict[str, Any], rules: Rules, resolved: Resolved
) -> list[dict[str, Any]]:
    values = data.get("custom_fields") or {}
    out = []
    for crm_name, qbo_name in rules.fields.custom.items():
        if crm_name in values:
            entry = {
                "Name": qbo_name,
                "Type": "StringType",
                "StringValue": str(values[crm_name]),
            }
            if qbo_name in resolved.custom_fields:
                entry["DefinitionId"] = resolved.custom_fields[qbo_name]
            out.append(entry)
    return out


def canonical(value: Any) -> Any:
    """A body with its Decimals as strings: storable as JSON, comparable with a stored one."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return str(value) if isinstance(value, Decimal) else value
