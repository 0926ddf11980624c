"""Find or create what an invoice names in QBO: its customer (OD7, HL4) and items (OD3).

Links are remembered (`links` table), so a customer or item costs QBO reads only the
first time; creates carry a stable requestid, so a retried create is the same object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from syncd.engine.rules import Rules
from syncd.exceptions import QboRejectedError, ResolveError
from syncd.models import ChangeSet, Link, LinkKind
from syncd.qbo import QboClient, queries
from syncd.store import Store


def request_id(*parts: str) -> str:
    """A stable requestid (≤ 50 chars) for one intended write."""
    return (
        "syncd-"
        + hashlib.sha1("/".join(parts).encode(), usedforsecurity=False).hexdigest()[:40]
    )


async def customer(
    client: QboClient,
    store: Store,
    tenant: str,
    rules: Rules,
    crm: dict[str, Any],
    changes: ChangeSet,
) -> str:
    """The QBO Customer Id for the invoice's CRM customer."""
    name = str(crm.get("name") or crm.get("contact_id") or "").strip()
    email = str(crm.get("email") or crm.get("billing_email") or "").strip()
    key = str(crm.get("contact_id") or name or email)
    if not key:
        raise ResolveError(
            "the invoice names no customer (customer.name or contact_id)"
        )
    linked = await store.link(tenant, LinkKind.CUSTOMER, key)
    if linked:
        return linked
    found = await _match(client, rules, name, email)
    if found is None:
        found = await _create_customer(client, tenant, rules, crm, name or email, key)
    changes.links.append(
        Link(tenant=tenant, kind=LinkKind.CUSTOMER, key=key, qbo_id=found)
    )
    return found


async def _match(client: QboClient, rules: Rules, name: str, email: str) -> str | None:
    strategy = rules.customers.match
    if strategy in ("display_name", "display_name_then_email") and name:
        rows = await client.query(queries.named("Customer", "DisplayName", name))
        if rows.get("Customer"):
            return str(rows["Customer"][0]["Id"])
    if strategy in ("email", "display_name_then_email") and email:
        rows = await client.query(queries.named("Customer", "PrimaryEmailAddr", email))
        if rows.get("Customer"):
            return str(rows["Customer"][0]["Id"])
    return None


async def _create_customer(
    client: QboClient,
    tenant: str,
    rules: Rules,
    crm: dict[str, Any],
    name: str,
    key: str,
) -> str:
    if not rules.customers.create_missing:
        raise ResolveError(
            f"no QBO customer matches {name!r} and create_missing is off"
        )
    body: dict[str, Any] = {"DisplayName": name[:500]}
    if crm.get("email"):
        body["PrimaryEmailAddr"] = {"Address": crm["email"]}
    if crm.get("currency"):
        body["CurrencyRef"] = {"value": crm["currency"]}
    address = crm.get("address") or {}
    if address:
        body["BillAddr"] = {
            "Line1": address.get("line1"),
            "City": address.get("city"),
            "PostalCode": address.get("postal_code"),
            "Country": address.get("country"),
        }
    try:
        created = await client.create(
            "Customer", body, request_id(tenant, "customer", key)
        )
    except QboRejectedError as exc:
        if exc.code != "6240":
            raise
        # the name belongs to a vendor, an employee or an inactive customer: QBO display
        # names are unique across all of them, so this customer gets a distinct one
        body["DisplayName"] = f"{name} ({key})"[:500]
        created = await client.create(
            "Customer", body, request_id(tenant, "customer", key, "2")
        )
    return str(created["Id"])


async def items(
    client: QboClient,
    store: Store,
    tenant: str,
    rules: Rules,
    names: list[str],
    changes: ChangeSet,
    accounts: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """QBO Item Ids by exact name; missing ones created as Service items (or refused)."""
    accounts = accounts or {}
    found: dict[str, str] = {}
    for name in names:
        linked = await store.link(tenant, LinkKind.ITEM, name)
        if linked is None:
            rows = await client.query(queries.named("Item", "Name", name))
            if rows.get("Item"):
                linked = str(rows["Item"][0]["Id"])
            else:
                linked = await _create_item(client, tenant, rules, name, accounts)
            changes.links.append(
                Link(tenant=tenant, kind=LinkKind.ITEM, key=name, qbo_id=linked)
            )
        found[name] = linked
    return found


async def account_id(client: QboClient, known: Mapping[str, str], wanted: str) -> str:
    """An account's Id by name or Id: from what was read at connection (OD2), else asked."""
    if wanted in known or wanted in known.values():
        return str(known.get(wanted, wanted))
    rows = await client.query(queries.named("Account", "Name", wanted))
    return str(rows["Account"][0]["Id"]) if rows.get("Account") else wanted


async def _create_item(
    client: QboClient, tenant: str, rules: Rules, name: str, accounts: Mapping[str, str]
) -> str:
    if rules.items.on_missing == "fail":
        raise ResolveError(
            f'QBO has no item named {name!r} and [items] on_missing = "fail" (PD3)'
        )
    account = rules.items.income_account
    body = {
        "Name": name[:100],
        "Type": "Service",
        "IncomeAccountRef": {"value": await account_id(client, accounts, account)},
    }
    created = await client.create("Item", body, request_id(tenant, "item", name))
    return str(created["Id"])
