"""Find or create what an invoice names in QBO: its customer (OD7, HL4) and items (OD3).

Links are remembered (`links` table), so a customer or item costs QBO reads only the
first time; creates carry a stable requestid, so a retried create is the same object.
For a batch of invoices, `ahead` finds the new ones in one query per kind and creates
the missing ones in one batch request; what it leaves unsettled is resolved one by one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from syncd.exceptions import QboError, QboRejectedError, ResolveError
from syncd.models import ChangeSet, Link, LinkKind
from syncd.outbound import mapping
from syncd.qbo import BATCH_ITEMS, BatchItem, QboClient, queries
from syncd.rules.model import Rules
from syncd.store import References

log = structlog.get_logger(__name__)
_BY_NAME = ("display_name", "display_name_then_email")


@dataclass(slots=True)
class Known:
    """QBO ids settled ahead for a batch: customers by CRM key, items by name."""

    customers: dict[str, str] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)


def request_id(*parts: str) -> str:
    """A stable requestid (≤ 50 chars) for one intended write."""
    return (
        "syncd-"
        + hashlib.sha1("/".join(parts).encode(), usedforsecurity=False).hexdigest()[:40]
    )


async def customer(
    client: QboClient,
    store: References,
    tenant: str,
    rules: Rules,
    crm: dict[str, Any],
    changes: ChangeSet,
    known: Known | None = None,
) -> str:
    """The QBO Customer Id for the invoice's CRM customer."""
    name, email, key = _identity(crm)
    if not key:
        raise ResolveError(
            "the invoice names no customer (customer.name or contact_id)"
        )
    linked = await store.link(tenant, LinkKind.CUSTOMER, key)
    if linked:
        return linked
    found = known.customers.get(key) if known else None
    if found is None:
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
    body = _customer_body(crm, name)
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


def customer_key(crm: dict[str, Any]) -> str:
    """What a CRM customer's link is keyed by (its contact id, else name, else e-mail)."""
    return _identity(crm)[2]


def _identity(crm: dict[str, Any]) -> tuple[str, str, str]:
    """The CRM customer's name, e-mail and key (its contact id, else name, else e-mail)."""
    name = str(crm.get("name") or crm.get("contact_id") or "").strip()
    email = str(crm.get("email") or crm.get("billing_email") or "").strip()
    return name, email, str(crm.get("contact_id") or name or email)


def _customer_body(crm: dict[str, Any], name: str) -> dict[str, Any]:
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
    return body


async def items(
    client: QboClient,
    store: References,
    tenant: str,
    rules: Rules,
    names: list[str],
    changes: ChangeSet,
    accounts: Mapping[str, str] | None = None,
    known: Known | None = None,
) -> dict[str, str]:
    """QBO Item Ids by exact name; missing ones created as Service items (or refused)."""
    accounts = accounts or {}
    found: dict[str, str] = {}
    for name in names:
        linked = await store.link(tenant, LinkKind.ITEM, name)
        if linked is None:
            linked = known.items.get(name) if known else None
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
    account = await account_id(client, accounts, rules.items.income_account)
    body = _item_body(name, account)
    created = await client.create("Item", body, request_id(tenant, "item", name))
    return str(created["Id"])


def _item_body(name: str, account: str) -> dict[str, Any]:
    return {
        "Name": name[:100],
        "Type": "Service",
        "IncomeAccountRef": {"value": account},
    }


async def ahead(
    client: QboClient,
    store: References,
    tenant: str,
    rules: Rules,
    invoices: list[dict[str, Any]],
    accounts: Mapping[str, str],
) -> Known:
    """The customers and items new to syncd among a batch's invoices, settled together.

    One query per kind finds those QBO has (by DisplayName, by Name), one batch request
    creates the rest. Nothing is made twice: whatever this leaves unsettled (a fault,
    a name QBO refuses, a customer matched by e-mail) is resolved one by one, and that
    path looks for the name in QBO before it creates.
    """
    settle = _Ahead(client, store, tenant, rules)
    try:
        await settle.customers(invoices)
        await settle.items(invoices, accounts)
    except QboError as exc:  # the one-by-one path meets it again and handles it
        log.info("resolve_ahead_stopped", code=exc.code, reason=exc.message)
    return settle.known


class _Ahead:
    """One batch's settling of names: what it found or made so far in `known`."""

    def __init__(
        self, client: QboClient, store: References, tenant: str, rules: Rules
    ) -> None:
        self.client, self.store, self.tenant, self.rules = client, store, tenant, rules
        self.known = Known()

    async def customers(self, invoices: list[dict[str, Any]]) -> None:
        match, known = self.rules.customers.match, self.known
        if match not in _BY_NAME:
            return  # matched by e-mail only: one by one
        wanted = await self._new_customers(invoices)
        if not wanted:
            return
        names = {key: name for key, (name, _, _) in wanted.items()}
        found = await _by_name(self.client, "Customer", "DisplayName", names.values())
        missing: dict[str, dict[str, Any]] = {}  # one create per name, as one by one
        for key, (name, email, crm) in wanted.items():
            if name.lower() in found:
                known.customers[key] = found[name.lower()]
            elif self.rules.customers.create_missing and not (
                email and match == "display_name_then_email"
            ):
                missing.setdefault(name.lower(), _customer_body(crm, name))
        made = await _create_together(self.client, self.tenant, "Customer", missing)
        for key, name in names.items():
            if key not in known.customers and name.lower() in made:
                known.customers[key] = made[name.lower()]

    async def _new_customers(
        self, invoices: list[dict[str, Any]]
    ) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """The named customers not linked yet: key → (name, e-mail, the CRM's)."""
        wanted: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for data in invoices:
            crm = data.get("customer") or {}
            name, email, key = _identity(crm)
            if (
                name
                and key not in wanted
                and not await self.store.link(self.tenant, LinkKind.CUSTOMER, key)
            ):
                wanted[key] = (name, email, crm)
        return wanted

    async def items(
        self, invoices: list[dict[str, Any]], accounts: Mapping[str, str]
    ) -> None:
        wanted = {
            name
            for data in invoices
            for name in mapping.item_names(data)
            if await self.store.link(self.tenant, LinkKind.ITEM, name) is None
        }
        if not wanted:
            return
        items = self.known.items
        found = await _by_name(self.client, "Item", "Name", wanted)
        items.update((n, found[n.lower()]) for n in wanted if n.lower() in found)
        rest = sorted(n for n in wanted if n not in items)
        if not rest or self.rules.items.on_missing == "fail":
            return  # refused one by one, with the reason
        income = self.rules.items.income_account
        account = await account_id(self.client, accounts, income)
        missing = {n.lower(): _item_body(n, account) for n in rest}
        made = await _create_together(self.client, self.tenant, "Item", missing)
        items.update((n, made[n.lower()]) for n in rest if n.lower() in made)


async def _by_name(
    client: QboClient, entity: str, field_name: str, names: Iterable[str]
) -> dict[str, str]:
    """QBO's objects among `names` (one question per 30): lower-cased name → first Id."""
    listed = sorted(set(names))
    found: dict[str, str] = {}
    for n in range(0, len(listed), BATCH_ITEMS):
        statement = queries.among(entity, field_name, listed[n : n + BATCH_ITEMS])
        for row in await client.query_all(statement, entity):
            found.setdefault(str(row.get(field_name, "")).lower(), str(row["Id"]))
    return found


async def _create_together(
    client: QboClient, tenant: str, entity: str, bodies: Mapping[str, dict[str, Any]]
) -> dict[str, str]:
    """Create objects in batch requests (up to 30 each): key → Id of those made.

    A refused item stays unmade here; the batch's requestid names its objects, so a
    resent batch gets QBO's first answer.
    """
    made: dict[str, str] = {}
    keys = sorted(bodies)
    for n in range(0, len(keys), BATCH_ITEMS):
        chunk = keys[n : n + BATCH_ITEMS]
        items = [
            BatchItem(str(i), entity, "create", bodies[k]) for i, k in enumerate(chunk)
        ]
        named = "|".join([tenant, entity, *chunk]).encode()
        answers = await client.batch(
            items, "n-" + hashlib.sha256(named).hexdigest()[:34]
        )
        for i, key in enumerate(chunk):
            answer = answers.get(str(i))
            if isinstance(answer, dict):
                made[key] = str(answer["Id"])
            elif answer is not None:
                log.info("create_left_for_later", entity=entity, reason=answer.message)
    return made
