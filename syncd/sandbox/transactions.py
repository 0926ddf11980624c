"""Sales: Invoice, SalesReceipt, CreditMemo, RefundReceipt — lines, totals, tax, numbers."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.clock import local_date, local_time
from syncd.sandbox.company import CURRENCY_NAMES, Company, custom_field_names
from syncd.sandbox.names import ref_to

CENT = Decimal("0.01")
# sales forms share one DocNumber sequence, and a number is unique among them (§11.1)
NUMBERED = ("Invoice", "SalesReceipt", "CreditMemo", "RefundReceipt")


def money(value: Any) -> Decimal:
    """Amounts are Decimal, rounded to the cent."""
    return Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)


def prepare_sale(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None, kind: str
) -> None:
    """Check and complete a sale (or its reversal): lines, discount, tax, totals.

    `kind` is Invoice, SalesReceipt, CreditMemo or RefundReceipt; their item lines are
    alike (qbo.md §11.1, §11.3), their own fields are set by the kind's module.
    """
    customer = ref_to(company, "Customer", obj.get("CustomerRef"), "CustomerRef")
    obj["CustomerRef"] = {"value": customer["Id"], "name": customer["DisplayName"]}
    check_currency(company, obj, customer)
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
    _dates_and_numbers(company, obj, existing, customer, kind)
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
    elif kind == "SalesReceipt":
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
    out = {
        "Id": str(number),
        "LineNum": number,
        "Amount": amount,
        "DetailType": "SalesItemLineDetail",
        "SalesItemLineDetail": detail,
        "CustomExtensions": [],
    }
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
        {"value": account_id(company, "Discounts given"), "name": "Discounts given"},
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
    """Sales tax: QBO's own, or, under automated sales tax, the request's override.

    With automated sales tax (qbo.md §10) QBO ignores the tax codes of lines and
    transaction and taxes every line at the rate of the customer's address (here: the
    company's one "Automated Sales Tax" rate) unless the request sets
    `TxnTaxDetail.TotalTax`, the one override it honours. Otherwise (manual sales tax)
    a request's `TotalTax` is ignored (python-quickbooks always sends `"TotalTax": 0`
    beside the code): `TxnTaxCodeRef` names the rate, applied to the lines coded TAX.
    Either way `ApplyTaxAfterDiscount` says whether the invoice-level discount comes
    off first.
    """
    detail = obj.get("TxnTaxDetail") or {}
    override = obj.pop("_tax_override", None)
    ast = automated_tax_rate(company)
    if override is not None and ast is not None:
        obj["TxnTaxDetail"] = {
            **_kept_code(detail),
            "TotalTax": money(override),
            "TaxLine": [],
        }
        return money(override)
    if ast is not None:
        taxable = sum((ln["Amount"] for ln in sales), Decimal(0))
        if obj.get("ApplyTaxAfterDiscount") and subtotal:
            taxable -= money(discount * taxable / subtotal)
        total = money(taxable * ast["RateValue"] / 100)
        obj["TxnTaxDetail"] = {
            "TotalTax": total,
            "TaxLine": [
                {
                    "Amount": total,
                    "DetailType": "TaxLineDetail",
                    "TaxLineDetail": {
                        "TaxRateRef": {"value": ast["Id"]},
                        "PercentBased": True,
                        "TaxPercent": ast["RateValue"],
                        "NetAmountTaxable": taxable,
                    },
                }
            ],
        }
        return total
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
        tax_lines.append(
            {
                "Amount": amount,
                "DetailType": "TaxLineDetail",
                "TaxLineDetail": {
                    "TaxRateRef": {"value": rate["Id"]},
                    "PercentBased": True,
                    "TaxPercent": rate["RateValue"],
                    "NetAmountTaxable": taxable,
                },
            }
        )
    obj["TxnTaxDetail"] = {
        "TxnTaxCodeRef": {"value": code["Id"]},
        "TotalTax": total,
        "TaxLine": tax_lines,
    }
    return total


AST_RATE_NAME = "Automated Sales Tax"


def automated_tax_rate(company: Company) -> dict[str, Any] | None:
    """The rate automated sales tax applies, when the company has it switched on."""
    prefs = company.tables["Preferences"]["1"]
    if not prefs["TaxPrefs"].get("PartnerTaxEnabled"):
        return None
    found = company.find("TaxRate", Name=AST_RATE_NAME)
    return found[0] if found else None


def tax_override(body: dict[str, Any]) -> Any:
    """The `TxnTaxDetail.TotalTax` a request sets, if it sets one."""
    detail = body.get("TxnTaxDetail")
    return detail.get("TotalTax") if isinstance(detail, dict) else None


def _kept_code(detail: dict[str, Any]) -> dict[str, Any]:
    ref = detail.get("TxnTaxCodeRef")
    return {"TxnTaxCodeRef": ref} if ref else {}


def check_currency(
    company: Company, obj: dict[str, Any], customer: dict[str, Any]
) -> None:
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


def _due_date(
    company: Company, obj: dict[str, Any], customer: dict[str, Any], day: date
) -> None:
    """The invoice's terms, else the customer's, else the company's default terms.

    An empty `DueDate` (python-quickbooks sends `""`) is no due date, as in QBO.
    """
    prefs = company.tables["Preferences"]["1"]["SalesFormsPrefs"]
    ref = (
        obj.get("SalesTermRef")
        or customer.get("SalesTermRef")
        or prefs.get("DefaultTerms")
    )
    term = company.get("Term", str((ref or {}).get("value")))
    if term is None and ref:
        raise faults.invalid_reference("Term", ref.get("value"))
    if term is None:
        obj["DueDate"] = day.isoformat()  # no terms anywhere: due on receipt
        return
    obj["SalesTermRef"] = {"value": term["Id"], "name": term["Name"]}
    obj["DueDate"] = (day + timedelta(days=int(term["DueDays"]))).isoformat()


def _dates_and_numbers(
    company: Company,
    obj: dict[str, Any],
    existing: dict[str, Any] | None,
    customer: dict[str, Any],
    kind: str,
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
    if kind == "Invoice" and not obj.get("DueDate"):
        _due_date(company, obj, customer, day)
    number = obj.get("DocNumber")
    if existing is not None and not number:
        obj["DocNumber"] = existing.get("DocNumber")
    elif not number:
        # the next free number: one a client set itself is never given again
        while str(company.next_doc_number) in company.doc_numbers:
            company.next_doc_number += 1
        obj["DocNumber"] = str(company.next_doc_number)
        company.next_doc_number += 1
    elif not obj.pop("_allow_duplicate_doc_number", False):
        for entity in NUMBERED:
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
        "value": account_id(company, "Undeposited Funds")
    }
    account = ref_to(company, "Account", ref, "DepositToAccountRef")
    obj["DepositToAccountRef"] = {"value": account["Id"], "name": account["Name"]}


def account_id(company: Company, name: str) -> str:
    """The Id of a seeded account, by name."""
    accounts = company.tables["Account"].values()
    return str(next(a["Id"] for a in accounts if a["Name"] == name))


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


def mark_sent(obj: dict[str, Any], send_to: str | None) -> None:
    """After /send: EmailStatus, DeliveryInfo and, with sendTo, the BillEmail."""
    if send_to:
        obj["BillEmail"] = {"Address": send_to}
    obj["EmailStatus"] = "EmailSent"
    obj["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": local_time()}
