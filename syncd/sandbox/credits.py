"""Money going back: CreditMemo, RefundReceipt, and the Purchase a fee is booked as.

As qbo.md §11 says: a credit memo is a sale's reversal on account (its `RemainingCredit`
is applied to invoices through a Payment's lines); a refund receipt pays money back from
a Bank or Other Current Asset account and links to nothing; a Purchase is an expense
paid from a bank account (a processor's fee, §11.6 B).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.clock import local_date
from syncd.sandbox.company import Company
from syncd.sandbox.names import ref_to
from syncd.sandbox.transactions import money, prepare_sale

_PAID_FROM = ("Bank", "Other Current Asset")
_PAYMENT_TYPES = ("Cash", "Check", "CreditCard")


def prepare_credit_memo(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """A CreditMemo: item lines as a sale; its credit is what is not applied yet."""
    prepare_sale(company, obj, existing, "CreditMemo")
    applied = Decimal(0)
    if existing is not None:
        applied = money(existing["TotalAmt"]) - money(existing["RemainingCredit"])
    if applied > obj["TotalAmt"]:
        raise faults.business(
            "The credit memo total cannot be less than the credit already applied."
        )
    obj["RemainingCredit"] = obj["Balance"] = money(obj["TotalAmt"] - applied)


def prepare_refund(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """A RefundReceipt: item lines as a sale, paid from a bank or current asset."""
    if not obj.get("DepositToAccountRef"):
        raise faults.required("DepositToAccountRef")
    account = ref_to(
        company, "Account", obj["DepositToAccountRef"], "DepositToAccountRef"
    )
    if account["AccountType"] not in _PAID_FROM:
        raise faults.business(
            f"A refund is paid from a Bank or Other Current Asset account, not from "
            f"{account['Name']!r} ({account['AccountType']})."
        )
    prepare_sale(company, obj, existing, "RefundReceipt")
    obj["DepositToAccountRef"] = {"value": account["Id"], "name": account["Name"]}
    obj["Balance"] = Decimal(0)
    obj.setdefault("PaymentRefNum", "To Print")


def prepare_purchase(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """A Purchase (an expense): lines on expense accounts, paid from `AccountRef`."""
    if obj.get("PaymentType") not in _PAYMENT_TYPES:
        if not obj.get("PaymentType"):
            raise faults.required("PaymentType")
        raise faults.validation(
            "2010",
            "Request has invalid or unsupported property",
            f"PaymentType {obj['PaymentType']!r} is not one of {', '.join(_PAYMENT_TYPES)}",
            "PaymentType",
        )
    paid_from = ref_to(company, "Account", obj.get("AccountRef"), "AccountRef")
    wanted = ("Credit Card",) if obj["PaymentType"] == "CreditCard" else _PAID_FROM
    if paid_from["AccountType"] not in wanted:
        raise faults.business(
            f"A {obj['PaymentType']} purchase is paid from a {' or '.join(wanted)} "
            f"account, not from {paid_from['Name']!r}."
        )
    obj["AccountRef"] = {"value": paid_from["Id"], "name": paid_from["Name"]}
    if obj.get("EntityRef"):
        kind = obj["EntityRef"].get("type") or "Vendor"
        who = ref_to(company, kind, obj["EntityRef"], "EntityRef")
        obj["EntityRef"] = {
            "value": who["Id"],
            "name": who.get("DisplayName"),
            "type": kind,
        }
    lines = [_expense_line(company, line, n) for n, line in enumerate(_lines(obj), 1)]
    if not lines:
        raise faults.required("Line")
    obj["Line"] = lines
    obj["TotalAmt"] = money(sum((line["Amount"] for line in lines), Decimal(0)))
    obj.setdefault("TxnDate", local_date().isoformat())
    obj.setdefault("Credit", False)


def _lines(obj: dict[str, Any]) -> list[dict[str, Any]]:
    lines = obj.get("Line")
    if not isinstance(lines, list):
        raise faults.required("Line")
    return [line for line in lines if isinstance(line, dict)]


def _expense_line(
    company: Company, line: dict[str, Any], number: int
) -> dict[str, Any]:
    if line.get("DetailType") != "AccountBasedExpenseLineDetail":
        raise faults.required("Line.AccountBasedExpenseLineDetail")
    detail = dict(line.get("AccountBasedExpenseLineDetail") or {})
    account = ref_to(company, "Account", detail.get("AccountRef"), "Line.AccountRef")
    detail["AccountRef"] = {"value": account["Id"], "name": account["Name"]}
    detail.setdefault("BillableStatus", "NotBillable")
    detail.setdefault("TaxCodeRef", {"value": "NON"})
    if line.get("Amount") is None:
        raise faults.required("Line.Amount")
    amount = money(line["Amount"])
    if amount < 0:
        raise negative_amount()
    out: dict[str, Any] = {
        "Id": str(number),
        "Amount": amount,
        "DetailType": "AccountBasedExpenseLineDetail",
        "AccountBasedExpenseLineDetail": detail,
    }
    if line.get("Description") is not None:
        out["Description"] = line["Description"]
    return out


def negative_amount() -> faults.QboFault:
    """2290: a negative amount on a transaction line (§11.7)."""
    return faults.validation(
        "2290",
        "NegativeAmount",
        "Negative amounts aren't supported on transaction lines",
    )


def apply_credit(memo: dict[str, Any], amount: Decimal, sign: int) -> None:
    """Apply (sign=1) or give back (sign=-1) part of a credit memo's credit."""
    memo["RemainingCredit"] = memo["Balance"] = money(
        money(memo["RemainingCredit"]) - sign * amount
    )


def void_credit(obj: dict[str, Any]) -> None:
    """A credit memo or refund voided in QBO's UI: zero amounts, "Voided" note."""
    for line in obj.get("Line", []):
        line["Amount"] = Decimal(0)
    obj["TotalAmt"] = obj["Balance"] = Decimal(0)
    if "RemainingCredit" in obj:
        obj["RemainingCredit"] = Decimal(0)
    note = obj.get("PrivateNote") or ""
    obj["PrivateNote"] = f"Voided{' - ' + note if note else ''}"
