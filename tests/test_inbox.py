"""The inbox: status moves checked by the rules, dedupe, versions, refusals, tenants."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd import metrics
from syncd.bus.inbox import Inbox
from syncd.engine.rulebook import RuleBook
from syncd.models import Outcome, RawMessage, SyncState
from syncd.rules.model import load_rules, parse_rules
from syncd.store.outbox import render
from tests.crm import envelope, invoice

RULES = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.toml")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def raw(tenant: str, message_type: str, data: dict[str, Any], mid: str | None = None):
    body = envelope(tenant, message_type, data, mid, at=NOW)
    topic = f"syncd/{tenant}/crm/" + message_type.replace(".", "/")
    return RawMessage(topic=topic, payload=json.dumps(body).encode(), received_at=NOW)


def upsert(invoice_id: str, version: int, status: str, tenant: str = "acme", **kw: Any):
    return raw(tenant, "invoice.upserted", invoice(invoice_id, version, status), **kw)


def published(changes, suffix: str) -> list[dict[str, Any]]:
    """The messages decided, as the store renders them (under the prefix `syncd`)."""
    out = [render("syncd", o) for o in changes.outbox]
    return [json.loads(o.payload) for o in out if o.topic.endswith(suffix)]


async def test_allowed_move_is_applied_recorded_and_published(inbox, store):
    """RO3/DC4: an allowed move changes the status, enters history, is published."""
    await inbox.handle([upsert("I-1", 1, "draft", mid="m-1")])
    changes = await inbox.handle([upsert("I-1", 2, "open", mid="m-2")])
    stored = await store.invoice("acme", "I-1")
    assert stored is not None
    # open is a sync.on status: a QBO push is queued in the same transaction (RO3)
    assert (stored.status, stored.version, stored.sync_state) == (
        "open",
        2,
        SyncState.PENDING,
    )
    jobs = await store.jobs("acme")
    assert [(j.invoice_id, j.kind, j.status.value) for j in jobs] == [
        ("I-1", "invoice.push", "pending")
    ]
    history = await store.history("acme", "I-1")
    assert [(h.from_status, h.to_status, h.event_id) for h in history] == [
        (None, "draft", "m-1"),
        ("draft", "open", "m-2"),
    ]
    [state] = published(changes, "sync/invoice/I-1")
    assert state["type"] == "invoice.sync_state"
    assert state["causation_id"] == "m-2"
    assert state["data"]["status"] == "open"
    assert state["data"]["sync_state"] == "pending"
    assert state["data"]["total"] == "199.50"
    assert [o.retain for o in changes.outbox] == [True]


async def test_refused_move_changes_nothing_and_says_why(inbox, store):
    """DC4: a move the rules forbid is refused, recorded as a failure, and explained."""
    await inbox.handle([upsert("I-1", 1, "draft")])
    changes = await inbox.handle([upsert("I-1", 2, "paid", mid="m-9")])
    stored = await store.invoice("acme", "I-1")
    assert stored is not None
    assert (stored.status, stored.version) == ("draft", 1)
    [failure] = await store.failures("acme")
    assert (failure.operation, failure.code, failure.event_id) == (
        "status_move",
        "move_refused",
        "m-9",
    )
    assert "draft → paid" in failure.message
    [rejected] = published(changes, "out/input/rejected")
    assert rejected["data"]["message_id"] == "m-9"
    assert "draft → paid" in rejected["data"]["reason"]
    assert published(changes, "sync/invoice/I-1") == []
    ledger = await store.ledger("acme", "m-9")
    assert ledger is not None
    assert ledger.outcome is Outcome.REFUSED


async def test_a_new_invoice_may_start_in_any_reachable_status(store):
    """Syncd may first hear of an invoice after its first moves; unreachable is refused."""
    rules = parse_rules(
        {
            "statuses": {
                "all": ["draft", "open", "sent", "legacy"],
                "initial": "draft",
            },
            "moves": {"draft": ["open"], "open": ["sent"]},
        },
        "mini.toml",
    )
    inbox = Inbox(
        store,
        RuleBook({"acme": rules}),
        prefix="syncd",
        max_payload_bytes=1024 * 1024,
        clock=lambda: NOW,
    )
    await inbox.handle([upsert("I-1", 4, "sent")])
    assert (await store.invoice("acme", "I-1")).status == "sent"
    changes = await inbox.handle([upsert("I-2", 1, "legacy")])
    [rejected] = published(changes, "out/input/rejected")
    assert "a new invoice cannot start in 'legacy'" in rejected["data"]["reason"]
    assert await store.invoice("acme", "I-2") is None
    changes = await inbox.handle([upsert("I-3", 1, "unheard_of")])
    [rejected] = published(changes, "out/input/rejected")
    assert "status 'unheard_of' is not in the rules" in rejected["data"]["reason"]


async def test_older_versions_are_ignored(inbox, store):
    """A snapshot with a lower version than one applied is ignored, as is the same one."""
    await inbox.handle([upsert("I-1", 5, "open")])
    changes = await inbox.handle(
        [upsert("I-1", 4, "draft", mid="old"), upsert("I-1", 5, "sent", mid="same")]
    )
    assert (await store.invoice("acme", "I-1")).status == "open"
    assert changes.outbox == []
    assert (await store.ledger("acme", "old")).outcome is Outcome.IGNORED


async def test_duplicates_have_no_further_effect(inbox, store):
    """A message id already processed (QoS 1 redelivery, CRM retry) changes nothing."""
    first = upsert("I-1", 1, "draft", mid="dup")
    await inbox.handle([first])
    changes = await inbox.handle(
        [first, upsert("I-1", 2, "open", mid="x"), upsert("I-1", 2, "open", mid="x")]
    )
    assert len(await store.history("acme", "I-1")) == 2
    assert len(changes.ledger) == 1


async def test_several_moves_of_one_invoice_in_one_batch_apply_in_order(inbox, store):
    """Within a batch, each snapshot is checked against the state the previous left."""
    changes = await inbox.handle(
        [
            upsert("I-1", 1, "draft"),
            upsert("I-1", 2, "open"),
            upsert("I-1", 3, "sent"),
            upsert("I-1", 4, "draft"),
        ]
    )
    assert (await store.invoice("acme", "I-1")).status == "sent"
    assert [h.to_status for h in await store.history("acme", "I-1")] == [
        "draft",
        "open",
        "sent",
    ]
    assert len(published(changes, "out/input/rejected")) == 1


async def test_unknown_tenant_is_refused_and_tenants_stay_apart(inbox, store):
    """A tenant syncd does not serve is refused; one tenant never sees another's data."""
    message = upsert("I-1", 1, "draft", tenant="ghost", mid="g")
    changes = await inbox.handle([message])
    [rejected] = published(changes, "out/input/rejected")
    assert rejected["data"]["reason"] == (
        "tenant 'ghost' is not served by this syncd "
        f"(the payload, {len(message.payload)} bytes, is not kept)"
    )
    assert render("syncd", changes.outbox[0]).topic == "syncd/ghost/out/input/rejected"
    await inbox.handle([upsert("I-1", 1, "open", tenant="beta")])
    await inbox.handle([upsert("I-1", 1, "draft", tenant="acme")])
    assert (await store.invoice("beta", "I-1")).status == "open"
    assert (await store.invoice("acme", "I-1")).status == "draft"
    assert await store.invoice("ghost", "I-1") is None


async def test_an_unserved_tenants_message_is_counted_and_its_payload_never_kept(
    inbox, store
):
    """Issue 22 §4: anyone can name a tenant; 150 messages of 250 KB once added 38 MB for 30 days."""
    before = metrics.UNSERVED._value.get()
    big = invoice("I-1", 1, "draft", notes="x" * 250_000)
    await inbox.handle(
        [raw(f"evil{n}", "invoice.upserted", big, f"e{n}") for n in range(3)]
    )
    for n in range(3):
        entry = await store.ledger(f"evil{n}", f"e{n}")
        assert entry is not None and entry.outcome is Outcome.REJECTED
        assert entry.payload is None
        assert entry.topic == f"syncd/evil{n}/crm/invoice/upserted"
        assert "bytes, is not kept" in entry.reason
    assert metrics.UNSERVED._value.get() == before + 3
    # a served tenant's refusal keeps its payload, for the admin's diagnosis
    bad = raw("acme", "invoice.upserted", {"invoice_id": "I-2"}, "bad")
    await inbox.handle([bad])
    entry = await store.ledger("acme", "bad")
    assert entry is not None and entry.payload == bad.payload


async def test_bad_input_does_not_block_the_rest_of_the_batch(inbox, store):
    """Rejected messages are answered; good ones in the same batch still apply."""
    junk = RawMessage(
        topic="syncd/acme/crm/invoice/upserted", payload=b"{oops", received_at=NOW
    )
    float_money = upsert("I-2", 1, "draft", mid="f")
    body = json.loads(float_money.payload)
    body["data"]["total"] = 199.5
    float_money = RawMessage(
        topic=float_money.topic, payload=json.dumps(body).encode(), received_at=NOW
    )
    changes = await inbox.handle([junk, float_money, upsert("I-1", 1, "draft")])
    reasons = [r["data"]["reason"] for r in published(changes, "out/input/rejected")]
    assert any("payload is not JSON" in r for r in reasons)
    assert any("data.total must be a decimal string" in r for r in reasons)
    assert (await store.invoice("acme", "I-1")).status == "draft"
    again = await inbox.handle([float_money])
    assert again.outbox == []  # the refusal of a known id is not repeated on redelivery


async def test_link_is_recorded_and_confirmed(inbox, store):
    """HS4: command.link records the deal of a QBO-made invoice and confirms it."""
    message = raw(
        "acme", "command.link", {"qbo_invoice_id": "42", "deal_id": "D-1"}, mid="c-1"
    )
    changes = await inbox.handle([message])
    ledger = await store.ledger("acme", "c-1")
    assert ledger is not None
    assert ledger.outcome is Outcome.APPLIED
    assert await store.deals("acme", ["42"]) == {"42": "D-1"}
    [linked] = published(changes, "out/invoice/linked")
    assert linked["data"] == {"qbo_invoice_id": "42", "deal_id": "D-1"}


async def test_a_deletion_while_the_copy_is_being_made_deletes_it_after(inbox, store):
    """PD7: a deletion while the QBO create is still queued deletes the copy after it.

    Found by the chaos run: it was ignored ("no QBO copy"), then the create went through,
    and QBO kept an invoice the CRM had deleted.
    """
    await inbox.handle([upsert("I-1", 1, "open", mid="m-1")])
    deleted = raw("acme", "invoice.deleted", {"invoice_id": "I-1", "version": 2}, "m-2")
    await inbox.handle([deleted])
    jobs = await store.jobs("acme")
    assert [(j.kind, j.status.value) for j in jobs] == [
        ("invoice.push", "pending"),
        ("invoice.delete", "pending"),
    ]
    entry = await store.ledger("acme", "m-2")
    assert entry is not None and entry.outcome == Outcome.APPLIED


async def test_a_deletion_of_an_invoice_never_copied_is_ignored(inbox, store):
    """`invoice.deleted` for an invoice that never entered a sync status: nothing to do."""
    await inbox.handle([upsert("I-1", 1, "draft", mid="m-1")])
    deleted = raw("acme", "invoice.deleted", {"invoice_id": "I-1", "version": 2}, "m-2")
    await inbox.handle([deleted])
    assert await store.jobs("acme") == []
