"""Name-list objects: Customer, Item, Account (QBO's validation and server-filled fields)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.company import CURRENCY_NAMES, HOME_CURRENCY, Company

_NAME_PARTS = ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")


def prepare_customer(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """Check and complete a Customer (6080 no name, 6240 duplicate DisplayName)."""
    if not obj.get("DisplayName"):
        parts = [str(obj[p]) for p in _NAME_PARTS if obj.get(p)]
        if not parts:
            raise faults.validation(
                "6080",
                "No Name Provided",
                "Please provide a name: DisplayName, or GivenName, FamilyName, …",
            )
        obj["DisplayName"] = " ".join(parts)
    _unique_display_name(company, obj["DisplayName"], obj.get("Id"))
    obj["CurrencyRef"] = _currency(company, obj.get("CurrencyRef"), existing)
    obj.setdefault("FullyQualifiedName", obj["DisplayName"])
    obj["FullyQualifiedName"] = obj["DisplayName"]
    obj.setdefault("PrintOnCheckName", obj["DisplayName"])
    obj.setdefault("Active", True)
    obj.setdefault("Taxable", True)
    obj.setdefault("Job", False)
    obj.setdefault("BillWithParent", False)
    obj.setdefault("PreferredDeliveryMethod", "Print")
    obj.setdefault("IsProject", False)
    obj["Balance"] = existing["Balance"] if existing else Decimal(0)
    obj["BalanceWithJobs"] = obj["Balance"]
    if "BillAddr" in obj and isinstance(obj["BillAddr"], dict):
        obj["BillAddr"].setdefault("Id", company.new_id())


def _unique_display_name(company: Company, name: str, own_id: str | None) -> None:
    """DisplayName is unique across customers, vendors and employees (case-blind)."""
    if _taken(company, "Customer", name, own_id):
        raise faults.duplicate_name()


def _taken(company: Company, entity: str, name: str, own_id: str | None) -> bool:
    """Whether another object holds this unique name (an index, not a scan)."""
    owner = company.name_owner(entity, name)
    return owner is not None and owner.split(":", 1)[1] != own_id


def _currency(
    company: Company, ref: Any, existing: dict[str, Any] | None
) -> dict[str, str]:
    """One currency per customer; a foreign one needs multicurrency."""
    if (
        existing is not None
        and ref
        and ref.get("value") != existing["CurrencyRef"]["value"]
    ):
        raise faults.business(
            "You can't change the currency of a customer that is in use."
        )
    if not ref:
        return dict(existing["CurrencyRef"]) if existing else dict(HOME_CURRENCY)
    code = str(ref.get("value", ""))
    if code != HOME_CURRENCY["value"] and not company.multicurrency:
        raise faults.business(
            f"Multicurrency is not enabled: the currency {code} cannot be used. "
            "Turn on multicurrency in QuickBooks to use other currencies."
        )
    return {"value": code, "name": CURRENCY_NAMES.get(code, code)}


def prepare_item(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """Check and complete an Item (Service items need an income account)."""
    if not obj.get("Name"):
        raise faults.required("Name")
    if _taken(company, "Item", obj["Name"], obj.get("Id")):
        raise faults.duplicate_name()
    obj.setdefault("Type", "Service")
    if obj["Type"] in ("Service", "NonInventory") and not obj.get("IncomeAccountRef"):
        raise faults.required("IncomeAccountRef")
    ref = obj.get("IncomeAccountRef")
    if ref:
        account = company.get("Account", str(ref.get("value")))
        if account is None:
            raise faults.invalid_reference("Account", ref.get("value"))
        obj["IncomeAccountRef"] = {"value": account["Id"], "name": account["Name"]}
    obj["FullyQualifiedName"] = obj["Name"]
    obj.setdefault("Active", True)
    for key, value in (
        ("Taxable", False),
        ("UnitPrice", Decimal(0)),
        ("PurchaseCost", Decimal(0)),
        ("TrackQtyOnHand", False),
        ("DeferredRevenue", False),
    ):
        obj.setdefault(key, value)


def prepare_term(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """Check and complete a (standard) Term: due N days after the transaction."""
    if not obj.get("Name"):
        raise faults.required("Name")
    days = obj.get("DueDays", 0)
    if isinstance(days, bool) or not isinstance(days, int | Decimal) or days < 0:
        raise faults.validation(
            "2170", "Invalid Number", f"DueDays {days!r}", "DueDays"
        )
    obj["DueDays"] = int(days)
    obj.setdefault("Type", "STANDARD")
    obj.setdefault("Active", True)


def prepare_account(
    company: Company, obj: dict[str, Any], existing: dict[str, Any] | None
) -> None:
    """Check and complete an Account (6010 without a type)."""
    if not obj.get("Name"):
        raise faults.required("Name")
    if not obj.get("AccountType") and not obj.get("AccountSubType"):
        raise faults.validation(
            "6010", "Invalid account type", "AccountType or AccountSubType is required"
        )
    if _taken(company, "Account", obj["Name"], obj.get("Id")):
        raise faults.validation(
            "6240",
            "Duplicate Name Exists Error",
            "Another account is already using this name. Please use a different name.",
        )
    obj.setdefault("AccountType", "Income")
    obj.setdefault("SubAccount", False)
    obj["FullyQualifiedName"] = obj["Name"]
    obj.setdefault("Active", True)
    obj.setdefault(
        "Classification", "Revenue" if obj["AccountType"] == "Income" else "Asset"
    )
    obj.setdefault("CurrentBalance", Decimal(0))
    obj.setdefault("CurrentBalanceWithSubAccounts", Decimal(0))
    obj.setdefault("CurrencyRef", dict(HOME_CURRENCY))


def ref_to(company: Company, entity: str, ref: Any, label: str) -> dict[str, Any]:
    """Resolve a `{"value": Id}` reference to an active object, or 2500 / 2020."""
    if not isinstance(ref, dict) or not ref.get("value"):
        raise faults.required(label)
    obj = company.get(entity, str(ref["value"]))
    if obj is None or obj.get("Active") is False:
        raise faults.invalid_reference(entity, ref.get("value"))
    return obj
