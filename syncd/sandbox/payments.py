"""Payments: applied to invoices and credit memos, taken back, voided."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncd.sandbox import credits, faults
from syncd.sandbox.clock import local_date
from syncd.sandbox.company import Company
from syncd.sandbox.names import ref_to
from syncd.sandbox.transactions import account_id, check_currency, money


def prepare_payment(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """Check a Payment; its lines apply amounts to invoices (links made in apply_payment)."""
    customer = ref_to(company, "Customer", obj.get("CustomerRef"), "CustomerRef")
    obj["CustomerRef"] = {"value": customer["Id"], "name": customer["DisplayName"]}
    if obj.get("TotalAmt") is None:
        raise faults.required("TotalAmt")
    obj["TotalAmt"] = money(obj["TotalAmt"])
    check_currency(company, obj, customer)
    obj.setdefault("TxnDate", local_date().isoformat())
    ref = obj.get("DepositToAccountRef") or {
        "value": account_id(company, "Undeposited Funds")
    }
    account = ref_to(company, "Account", ref, "DepositToAccountRef")
    obj["DepositToAccountRef"] = {"value": account["Id"], "name": account["Name"]}
    obj.setdefault("ProcessPayment", False)
    lines = [_line(company, customer, line) for line in obj.get("Line") or []]
    obj["Line"] = [line for line in lines if line is not None]
    # TotalAmt = Σ invoice lines - Σ credit lines + UnappliedAmt (qbo.md §11.2)
    unapplied = obj["TotalAmt"] - _linked(obj, "Invoice") + _linked(obj, "CreditMemo")
    if unapplied < 0:
        raise faults.business(
            "The amount applied to invoices is more than the payment's total "
            "and the credits applied."
        )
    obj["UnappliedAmt"] = money(unapplied)


_LINKABLE = ("Invoice", "CreditMemo")


def _line(
    company: Company, customer: dict[str, Any], line: Any
) -> dict[str, Any] | None:
    """One line: an amount applied to one of the customer's invoices or credit memos."""
    if not isinstance(line, dict):
        return None
    links = [t for t in line.get("LinkedTxn") or [] if t.get("TxnType") in _LINKABLE]
    if not links:
        return None
    kind = links[0]["TxnType"]
    target = company.get(kind, str(links[0].get("TxnId")))
    if target is None:
        raise faults.invalid_reference(kind, links[0].get("TxnId"))
    if target["CustomerRef"]["value"] != customer["Id"]:
        raise faults.business(
            f"A payment can only be applied to the customer's own {kind} transactions."
        )
    amount = money(line.get("Amount", 0))
    if amount < 0:
        raise credits.negative_amount()
    # checked before anything is applied: a refused payment changes nothing
    if kind == "CreditMemo" and amount > money(target["RemainingCredit"]):
        raise faults.business(
            f"The credit applied is more than the remaining credit of credit memo "
            f"{target['DocNumber']}."
        )
    if kind == "Invoice" and amount > money(target["Balance"]):
        raise faults.business(
            f"The payment is more than the open balance of invoice {target['DocNumber']}."
        )
    return {"Amount": amount, "LinkedTxn": [{"TxnId": target["Id"], "TxnType": kind}]}


def _linked(payment: dict[str, Any], kind: str) -> Decimal:
    return sum(
        (
            ln["Amount"]
            for ln in payment["Line"]
            if ln["LinkedTxn"][0]["TxnType"] == kind
        ),
        Decimal(0),
    )


def apply_payment(company: Company, payment: dict[str, Any], sign: int) -> None:
    """Apply (sign=1) or take back (sign=-1) a payment's lines on what they link."""
    for line in payment.get("Line", []):
        link = line["LinkedTxn"][0]
        amount = money(line["Amount"])
        if link["TxnType"] == "CreditMemo":
            memo = company.get("CreditMemo", link["TxnId"])
            if memo is not None:
                credits.apply_credit(memo, amount, sign)
                company.touch("CreditMemo", memo)
            continue
        invoice = company.get("Invoice", link["TxnId"])
        if invoice is None:
            continue
        invoice["Balance"] = money(invoice["Balance"] - sign * amount)
        mine = {"TxnId": payment["Id"], "TxnType": "Payment"}
        invoice["LinkedTxn"] = [t for t in invoice["LinkedTxn"] if t != mine]
        if sign > 0:
            invoice["LinkedTxn"].append(mine)
        company.touch("Invoice", invoice)
    refresh_balance(company, payment["CustomerRef"]["value"])


def detach_invoice(company: Company, invoice: dict[str, Any]) -> None:
    """A voided or deleted invoice's payments become unapplied credit."""
    for link in invoice.get("LinkedTxn", []):
        if link["TxnType"] != "Payment":
            continue
        payment = company.get("Payment", link["TxnId"])
        if payment is None:
            continue
        # the invoice's lines go, and the credits applied with them come back
        for line in payment["Line"]:
            memo_link = line["LinkedTxn"][0]
            memo = company.get("CreditMemo", memo_link["TxnId"])
            if memo_link["TxnType"] == "CreditMemo" and memo is not None:
                credits.apply_credit(memo, money(line["Amount"]), -1)
                company.touch("CreditMemo", memo)
        payment["Line"] = [
            ln
            for ln in payment["Line"]
            if ln["LinkedTxn"][0]["TxnType"] == "Invoice"
            and ln["LinkedTxn"][0]["TxnId"] != invoice["Id"]
        ]
        payment["UnappliedAmt"] = money(
            payment["TotalAmt"] - _linked(payment, "Invoice")
        )
        company.touch("Payment", payment)
    invoice["LinkedTxn"] = []


def void_payment(obj: dict[str, Any]) -> None:
    """A voided payment: zero amounts, "Voided" note (qbo.md §2 Payment)."""
    obj["TotalAmt"] = Decimal(0)
    obj["UnappliedAmt"] = Decimal(0)
    obj["Line"] = []
    obj["PrivateNote"] = "Voided"


def refresh_balance(company: Company, customer_id: str) -> None:
    """Open invoices less remaining credit and unapplied payments (qbo.md §11.1)."""
    customer = company.get("Customer", customer_id)
    if customer is None:
        return

    def owned(entity: str, key: str) -> Decimal:
        return sum(
            (
                money(o.get(key) or 0)
                for o in company.tables[entity].values()
                if o["CustomerRef"]["value"] == customer_id
            ),
            Decimal(0),
        )

    total = (
        owned("Invoice", "Balance")
        - owned("CreditMemo", "RemainingCredit")
        - owned("Payment", "UnappliedAmt")
    )
    customer["Balance"] = customer["BalanceWithJobs"] = money(total)
