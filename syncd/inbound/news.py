"""News from QBO for the CRM: invoices and customers created there, review requests.

Each is reported once (a key per news item in `inbound_events`), whichever told syncd
first: a webhook or a reconciliation pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.messages import (
    ContactCreated,
    CreditNoteImported,
    InvoiceImported,
    PaymentRefunded,
    ReviewRequested,
)
from syncd.models import ChangeSet


@dataclass(slots=True)
class QboChanges:
    """What changed in one company, as QBO's objects."""

    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    payments: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    # payments deleted or voided in QBO: Id → "deleted" or "voided" (issue 26)
    removed_payments: dict[str, str] = field(default_factory=dict)
    # refund receipts and credit memos created in QBO (issue 26)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    credit_memos: list[dict[str, Any]] = field(default_factory=list)


def imported(
    tenant: str,
    obj: dict[str, Any],
    now: datetime,
    deal_id: str | None = None,
) -> InvoiceImported:
    """An invoice created in QBO, shown in the CRM, linked to no deal (HS3, HS4)."""
    data = {
        "qbo_id": obj["Id"],
        "qbo_doc_number": obj.get("DocNumber"),
        "customer": {
            "qbo_id": obj["CustomerRef"]["value"],
            "name": obj["CustomerRef"].get("name"),
        },
        "currency": (obj.get("CurrencyRef") or {}).get("value"),
        "issue_date": obj.get("TxnDate"),
        "due_date": obj.get("DueDate"),
        "total": str(obj.get("TotalAmt")),
        "balance": str(obj.get("Balance")),
        "deal_id": deal_id,  # none until the CRM links one (HS4)
        "lines": [
            {"description": ln.get("Description"), "amount": str(ln.get("Amount"))}
            for ln in obj.get("Line", [])
            if ln.get("DetailType") == "SalesItemLineDetail"
        ],
    }
    return InvoiceImported(tenant=tenant, at=now, data=data)


def contact_created(tenant: str, obj: dict[str, Any], now: datetime) -> ContactCreated:
    """A customer new in QBO (HL1)."""
    address = obj.get("BillAddr") or {}
    data = {
        "qbo_id": obj["Id"],
        "name": obj.get("DisplayName"),
        "email": (obj.get("PrimaryEmailAddr") or {}).get("Address"),
        "phone": (obj.get("PrimaryPhone") or {}).get("FreeFormNumber"),
        "currency": (obj.get("CurrencyRef") or {}).get("value"),
        "address": {
            "line1": address.get("Line1"),
            "city": address.get("City"),
            "postal_code": address.get("PostalCode"),
            "country": address.get("Country"),
        },
    }
    return ContactCreated(tenant=tenant, at=now, data=data)


def review_requested(
    tenant: str, payment: dict[str, Any], now: datetime
) -> ReviewRequested:
    """A customer's first QBO payment, when reviews are switched on (HL2)."""
    customer = payment.get("CustomerRef") or {}
    data = {
        "qbo_customer_id": customer.get("value"),
        "name": customer.get("name"),
        "payment_id": payment["Id"],
        "date": payment.get("TxnDate"),
    }
    return ReviewRequested(tenant=tenant, at=now, data=data)


def refunded(tenant: str, obj: dict[str, Any], now: datetime) -> PaymentRefunded:
    """A refund receipt a person made in QBO for a synced customer (issue 26, HS7)."""
    data = {
        "invoice_id": None,  # QBO links a refund receipt to nothing (qbo.md §11.3)
        "qbo_refund_id": obj["Id"],
        "customer": _customer(obj),
        "amount": str(obj.get("TotalAmt")),
        "currency": (obj.get("CurrencyRef") or {}).get("value"),
        "date": obj.get("TxnDate"),
        "method": (obj.get("PaymentMethodRef") or {}).get("name"),
    }
    return PaymentRefunded(tenant=tenant, at=now, data=data)


def credit_memo_imported(
    tenant: str, obj: dict[str, Any], applied_to: list[str], now: datetime
) -> CreditNoteImported:
    """A credit memo a person made in QBO, with the synced invoices it was applied to."""
    data = {
        "qbo_id": obj["Id"],
        "qbo_doc_number": obj.get("DocNumber"),
        "customer": _customer(obj),
        "currency": (obj.get("CurrencyRef") or {}).get("value"),
        "date": obj.get("TxnDate"),
        "total": str(obj.get("TotalAmt")),
        "remaining_credit": str(obj.get("RemainingCredit")),
        "applied_to": applied_to,
        "lines": [
            {"description": ln.get("Description"), "amount": str(ln.get("Amount"))}
            for ln in obj.get("Line", [])
            if ln.get("DetailType") == "SalesItemLineDetail"
        ],
    }
    return CreditNoteImported(tenant=tenant, at=now, data=data)


def _customer(obj: dict[str, Any]) -> dict[str, Any]:
    ref = obj.get("CustomerRef") or {}
    return {"qbo_id": ref.get("value"), "name": ref.get("name")}


def first_time(key: str, realm: str, fresh: set[str], changes: ChangeSet) -> bool:
    """True the first time `key` is seen (and remember it in the same transaction)."""
    if key not in fresh or (realm, key) in changes.inbound_events:
        return False
    changes.inbound_events.append((realm, key))
    return True
