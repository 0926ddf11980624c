"""Payments: applied to invoices (LinkedTxn on both sides), taken back, voided."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncd.sandbox import faults
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
    lines: list[dict[str, Any]] = []
    for line in obj.get("Line") or []:
        links = [t for t in line.get("LinkedTxn", []) if t.get("TxnType") == "Invoice"]
        if not links:
            continue
        invoice = company.get("Invoice", str(links[0].get("TxnId")))
        if invoice is None:
            raise faults.invalid_reference("Invoice", links[0].get("TxnId"))
        if invoice["CustomerRef"]["value"] != customer["Id"]:
            raise faults.business(
                "A payment can only be applied to the customer's own invoices."
            )
        lines.append(
            {
                "Amount": money(line.get("Amount", 0)),
                "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
            }
        )
    applied = sum((ln["Amount"] for ln in lines), Decimal(0))
    if applied > obj["TotalAmt"]:
        raise faults.business(
            "The amount applied to invoices is more than the payment's total."
        )
    obj["Line"] = lines
    obj["UnappliedAmt"] = money(obj["TotalAmt"] - applied)


def apply_payment(company: Company, payment: dict[str, Any], sign: int) -> None:
    """Apply (sign=1) or take back (sign=-1) a payment's lines on its invoices."""
    for line in payment.get("Line", []):
        invoice = company.get("Invoice", line["LinkedTxn"][0]["TxnId"])
        if invoice is None:
            continue
        amount = money(line["Amount"])
        if sign > 0 and amount > invoice["Balance"]:
            raise faults.business(
                f"The payment is more than the open balance of invoice {invoice['DocNumber']}."
            )
        invoice["Balance"] = money(invoice["Balance"] - sign * amount)
        link = {"TxnId": payment["Id"], "TxnType": "Payment"}
        invoice["LinkedTxn"] = [t for t in invoice["LinkedTxn"] if t != link]
        if sign > 0:
            invoice["LinkedTxn"].append(link)
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
        kept = [
            ln for ln in payment["Line"] if ln["LinkedTxn"][0]["TxnId"] != invoice["Id"]
        ]
        payment["Line"] = kept
        payment["UnappliedAmt"] = money(
            payment["TotalAmt"] - sum((ln["Amount"] for ln in kept), Decimal(0))
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
    """A customer's Balance is the sum of their open invoices."""
    customer = company.get("Customer", customer_id)
    if customer is None:
        return
    total = sum(
        (
            i["Balance"]
            for i in company.tables["Invoice"].values()
            if i["CustomerRef"]["value"] == customer_id
        ),
        Decimal(0),
    )
    customer["Balance"] = customer["BalanceWithJobs"] = money(total)
