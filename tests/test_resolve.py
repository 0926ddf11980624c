"""Finding or making what an invoice names in QBO, against the sandbox over real HTTP.

The store is real; QBO is the sandbox process the suite shares (a fresh company each).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from syncd.exceptions import ResolveError
from syncd.models import ChangeSet, LinkKind
from syncd.outbound import resolve
from syncd.qbo import QboClient, queries
from syncd.rules.model import CustomerRules, ItemRules
from tests.qbo.test_client import connect
from tests.test_inbox import RULES


class CountingClient:
    """The real client, counting QBO calls (reads cost money since 2025: qbo.md §10)."""

    def __init__(self, client: QboClient) -> None:
        self._client, self.reads, self.writes = client, 0, 0

    async def query(self, statement: str):
        self.reads += 1
        return await self._client.query(statement)

    async def create(self, entity: str, body, request_id: str):
        self.writes += 1
        return await self._client.create(entity, body, request_id)


@pytest.fixture
async def qbo(sandbox, http) -> CountingClient:
    client, _, _ = await connect(http, sandbox.origin)
    return CountingClient(client)


async def _customer(qbo, store, rules, crm):
    changes = ChangeSet()
    found = await resolve.customer(qbo, store, "acme", rules, crm, changes)
    await store.commit(changes)
    return found, changes


async def test_a_customer_is_matched_by_name_then_remembered(qbo, store):
    """OD7: matched by DisplayName; the link saves every later read."""
    existing = await qbo.create("Customer", {"DisplayName": "Acme Ltd"}, "rq-1")
    crm = {"contact_id": "C-1", "name": "Acme Ltd", "email": "ap@acme.test"}
    found, changes = await _customer(qbo, store, RULES, crm)
    assert found == existing["Id"]
    assert [(k.kind, k.qbo_id) for k in changes.links] == [
        (LinkKind.CUSTOMER, existing["Id"])
    ]
    reads = qbo.reads
    again, _ = await _customer(qbo, store, RULES, crm)
    assert (again, qbo.reads) == (existing["Id"], reads)  # no QBO read the second time


async def test_a_missing_customer_is_created_or_refused_as_the_rules_say(qbo, store):
    """OD7, HL4: created with its e-mail when allowed; a clear refusal when not."""
    crm = {"contact_id": "C-2", "name": "O'Brien & Sons", "email": "ob@sons.test"}
    refusing = replace(RULES, customers=CustomerRules(create_missing=False))
    with pytest.raises(ResolveError):
        await _customer(qbo, store, refusing, crm)
    found, _ = await _customer(qbo, store, RULES, crm)
    rows = await qbo.query(queries.named("Customer", "DisplayName", "O'Brien & Sons"))
    [made] = rows["Customer"]
    assert made["Id"] == found
    assert made["PrimaryEmailAddr"] == {"Address": "ob@sons.test"}


async def test_matching_by_email_finds_a_customer_under_another_name(qbo, store):
    """HL4: `match = "email"` finds the QBO customer whatever its display name."""
    known = await qbo.create(
        "Customer",
        {"DisplayName": "Known Person", "PrimaryEmailAddr": {"Address": "k@p.test"}},
        "rq-2",
    )
    by_email = replace(RULES, customers=CustomerRules(match="email"))
    crm = {"contact_id": "C-3", "name": "Someone Else", "email": "k@p.test"}
    found, _ = await _customer(qbo, store, by_email, crm)
    assert found == known["Id"]


async def test_items_are_found_made_or_refused_and_remembered(qbo, store):
    """OD3, PD3: an existing item by name, a missing one made, or refused by the rules."""
    existing = await qbo.create(
        "Item", {"Name": "Consulting", "IncomeAccountRef": {"value": "1"}}, "rq-3"
    )
    changes = ChangeSet()
    items = await resolve.items(
        qbo,
        store,
        "acme",
        RULES,
        ["Consulting", "Support"],
        changes,
        {},
    )
    assert items["Consulting"] == existing["Id"]
    assert items["Support"] not in ("", existing["Id"])
    await store.commit(changes)
    assert await store.link("acme", LinkKind.ITEM, "Support") == items["Support"]
    failing = replace(RULES, items=ItemRules(on_missing="fail"))
    with pytest.raises(ResolveError, match="no item named 'Training'"):
        await resolve.items(qbo, store, "acme", failing, ["Training"], ChangeSet(), {})


async def test_an_account_is_known_from_the_connection_or_asked_once(qbo):
    """OD2: accounts read at connection cost nothing; another is looked up by name."""
    assert await resolve.account_id(qbo, {"Services": "12"}, "Services") == "12"
    assert qbo.reads == 0
    found = await resolve.account_id(qbo, {}, "Undeposited Funds")
    assert found.isdigit() and qbo.reads == 1


def test_request_ids_are_stable_short_and_distinct():
    """HS11: one intended write, one requestid (≤ 50 characters, QBO's bound)."""
    first = resolve.request_id("acme", "I-1", "create")
    assert first == resolve.request_id("acme", "I-1", "create")
    assert first != resolve.request_id("acme", "I-2", "create")
    assert len(first) <= 50
