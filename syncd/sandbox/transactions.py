"""Transactions: Invoice, SalesReceipt, Payment — lines, totals, tax, links, void, delete."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.clock import local_date, local_time
from syncd.sandbox.company import CURRENCY_NAMES, Company, custom_field_names
from syncd.sandbox.names import ref_to

CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    """Amounts are Decimal, rounded to the cent."""
    return Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)


def prepare_sale(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None, kind: str
) -> None:
    """Check and complete an Invoice or SalesReceipt: lines, discount, tax, totals."""
    customer = ref_to(company, "Customer", obj.get("CustomerRef"), "CustomerRef")
    obj["CustomerRef"] = {"value": customer["Id"], "name": customer["DisplayName"]}
    _currency(company, obj, customer)
    lines = obj.get("Line")
    if not isinstance(lines, list) or not any(_is_sale_line(line) for line in lines):
        raise faults.required("Line")
    sales = [
        _sale_line(company, line, n) for n, line in enumerate(_sale_lines(lines), 1)
    ]
    subtotal = sum((line["Amount"] for line in sales), Decimal(0))
    discount = _discount_line(company, lines, subtotal)
    obj["Line"] = [
        *sales,
        {
            "Amount": subtotal,
            "DetailType": "SubTotalLineDetail",
            "SubTotalLineDetail": {},
        },
    ]
    discount_amount = Decimal(0)
    if discount is not None:
        obj["Line"].append(discount)
        discount_amount = discount["Amount"]
    obj.setdefault("ApplyTaxAfterDiscount", False)
    tax = _tax(company, obj, sales, subtotal, discount_amount)
    obj["TotalAmt"] = money(subtotal - discount_amount + tax)
    _dates_and_numbers(company, obj, existing, customer)
    obj["CustomField"] = _custom_fields(company, obj.get("CustomField"))
    obj.setdefault("PrintStatus", "NotSet")
    obj.setdefault("EmailStatus", "NotSet")
    if obj["EmailStatus"] == "NeedToSend" and not (obj.get("BillEmail") or {}).get(
        "Address"
    ):
        raise faults.validation(
            "6000",
            "A business validation error has occurred",
            "BillEmail is required when EmailStatus is NeedToSend",
        )
    for key in ("BillAddr", "ShipAddr"):
        if key not in obj and customer.get("BillAddr"):
            obj[key] = dict(customer["BillAddr"])
    if kind == "Invoice":
        _invoice_fields(obj, existing)
    else:
        _receipt_fields(company, obj)


def _is_sale_line(line: Any) -> bool:
    return isinstance(line, dict) and line.get("DetailType") == "SalesItemLineDetail"


def _sale_lines(lines: list[Any]) -> list[dict[str, Any]]:
    return [line for line in lines if _is_sale_line(line)]


def _sale_line(company: Company, line: dict[str, Any], number: int) -> dict[str, Any]:
    detail = dict(line.get("SalesItemLineDetail") or {})
    item = ref_to(company, "Item", detail.get("ItemRef"), "ItemRef")
    detail["ItemRef"] = {"value": item["Id"], "name": item["Name"]}
    if item.get("IncomeAccountRef"):
        detail["ItemAccountRef"] = dict(item["IncomeAccountRef"])
    qty, price = detail.get("Qty"), detail.get("UnitPrice")
    if line.get("Amount") is not None:
        amount = money(line["Amount"])
    elif qty is not None and price is not None:
        amount = money(Decimal(str(qty)) * Decimal(str(price)))
    else:
        raise faults.required("Line.Amount")
    code = str((detail.get("TaxCodeRef") or {}).get("value") or "NON")
    if company.get("TaxCode", code) is None:
        raise faults.invalid_reference("TaxCode", code)
    detail["TaxCodeRef"] = {"value": code}
    out = {"Id": str(number), "LineNum": number, "Amount": amount,
           "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": detail,
           "CustomExtensions": []}  # fmt: skip
    if line.get("Description") is not None:
        out["Description"] = line["Description"]
    return out


def _discount_line(
    company: Company, lines: list[Any], subtotal: Decimal
) -> dict[str, Any] | None:
    """QBO has one invoice-level discount line, by percent or amount."""
    found = [
        ln
        for ln in lines
        if isinstance(ln, dict) and ln.get("DetailType") == "DiscountLineDetail"
    ]
    if not found:
        return None
    if len(found) > 1:
        raise faults.business("Only one discount line is allowed on a transaction.")
    detail = dict(found[0].get("DiscountLineDetail") or {})
    if detail.get("PercentBased"):
        percent = Decimal(str(detail.get("DiscountPercent", 0)))
        amount = money(subtotal * percent / 100)
    else:
        amount = money(found[0].get("Amount", 0))
    detail.setdefault(
        "DiscountAccountRef",
        {"value": _account_id(company, "Discounts given"), "name": "Discounts given"},
    )
    return {
        "Amount": amount,
        "DetailType": "DiscountLineDetail",
        "DiscountLineDetail": detail,
    }


def _tax(
    company: Company,
    obj: dict[str, Any],
    sales: list[dict[str, Any]],
    subtotal: Decimal,
    discount: Decimal,
) -> Decimal:
    """Sales tax from TxnTaxDetail.TxnTaxCodeRef over the lines coded TAX."""
    detail = obj.get("TxnTaxDetail") or {}
    ref = (detail.get("TxnTaxCodeRef") or {}).get("value")
    if not ref:
        obj["TxnTaxDetail"] = {"TotalTax": Decimal(0)}
        return Decimal(0)
    code = company.get("TaxCode", str(ref))
    if code is None or not code.get("SalesTaxRateList"):
        raise faults.invalid_reference("TaxCode", ref)
    taxable = sum(
        (
            ln["Amount"]
            for ln in sales
            if ln["SalesItemLineDetail"]["TaxCodeRef"]["value"] == "TAX"
        ),
        Decimal(0),
    )
    if obj.get("ApplyTaxAfterDiscount") and subtotal:
        taxable -= money(discount * taxable / subtotal)
    tax_lines, total = [], Decimal(0)
    for entry in code["SalesTaxRateList"]["TaxRateDetail"]:
        rate = company.get("TaxRate", entry["TaxRateRef"]["value"])
        if rate is None:
            raise faults.invalid_reference("TaxRate", entry["TaxRateRef"]["value"])
        amount = money(taxable * rate["RateValue"] / 100)
        total += amount
        tax_lines.append({"Amount": amount, "DetailType": "TaxLineDetail", "TaxLineDetail": {
            "TaxRateRef": {"value": rate["Id"]}, "PercentBased": True,
            "TaxPercent": rate["RateValue"], "NetAmountTaxable": taxable}})  # fmt: skip
    obj["TxnTaxDetail"] = {
        "TxnTaxCodeRef": {"value": code["Id"]},
        "TotalTax": total,
        "TaxLine": tax_lines,
    }
    return total


def _currency(company: Company, obj: dict[str, Any], customer: dict[str, Any]) -> None:
    """A transaction's currency is its customer's (one currency per customer)."""
    theirs = customer["CurrencyRef"]["value"]
    wanted = (obj.get("CurrencyRef") or {}).get("value") or theirs
    if wanted != theirs:
        raise faults.business(
            f"The currency of the transaction ({wanted}) must be the currency of the "
            f"customer {customer['DisplayName']!r} ({theirs})."
        )
    obj["CurrencyRef"] = {"value": wanted, "name": CURRENCY_NAMES.get(wanted, wanted)}
    if company.multicurrency:
        obj.setdefault("ExchangeRate", Decimal(1))


def _dates_and_numbers(
    company: Company,
    obj: dict[str, Any],
    existing: dict[str, Any] | None,
    customer: dict[str, Any],
) -> None:
    txn_date = (
        obj.get("TxnDate")
        or (existing or {}).get("TxnDate")
        or local_date().isoformat()
    )
    try:
        day = date.fromisoformat(txn_date)
    except ValueError:
        raise faults.validation(
            "2170", "Invalid Date", f"TxnDate {txn_date!r} is not a date", "TxnDate"
        ) from None
    obj["TxnDate"] = txn_date
    if "DueDate" not in obj:
        term = company.get(
            "Term", str((obj.get("SalesTermRef") or {}).get("value") or "3")
        )
        obj["DueDate"] = (
            day + timedelta(days=int(term["DueDays"] if term else 30))
        ).isoformat()
    number = obj.get("DocNumber")
    if existing is not None and not number:
        obj["DocNumber"] = existing.get("DocNumber")
    elif not number:
        obj["DocNumber"] = str(company.next_doc_number)
        company.next_doc_number += 1
    elif not obj.pop("_allow_duplicate_doc_number", False):
        for entity in ("Invoice", "SalesReceipt"):
            for other in company.tables[entity].values():
                if other.get("DocNumber") == number and other["Id"] != obj.get("Id"):
                    raise faults.duplicate_doc_number(number)
    obj.pop("_allow_duplicate_doc_number", None)


def _custom_fields(company: Company, fields: Any) -> list[dict[str, Any]]:
    """Custom fields by DefinitionId or by Name, as the company defines them."""
    names = custom_field_names(company)
    by_id = {v: k for k, v in names.items()}
    out = []
    for field in fields or []:
        definition = str(
            field.get("DefinitionId") or names.get(field.get("Name", ""), "")
        )
        if definition not in by_id:
            continue  # QBO drops custom fields the company does not define
        entry = {
            "DefinitionId": definition,
            "Name": by_id[definition],
            "Type": "StringType",
        }
        if field.get("StringValue") is not None:
            entry["StringValue"] = str(field["StringValue"])
        out.append(entry)
    return out


def _invoice_fields(obj: dict[str, Any], existing: dict[str, Any] | None) -> None:
    paid = Decimal(0)
    links = existing.get("LinkedTxn", []) if existing else []
    if existing is not None:
        paid = money(existing["TotalAmt"]) - money(existing["Balance"])
    if paid > obj["TotalAmt"]:
        raise faults.business(
            "The invoice total cannot be less than the payments applied to it."
        )
    obj["Balance"] = money(obj["TotalAmt"] - paid)
    obj["LinkedTxn"] = links
    for key in (
        "AllowIPNPayment",
        "AllowOnlinePayment",
        "AllowOnlineCreditCardPayment",
        "AllowOnlineACHPayment",
    ):
        obj.setdefault(key, False)


def _receipt_fields(company: Company, obj: dict[str, Any]) -> None:
    obj["Balance"] = Decimal(0)
    ref = obj.get("DepositToAccountRef") or {
        "value": _account_id(company, "Undeposited Funds")
    }
    account = ref_to(company, "Account", ref, "DepositToAccountRef")
    obj["DepositToAccountRef"] = {"value": account["Id"], "name": account["Name"]}


def _account_id(company: Company, name: str) -> str:
    accounts = company.tables["Account"].values()
    return str(next(a["Id"] for a in accounts if a["Name"] == name))


def prepare_payment(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """Check a Payment; its lines apply amounts to invoices (links made in apply_payment)."""
    customer = ref_to(company, "Customer", obj.get("CustomerRef"), "CustomerRef")
    obj["CustomerRef"] = {"value": customer["Id"], "name": customer["DisplayName"]}
    if obj.get("TotalAmt") is None:
        raise faults.required("TotalAmt")
    obj["TotalAmt"] = money(obj["TotalAmt"])
    _currency(company, obj, customer)
    obj.setdefault("TxnDate", local_date().isoformat())
    ref = obj.get("DepositToAccountRef") or {
        "value": _account_id(company, "Undeposited Funds")
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


def void_sale(obj: dict[str, Any]) -> None:
    """A voided transaction keeps its lines, at zero, and says "Voided" (qbo.md §2)."""
    for line in obj.get("Line", []):
        line["Amount"] = Decimal(0)
    obj["TotalAmt"] = Decimal(0)
    obj["Balance"] = Decimal(0)
    if "TxnTaxDetail" in obj:
        obj["TxnTaxDetail"] = {"TotalTax": Decimal(0)}
    note = obj.get("PrivateNote") or ""
    obj["PrivateNote"] = f"Voided{' - ' + note if note else ''}"


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


def mark_sent(obj: dict[str, Any], send_to: str | None) -> None:
    """After /send: EmailStatus, DeliveryInfo and, with sendTo, the BillEmail."""
    if send_to:
        obj["BillEmail"] = {"Address": send_to}
    obj["EmailStatus"] = "EmailSent"
    obj["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": local_time()}
