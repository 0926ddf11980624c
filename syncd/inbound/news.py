"""News from QBO for the CRM: invoices and customers created there, review requests.

Each is reported once (a key per news item in `inbound_events`), whichever told syncd
first: a webhook or a reconciliation pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.messages import ContactCreated, InvoiceImported, ReviewRequested
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


def first_time(key: str, realm: str, fresh: set[str], changes: ChangeSet) -> bool:
    """True the first time `key` is seen (and remember it in the same transaction)."""
    if key not in fresh or (realm, key) in changes.inbound_events:
        return False
    changes.inbound_events.append((realm, key))
    return True
