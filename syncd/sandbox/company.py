"""One QBO company (realm): its objects, id and DocNumber sequences, and change log."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.clock import local_time, utc_now

# URL name → entity name as QBO spells it in bodies and queries
ENTITIES = {
    "account": "Account",
    "companyinfo": "CompanyInfo",
    "creditmemo": "CreditMemo",
    "customer": "Customer",
    "employee": "Employee",
    "invoice": "Invoice",
    "item": "Item",
    "payment": "Payment",
    "preferences": "Preferences",
    "purchase": "Purchase",
    "refundreceipt": "RefundReceipt",
    "salesreceipt": "SalesReceipt",
    "taxcode": "TaxCode",
    "taxrate": "TaxRate",
    "term": "Term",
    "vendor": "Vendor",
}
_NAME_SPACE = {
    "Customer": "people",
    "Vendor": "people",
    "Employee": "people",
    "Item": "Item",
    "Account": "Account",
}
# CDC does not cover these (qbo.md §2 TaxCode)
NOT_IN_CDC = {"TaxCode", "TaxRate"}
HOME_CURRENCY = {"value": "USD", "name": "United States Dollar"}
CURRENCY_NAMES = {
    "USD": "United States Dollar",
    "EUR": "Euro",
    "GBP": "British Pound Sterling",
    "CAD": "Canadian Dollar",
}


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one object, for CDC and webhooks."""

    seq: int
    realm_id: str
    entity: str
    id: str
    operation: str  # Create, Update, Delete, Void, Emailed, Merge
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)  # a merge's {"deletedId": …}


Listener = Callable[[Change], None]


class Company:
    """A QBO company: tables of objects in QBO's JSON shape, amounts as Decimal."""

    def __init__(self, realm_id: str, listener: Listener | None = None) -> None:
        self.realm_id = realm_id
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            e: {} for e in ENTITIES.values()
        }
        self.deleted: dict[str, dict[str, datetime]] = {
            e: {} for e in ENTITIES.values()
        }
        self.changes: list[Change] = []
        self.request_ids: dict[str, tuple[int, Any]] = {}
        self.listener = listener
        self._next_id = 1
        self.next_doc_number = 1001
        self.doc_numbers: set[str] = set()  # DocNumbers sales forms hold (or held)
        # lower-cased unique names → "Entity:Id" (DisplayName across customers, vendors
        # and employees; Item and Account names among their own)
        self.names: dict[tuple[str, str], str] = {}
        self._name_of: dict[str, tuple[str, str]] = {}
        self.emails_today = 0
        _seed(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a company kept by an older sandbox has no index of its DocNumbers yet
        self.__dict__.update(state)
        if "doc_numbers" not in state:
            self.doc_numbers = {
                str(o["DocNumber"])
                for table in self.tables.values()
                for o in table.values()
                if o.get("DocNumber")
            }

    @property
    def multicurrency(self) -> bool:
        """Whether multicurrency is on (only "a person in QBO" can switch it on)."""
        prefs = self.tables["Preferences"]["1"]
        return bool(prefs["CurrencyPrefs"]["MultiCurrencyEnabled"])

    def new_id(self) -> str:
        """Return the next object Id (a string, as QBO's)."""
        value = str(self._next_id)
        self._next_id += 1
        return value

    def get(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """Return the stored object (not a copy)."""
        return self.tables[entity].get(str(entity_id))

    def find(self, entity: str, **fields: Any) -> list[dict[str, Any]]:
        """Return the objects whose top-level fields equal `fields`."""
        return [
            o
            for o in self.tables[entity].values()
            if all(o.get(k) == v for k, v in fields.items())
        ]

    def save(self, entity: str, obj: dict[str, Any], operation: str) -> dict[str, Any]:
        """Store an object: stamp Id, SyncToken and MetaData, log the change."""
        now = utc_now()
        stamp = local_time(now)
        if operation == "Create":
            obj["Id"] = obj.get("Id") or self.new_id()
            obj["SyncToken"] = "0"
            obj["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        else:
            obj["SyncToken"] = str(int(obj.get("SyncToken", "0")) + 1)
            obj.setdefault("MetaData", {"CreateTime": stamp})["LastUpdatedTime"] = stamp
        obj["domain"], obj["sparse"] = "QBO", False
        if obj.get("DocNumber"):
            self.doc_numbers.add(str(obj["DocNumber"]))
        self.tables[entity][obj["Id"]] = obj
        self._index_name(entity, obj)
        self._log(entity, obj["Id"], operation, now)
        return obj

    def name_owner(self, entity: str, name: str) -> str | None:
        """Return "Entity:Id" of the object holding a unique name, if any."""
        return self.names.get((_NAME_SPACE.get(entity, entity), name.strip().lower()))

    def _index_name(self, entity: str, obj: dict[str, Any]) -> None:
        if entity not in _NAME_SPACE:
            return
        field = "Name" if entity in ("Item", "Account") else "DisplayName"
        owner = f"{entity}:{obj['Id']}"
        old = self._name_of.pop(owner, None)
        if old is not None and self.names.get(old) == owner:
            del self.names[old]
        if obj.get(field):
            key = (_NAME_SPACE[entity], str(obj[field]).strip().lower())
            self.names[key] = owner
            self._name_of[owner] = key

    def touch(self, entity: str, obj: dict[str, Any]) -> None:
        """Record a change QBO makes itself (a payment moves an invoice's balance)."""
        self.save(entity, obj, "Update")

    def remove(self, entity: str, entity_id: str) -> None:
        """Delete an object: it is gone for reads and queries, `Deleted` for CDC."""
        del self.tables[entity][entity_id]
        now = utc_now()
        self.deleted[entity][entity_id] = now
        self._log(entity, entity_id, "Delete", now)

    def merge(self, entity: str, gone_id: str, into_id: str) -> None:
        """Merge one name into another, as a person does in QBO's UI.

        The transactions of the merged-away one move to the survivor; it is gone (as
        deleted, for CDC); the event names the survivor, with `deletedId`.
        """
        if entity != "Customer":
            raise faults.unsupported(f"Merge is not supported for {entity} here")
        gone, into = self.get(entity, gone_id), self.get(entity, into_id)
        if gone is None or into is None or gone_id == into_id:
            raise faults.invalid_reference(entity, gone_id if gone is None else into_id)
        for kind in (
            "Invoice",
            "SalesReceipt",
            "Payment",
            "CreditMemo",
            "RefundReceipt",
        ):
            for obj in list(self.tables[kind].values()):
                if (obj.get("CustomerRef") or {}).get("value") == gone_id:
                    obj["CustomerRef"] = {
                        "value": into["Id"],
                        "name": into["DisplayName"],
                    }
                    self.save(kind, obj, "Update")
        del self.tables[entity][gone_id]
        now = utc_now()
        self.deleted[entity][gone_id] = now
        self._log(entity, into_id, "Merge", now, {"deletedId": gone_id})

    def _log(
        self,
        entity: str,
        entity_id: str,
        operation: str,
        at: datetime,
        data: dict[str, Any] | None = None,
    ) -> None:
        change = Change(
            len(self.changes) + 1,
            self.realm_id,
            entity,
            entity_id,
            operation,
            at,
            data or {},
        )
        self.changes.append(change)
        if self.listener is not None:
            self.listener(change)

    def snapshot(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """Return a deep copy for a response."""
        obj = self.get(entity, entity_id)
        return copy.deepcopy(obj) if obj is not None else None


def _seed(company: Company) -> None:
    """What a new QBO sandbox company starts with."""

    def add(entity: str, obj: dict[str, Any]) -> None:
        stamp = local_time()
        obj.update(domain="QBO", sparse=False, SyncToken="0")
        obj["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        obj.setdefault("Id", company.new_id())
        company.tables[entity][obj["Id"]] = obj
        company._index_name(entity, obj)

    accounts = [
        ("Services", "Revenue", "Income", "ServiceFeeIncome"),
        ("Sales of Product Income", "Revenue", "Income", "SalesOfProductIncome"),
        ("Discounts given", "Revenue", "Income", "DiscountsRefundsGiven"),
        ("Undeposited Funds", "Asset", "Other Current Asset", "UndepositedFunds"),
        ("Checking", "Asset", "Bank", "Checking"),
        (
            "Accounts Receivable (A/R)",
            "Asset",
            "Accounts Receivable",
            "AccountsReceivable",
        ),
    ]
    for name, classification, kind, subtype in accounts:
        add(
            "Account",
            {
                "Name": name,
                "SubAccount": False,
                "FullyQualifiedName": name,
                "Active": True,
                "Classification": classification,
                "AccountType": kind,
                "AccountSubType": subtype,
                "CurrentBalance": Decimal(0),
                "CurrentBalanceWithSubAccounts": Decimal(0),
                "CurrencyRef": dict(HOME_CURRENCY),
            },
        )
    add(
        "TaxRate",
        {
            "Id": "3",
            "Name": "California",
            "Description": "Sales Tax",
            "Active": True,
            "RateValue": Decimal(8),
            "AgencyRef": {"value": "1"},
            "SpecialTaxType": "NONE",
            "DisplayType": "ReadOnly",
        },
    )
    add(
        "TaxCode",
        {
            "Id": "2",
            "Name": "California",
            "Description": "California",
            "Active": True,
            "Hidden": False,
            "Taxable": True,
            "TaxGroup": False,
            "SalesTaxRateList": {
                "TaxRateDetail": [
                    {
                        "TaxRateRef": {"value": "3", "name": "California"},
                        "TaxTypeApplicable": "TaxOnAmount",
                        "TaxOrder": 0,
                    }
                ]
            },
            "PurchaseTaxRateList": {"TaxRateDetail": []},
        },
    )
    for code, taxable in (("TAX", True), ("NON", False)):
        add(
            "TaxCode",
            {
                "Id": code,
                "Name": code,
                "Description": code,
                "Active": True,
                "Hidden": False,
                "Taxable": taxable,
                "TaxGroup": False,
            },
        )
    add(
        "Term",
        {
            "Id": "3",
            "Name": "Net 30",
            "Active": True,
            "Type": "STANDARD",
            "DueDays": 30,
        },
    )
    add(
        "Preferences",
        {
            "Id": "1",
            "CurrencyPrefs": {
                "MultiCurrencyEnabled": False,
                "HomeCurrency": {"value": "USD"},
            },
            "TaxPrefs": {"UsingSalesTax": True, "PartnerTaxEnabled": False},
            "SalesFormsPrefs": {
                "CustomField": [{"CustomField": _custom_field_prefs()}],
                "DefaultTerms": {"value": "3"},
                "CustomTxnNumbers": False,
                "AllowDiscount": True,
                "DefaultDiscountAccount": "3",
            },
        },
    )
    add(
        "CompanyInfo",
        {
            "Id": "1",
            "CompanyName": f"Sandbox Company_US_{company.realm_id}",
            "LegalName": f"Sandbox Company_US_{company.realm_id}",
            "Country": "US",
            "CompanyAddr": {
                "Line1": "123 Sierra Way",
                "City": "San Pablo",
                "CountrySubDivisionCode": "CA",
                "PostalCode": "87999",
            },
            "Email": {"Address": "noreply@quickbooks.com"},
            "SupportedLanguages": "en",
            "FiscalYearStartMonth": "January",
        },
    )
    add(
        "Account",
        {
            "Id": "8",  # as in Intuit's sandbox company (qbo.md §11.6)
            "Name": "Bank Charges",
            "SubAccount": False,
            "FullyQualifiedName": "Bank Charges",
            "Active": True,
            "Classification": "Expense",
            "AccountType": "Expense",
            "AccountSubType": "BankCharges",
            "CurrentBalance": Decimal(0),
            "CurrentBalanceWithSubAccounts": Decimal(0),
            "CurrencyRef": dict(HOME_CURRENCY),
        },
    )
    company._next_id = 100  # user objects start above the seeded ones


def _custom_field_prefs() -> list[dict[str, Any]]:
    """Three sales-form custom fields, as a US sandbox company has them."""
    prefs: list[dict[str, Any]] = []
    for n, name in enumerate(("PO Number", "Tracking No.", "Shipping Method"), 1):
        use = f"SalesFormsPrefs.UseSalesCustom{n}"
        prefs.append({"Name": use, "Type": "BooleanType", "BooleanValue": True})
        label = f"SalesFormsPrefs.SalesCustomName{n}"
        prefs.append({"Name": label, "Type": "StringType", "StringValue": name})
    return prefs


def custom_field_names(company: Company) -> dict[str, str]:
    """The company's sales-form custom fields: name → DefinitionId."""
    prefs = company.tables["Preferences"]["1"]["SalesFormsPrefs"]["CustomField"][0][
        "CustomField"
    ]
    names: dict[str, str] = {}
    for entry in prefs:
        if entry["Name"].startswith("SalesFormsPrefs.SalesCustomName"):
            names[entry["StringValue"]] = entry["Name"][-1]
    return names
