"""Create, read, update (full and sparse), delete, void and send, as QBO does them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from syncd.sandbox import credits, faults, names, payments, transactions
from syncd.sandbox.company import Company

Prepare = Callable[[Company, dict[str, Any], dict[str, Any] | None], None]

_PREPARE: dict[str, Prepare] = {
    "Customer": names.prepare_customer,
    "Item": names.prepare_item,
    "Account": names.prepare_account,
    "Term": names.prepare_term,
    "Invoice": lambda c, o, e: transactions.prepare_sale(c, o, e, "Invoice"),
    "SalesReceipt": lambda c, o, e: transactions.prepare_sale(c, o, e, "SalesReceipt"),
    "Payment": payments.prepare_payment,
    "CreditMemo": credits.prepare_credit_memo,
    "RefundReceipt": credits.prepare_refund,
    "Purchase": credits.prepare_purchase,
}
WRITABLE = set(_PREPARE)
# fields QBO sets itself; a client's values for them are ignored
_SERVER_FIELDS = {
    "Id",
    "SyncToken",
    "MetaData",
    "domain",
    "sparse",
    "Balance",
    "LinkedTxn",
    "UnappliedAmt",
    "RemainingCredit",
    "status",
    "DeliveryInfo",
}
_KEEP_ON_FULL_UPDATE = {"DocNumber", "TxnDate", "LinkedTxn"}


def read(company: Company, entity: str, entity_id: str) -> dict[str, Any]:
    """Return one object, or 610."""
    obj = company.snapshot(entity, entity_id)
    if obj is None:
        raise faults.not_found(entity, entity_id, entity_id in company.deleted[entity])
    return obj


def create(
    company: Company, entity: str, body: dict[str, Any], allow_dup: bool = False
) -> dict[str, Any]:
    """Create an object; the response is the whole object QBO stored."""
    _writable(entity)
    obj = {k: copy.deepcopy(v) for k, v in body.items() if k not in _SERVER_FIELDS}
    obj["_allow_duplicate_doc_number"] = allow_dup
    obj["_tax_override"] = transactions.tax_override(body)
    _PREPARE[entity](company, obj, None)
    obj.pop("_tax_override", None)
    obj.pop("_allow_duplicate_doc_number", None)
    obj["Id"] = company.new_id()
    company.save(entity, obj, "Create")
    if entity == "Payment":
        payments.apply_payment(company, obj, +1)
    _refresh(company, obj)
    return copy.deepcopy(obj)


def update(
    company: Company, entity: str, body: dict[str, Any], allow_dup: bool = False
) -> dict[str, Any]:
    """Full update (omitted writable fields are cleared) or sparse (`"sparse": true`)."""
    _writable(entity)
    current = _current(company, entity, body)
    sparse = body.get("sparse") is True
    if sparse:
        obj = copy.deepcopy(current)
        obj.update(
            {k: copy.deepcopy(v) for k, v in body.items() if k not in _SERVER_FIELDS}
        )
    else:
        obj = {k: copy.deepcopy(v) for k, v in body.items() if k not in _SERVER_FIELDS}
        for key in _KEEP_ON_FULL_UPDATE & current.keys():
            obj.setdefault(key, copy.deepcopy(current[key]))
    for key in ("Id", "SyncToken", "MetaData"):
        obj[key] = current[key]
    if entity == "Payment":
        payments.apply_payment(company, current, -1)
    obj["_allow_duplicate_doc_number"] = allow_dup
    # only what this request says overrides the tax; a stored TotalTax is QBO's own
    obj["_tax_override"] = transactions.tax_override(body)
    try:
        _PREPARE[entity](company, obj, current)
    except faults.QboFault:
        if entity == "Payment":
            payments.apply_payment(company, current, +1)
        raise
    obj.pop("_allow_duplicate_doc_number", None)
    obj.pop("_tax_override", None)
    company.save(entity, obj, "Update")
    if entity == "Payment":
        payments.apply_payment(company, obj, +1)
    _refresh(company, obj)
    return copy.deepcopy(obj)


_TRANSACTIONS = ("Invoice", "Payment", "SalesReceipt", "CreditMemo", "RefundReceipt")
_DELETABLE = (*_TRANSACTIONS, "Purchase")
# the API voids only these; the others are voided in QBO's UI (qbo.md §11.1, §11.3)
_API_VOIDABLE = ("Invoice", "Payment", "SalesReceipt")


def delete(company: Company, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    """`operation=delete`: transactions only; the answer is `status: Deleted`."""
    if entity not in _DELETABLE:
        raise faults.unsupported(
            f"Operation Delete is not supported for {entity}: make it inactive instead"
        )
    current = _current(company, entity, body)
    if entity == "CreditMemo" and current["RemainingCredit"] < current["TotalAmt"]:
        raise faults.business(
            f"Credit memo {current['DocNumber']} is applied to a payment: remove it "
            "from the payment before deleting it."
        )
    if entity == "Invoice":
        payments.detach_invoice(company, current)
    if entity == "Payment":
        payments.apply_payment(company, current, -1)
    company.remove(entity, current["Id"])
    _refresh(company, current)
    return {"Id": current["Id"], "status": "Deleted", "domain": "QBO"}


def void(
    company: Company, entity: str, body: dict[str, Any], by_person: bool = False
) -> dict[str, Any]:
    """Void an Invoice (`operation=void`) or a Payment/SalesReceipt (`include=void`).

    A person in QBO's UI also voids credit memos and refund receipts (`by_person`).
    """
    voidable = (
        (*_API_VOIDABLE, "CreditMemo", "RefundReceipt") if by_person else _API_VOIDABLE
    )
    if entity not in voidable:
        raise faults.validation(
            "500",
            "Unsupported Operation",
            "Operation void is not supported.",
            "Operation",
        )
    current = _current(company, entity, body)
    if current.get("PrivateNote", "").startswith("Voided"):
        raise faults.business("This transaction has already been voided.")
    if entity == "Payment":
        payments.apply_payment(company, current, -1)
        payments.void_payment(current)
    elif entity in ("CreditMemo", "RefundReceipt"):
        if current.get("RemainingCredit", current["TotalAmt"]) < current["TotalAmt"]:
            raise faults.business("An applied credit memo cannot be voided.")
        credits.void_credit(current)
    else:
        if entity == "Invoice":
            payments.detach_invoice(company, current)
        transactions.void_sale(current)
    company.save(entity, current, "Void")
    _refresh(company, current)
    return copy.deepcopy(current)


def send(
    company: Company, entity: str, entity_id: str, send_to: str | None
) -> dict[str, Any]:
    """`/invoice/{id}/send`: QBO e-mails it (40 a day in a sandbox company)."""
    current = company.get(entity, entity_id)
    if current is None:
        raise faults.not_found(entity, entity_id, entity_id in company.deleted[entity])
    if not send_to and not (current.get("BillEmail") or {}).get("Address"):
        raise faults.validation(
            "2050",
            "Invalid Email Address",
            "The invoice has no BillEmail and no sendTo was given",
            "BillEmail",
        )
    if company.emails_today >= 40:
        raise faults.business(
            "You have reached the limit of 40 e-mails a day for a sandbox company."
        )
    company.emails_today += 1
    transactions.mark_sent(current, send_to)
    company.save(entity, current, "Emailed")
    return copy.deepcopy(current)


def _current(company: Company, entity: str, body: dict[str, Any]) -> dict[str, Any]:
    entity_id = str(body.get("Id") or "")
    if not entity_id:
        raise faults.required("Id")
    current = company.get(entity, entity_id)
    if current is None:
        raise faults.not_found(entity, entity_id, entity_id in company.deleted[entity])
    if body.get("SyncToken") is None:
        raise faults.required("SyncToken")
    if str(body["SyncToken"]) != current["SyncToken"]:
        raise faults.stale(entity)
    return current


def _writable(entity: str) -> None:
    if entity not in WRITABLE:
        raise faults.unsupported(
            f"Operation Create/Update is not supported for {entity}"
        )


def _refresh(company: Company, obj: dict[str, Any]) -> None:
    customer = (obj.get("CustomerRef") or {}).get("value")
    if customer:
        payments.refresh_balance(company, customer)
