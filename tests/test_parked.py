"""Issue 25: per-invoice order across replicas, kept by parking what comes early.

A shared subscription hands one invoice's messages to different replicas: `draft → open
→ sent` can arrive as `draft → sent`, and a payment before its invoice. What cannot be
decided yet is parked (durably, acked), decided again when its invoice changes, and
refused as any message would be only once it has waited `park_for`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from syncd.bus.inbox import Inbox
from syncd.engine.rulebook import RuleBook
from syncd.models import Outcome
from syncd.store.sqlite import SqliteStore
from tests.test_inbox import NOW, RULES, raw, upsert

WAIT = timedelta(minutes=5)


def inbox_parking(store: SqliteStore, clock: dict[str, Any]) -> Inbox:
    return Inbox(
        store,
        RuleBook({"acme": RULES}),
        prefix="syncd",
        max_payload_bytes=256 * 1024,
        clock=lambda: clock["now"],
        park_for=WAIT,
    )


def payment(invoice_id: str, mid: str):
    data = {
        "payment_id": f"P-{mid}",
        "invoice_id": invoice_id,
        "customer": {"name": "Acme"},
        "amount": "10.00",
        "currency": "USD",
        "date": NOW.date().isoformat(),
        "kind": "invoice",
    }
    return raw("acme", "payment.recorded", data, mid)


async def test_a_move_that_came_early_waits_for_the_one_before_it(store):
    clock = {"now": NOW}
    inbox = inbox_parking(store, clock)
    await inbox.handle([upsert("I-1", 1, "draft", mid="m-1")])
    # v3 (sent) overtook v2 (open): draft → sent is not a move the rules allow
    await inbox.handle([upsert("I-1", 3, "sent", mid="m-3")])
    waiting = await store.ledger("acme", "m-3")
    assert waiting is not None and waiting.outcome is Outcome.PARKED
    assert [p.message_id for p in await store.parked_messages(10)] == ["m-3"]
    assert await store.failures("acme") == []  # nothing for an admin: not refused
    changes = await inbox.handle([upsert("I-1", 2, "open", mid="m-2")])
    stored = await store.invoice("acme", "I-1")
    assert stored is not None and (stored.status, stored.version) == ("sent", 3)
    history = await store.history("acme", "I-1")
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, "draft"),
        ("draft", "open"),
        ("open", "sent"),
    ]
    decided = await store.ledger("acme", "m-3")
    assert decided is not None and decided.outcome is Outcome.APPLIED
    assert await store.parked_messages(10) == []
    assert ("acme", "m-3") in changes.unparked
    # a redelivery of the parked message is a duplicate, as any other
    again = await inbox.handle([upsert("I-1", 3, "sent", mid="m-3")])
    assert again.ledger == []


async def test_a_payment_before_its_invoice_waits_for_it(store):
    clock = {"now": NOW}
    inbox = inbox_parking(store, clock)
    await inbox.handle([payment("I-7", "p-1")])
    assert [p.invoice_id for p in await store.parked_messages(10)] == ["I-7"]
    assert await store.jobs("acme") == []
    await inbox.handle([upsert("I-7", 1, "open", mid="m-1")])
    jobs = await store.jobs("acme")
    assert sorted(j.kind.value for j in jobs) == ["invoice.push", "payment.push"]
    assert jobs[0].kind.value == "invoice.push"  # queued in order


async def test_a_message_that_waited_too_long_is_refused_as_any_other(store):
    clock = {"now": NOW}
    inbox = inbox_parking(store, clock)
    await inbox.handle([upsert("I-1", 1, "draft", mid="m-1")])
    await inbox.handle([upsert("I-1", 3, "paid", mid="m-3")])
    assert (await inbox.redecide_parked()).unparked == []  # still in its time
    clock["now"] = NOW + WAIT + timedelta(seconds=1)
    decided = await inbox.redecide_parked()
    assert decided.unparked == [("acme", "m-3")]
    entry = await store.ledger("acme", "m-3")
    assert entry is not None and entry.outcome is Outcome.REFUSED
    [failure] = await store.failures("acme")
    assert (failure.code, failure.event_id) == ("move_refused", "m-3")
    rejected = [o for o in decided.outbox if type(o).__name__ == "InputRejected"]
    assert len(rejected) == 1
    assert await store.parked_messages(10) == []


async def test_a_parked_message_is_decided_once_by_two_replicas(tmp_path):
    """Two replicas' sweeps meet on one parked message: one decides it, once."""
    clock = {"now": NOW}
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    try:
        a, b = inbox_parking(store, clock), inbox_parking(store, clock)
        await a.handle([upsert("I-1", 1, "draft", mid="m-1")])
        await a.handle([upsert("I-1", 3, "sent", mid="m-3")])
        # v2 applied by a third party (another replica): no one re-decided yet
        await Inbox(
            store,
            RuleBook({"acme": RULES}),
            prefix="syncd",
            max_payload_bytes=256 * 1024,
            clock=lambda: clock["now"],
        ).handle([upsert("I-1", 2, "open", mid="m-2")])
        first = await a.redecide_parked()
        second = await b.redecide_parked()
        assert first.unparked == [("acme", "m-3")] and second.unparked == []
        history = await store.history("acme", "I-1")
        assert [h.to_status for h in history] == ["draft", "open", "sent"]
    finally:
        await store.close()


async def test_one_process_refuses_at_once_as_before(inbox, store):
    """Without a shared subscription the broker keeps order: nothing is parked."""
    await inbox.handle([upsert("I-1", 1, "draft")])
    await inbox.handle([upsert("I-1", 3, "sent", mid="m-3")])
    assert await store.parked_messages(10) == []
    entry = await store.ledger("acme", "m-3")
    assert entry is not None and entry.outcome is Outcome.REFUSED


async def test_a_snapshot_that_skips_a_version_waits_for_it(store):
    """v3 (paid) is allowed from open, but v2 (sent) e-mails the invoice.

    Applied first, v3 would make v2 stale, and the e-mail would never go.
    """
    clock = {"now": NOW}
    inbox = inbox_parking(store, clock)
    await inbox.handle([upsert("I-1", 1, "open", mid="m-1")])
    await inbox.handle([upsert("I-1", 3, "paid", mid="m-3")])
    assert [p.message_id for p in await store.parked_messages(10)] == ["m-3"]
    await inbox.handle([upsert("I-1", 2, "sent", mid="m-2")])
    history = await store.history("acme", "I-1")
    assert [h.to_status for h in history] == ["open", "sent", "paid"]
    kinds = [j.kind.value for j in await store.jobs("acme")]
    assert "invoice.send" in kinds


async def test_a_new_invoice_heard_of_late_waits_for_its_first_versions(store):
    """v2 (voided) before v1 (open): applied first, the QBO copy would never be made."""
    clock = {"now": NOW}
    inbox = inbox_parking(store, clock)
    await inbox.handle([upsert("I-1", 2, "voided", mid="m-2")])
    assert await store.invoice("acme", "I-1") is None
    await inbox.handle([upsert("I-1", 1, "open", mid="m-1")])
    stored = await store.invoice("acme", "I-1")
    assert stored is not None and (stored.status, stored.version) == ("voided", 2)
    kinds = [j.kind.value for j in await store.jobs("acme")]
    assert kinds == ["invoice.push", "invoice.void"]


async def test_a_delete_before_its_invoice_waits_for_it(store):
    clock = {"now": NOW}
    inbox = inbox_parking(store, clock)
    await inbox.handle([raw("acme", "invoice.deleted", {"invoice_id": "I-1"}, "d-1")])
    assert [p.message_id for p in await store.parked_messages(10)] == ["d-1"]
    await inbox.handle([upsert("I-1", 1, "open", mid="m-1")])
    kinds = [j.kind.value for j in await store.jobs("acme")]
    assert kinds == ["invoice.push", "invoice.delete"]
