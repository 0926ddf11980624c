"""Issue 9: one message never stops the others, whatever fails while handling it."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.bus.inbox import Inbox
from syncd.engine.rulebook import RuleBook
from syncd.exceptions import StoreError
from syncd.models import ChangeSet, Outcome, RawMessage
from syncd.store.sqlite import SqliteStore
from tests.test_inbox import NOW, RULES, published, raw, upsert


class PoisonedStore(SqliteStore):
    """A real store whose commit fails for one invoice, as a post-validation bug would."""

    async def commit(self, changes: ChangeSet) -> None:
        if any(invoice_id == "POISON" for _, invoice_id in changes.invoices):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        await super().commit(changes)


class BrokenStore(SqliteStore):
    """A real store whose file cannot be written any more."""

    async def commit(self, changes: ChangeSet) -> None:
        self._db.problem = (
            "the store cannot be used: attempt to write a readonly database"
        )
        raise StoreError(self._db.problem)


def inbox_on(store: SqliteStore) -> Inbox:
    """The inbox tests use: tenants acme and beta on the default rules, at NOW."""
    return Inbox(
        store,
        RuleBook({"acme": RULES, "beta": RULES}),
        prefix="syncd",
        max_payload_bytes=256 * 1024,
        clock=lambda: NOW,
    )


async def test_a_message_failing_after_validation_is_isolated(tmp_path):
    """Issue 9: the rest of the batch commits; the failed one is recorded and answered."""
    store = PoisonedStore(tmp_path / "syncd.db")
    await store.open()
    try:
        inbox = inbox_on(store)
        batch = [
            upsert("I-1", 1, "draft", mid="m-1"),
            upsert("POISON", 1, "draft", mid="m-2"),
            upsert("I-2", 1, "draft", tenant="beta", mid="m-3"),
        ]
        changes = await inbox.handle(batch)
        assert await store.invoice("acme", "I-1") is not None
        assert await store.invoice("beta", "I-2") is not None
        assert await store.invoice("acme", "POISON") is None
        entry = await store.ledger("acme", "m-2")
        assert entry is not None
        assert entry.outcome is Outcome.FAILED
        [rejected] = published(changes, "acme/out/input/rejected")
        assert rejected["data"]["message_id"] == "m-2"
        assert "could not process this valid message" in rejected["data"]["reason"]
        [failure] = await store.failures("acme")
        assert (failure.operation, failure.code, failure.event_id) == (
            "intake",
            "internal_error",
            "m-2",
        )
        # the broker redelivers the batch (say the ack was lost): nothing happens twice
        again = await inbox.handle(batch)
        assert again.outbox == []
        assert len(await store.failures("acme")) == 1
    finally:
        await store.close()


async def test_an_unusable_store_fails_the_batch_unacked(tmp_path):
    """Issue 9 §7: a store that cannot be written is not a poison message: raise."""
    store = BrokenStore(tmp_path / "syncd.db")
    await store.open()
    try:
        with pytest.raises(StoreError):
            await inbox_on(store).handle([upsert("I-1", 1, "draft", mid="m-1")])
        assert await store.ledger("acme", "m-1") is None
    finally:
        await store.close()


async def test_a_read_only_file_is_a_store_error(tmp_path):
    """Issue 9 §7: SQLite's "readonly database" becomes StoreError with a reason."""
    path = tmp_path / "syncd.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    ro = SqliteStore(path)
    ro_uri = f"file:{path}?mode=ro"
    ro.database._db = await aiosqlite.connect(ro_uri, uri=True, isolation_level=None)
    try:
        with pytest.raises(StoreError, match="readonly database"):
            await inbox_on(ro).handle([upsert("I-1", 1, "draft", mid="m-1")])
        assert ro.problem is not None
    finally:
        await ro.close()


# Any JSON a CRM might send, including what once stopped syncd: deep nesting, integers
# past 64 bits, control characters and non-characters in ids.
_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["CTL\x01A", "a\nb", "\x7f", "\u0085", "\uffff", "a/b", "#", "+", ""]
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3)
    ),
    max_leaves=8,
)


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


_field_values = _json | st.integers(20, 300).map(_deep) | st.just(2**63)


# a valid `data` per type; the test overwrites some of its fields with anything
_VALID: dict[str, dict[str, Any]] = {
    "invoice.upserted": {"invoice_id": "I", "version": 1, "status": "draft"},
    "invoice.deleted": {"invoice_id": "I", "version": 2},
    "payment.recorded": {
        "payment_id": "P",
        "invoice_id": "I",
        "customer": {"name": "A"},
        "amount": "5.00",
        "currency": "USD",
        "date": "2026-11-22",
        "kind": "invoice",
    },
    "contact.upserted": {"contact_id": "C", "name": "Acme", "email": "a@acme.test"},
    "command.sync": {"invoice_id": "I"},
    "command.send": {"invoice_id": "I"},
    "command.void": {"invoice_id": "I"},
    "command.delete": {"invoice_id": "I"},
    "command.refresh": {"contact_id": "C", "from": "2026-11-01", "to": "2026-11-30"},
    "command.link": {"qbo_invoice_id": "130", "deal_id": "D"},
    "command.unlink": {"qbo_invoice_id": "130"},
}
_FIELDS = sorted({f for data in _VALID.values() for f in data} | {"lines", "x"})


@st.composite
def _messages(draw: st.DrawFn) -> list[RawMessage]:
    out = []
    for n in range(draw(st.integers(1, 4))):
        message_type = draw(st.sampled_from(sorted(_VALID)))
        data = dict(_VALID[message_type])
        for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
            data[field] = draw(_field_values)
        out.append(raw("acme", message_type, data, f"f-{n}"))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_messages())
def test_any_json_is_applied_or_refused_never_failed(batch):
    """Issue 9: whatever a CRM sends is decided at the door, never fails in the store."""

    async def run() -> None:
        with tempfile.TemporaryDirectory() as folder:
            store = SqliteStore(Path(folder) / "syncd.db")
            await store.open()
            try:
                await inbox_on(store).handle(batch)
                for message in batch:
                    mid = json.loads(message.payload)["id"]
                    entry = await store.ledger("acme", mid)
                    assert entry is not None, mid
                    assert entry.outcome is not Outcome.FAILED, entry.reason
            finally:
                await store.close()

    asyncio.run(run())


async def test_an_extra_invoice_id_on_a_type_without_one_is_ignored(tmp_path):
    """Found by the test above: `command.link` with a list as an extra `invoice_id`."""
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    try:
        data = {"qbo_invoice_id": "130", "deal_id": "D", "invoice_id": [[]]}
        await inbox_on(store).handle([raw("acme", "command.link", data, "l-1")])
        entry = await store.ledger("acme", "l-1")
        assert entry is not None
        assert entry.outcome is Outcome.APPLIED
    finally:
        await store.close()
