"""The commit edge (issue 23): a decided message becomes topic, envelope and id once."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from syncd.messages import (
    ConnectionState,
    InputRejected,
    Message,
    StateChanged,
    StatusSet,
    SyncFailed,
)
from syncd.models import ChangeSet, Invoice
from syncd.store.outbox import render
from syncd.store.sqlite import SqliteStore

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _invoice() -> Invoice:
    return Invoice(
        tenant="acme",
        invoice_id="I-1",
        status="open",
        version=3,
        data={},
        updated_at=AT,
    )


def test_each_message_lands_on_its_contract_topic_under_the_prefix():
    """Contract "syncd → CRM": `<prefix>/<tenant>/<subtopic>`, retained where it says."""
    said: list[tuple[Message, str, bool]] = [
        (StateChanged.of(_invoice(), AT), "ops/acme/sync/invoice/I-1", True),
        (SyncFailed(tenant="acme", at=AT, data={}), "ops/acme/out/sync/failed", False),
        (
            StatusSet(tenant="acme", at=AT, data={}),
            "ops/acme/out/invoice/set_status",
            False,
        ),
        (ConnectionState(tenant="acme", at=AT, data={}), "ops/acme/connection", True),
        (
            InputRejected.of("acme", "ops/acme/crm/x", "m-1", "why", AT),
            "ops/acme/out/input/rejected",
            False,
        ),
    ]
    for message, topic, retain in said:
        out = render("ops", message)
        assert (out.topic, out.retain) == (topic, retain), message


def test_the_envelope_carries_type_tenant_time_data_and_cause():
    """HS2: `…/out/sync/failed` in the contract's envelope; a refusal names its cause."""
    out = render("syncd", SyncFailed(tenant="acme", at=AT, data={"code": "6000"}))
    body = orjson.loads(out.payload)
    assert body["type"] == "sync.failed"
    assert (body["tenant"], body["occurred_at"]) == ("acme", "2026-11-27T10:00:00Z")
    assert body["data"] == {"code": "6000"}
    assert body["id"].startswith("evt-") and "causation_id" not in body
    refused = InputRejected.of("acme", "syncd/acme/crm/x", "m-1", "bad", AT)
    body = orjson.loads(render("syncd", refused).payload)
    assert body["causation_id"] == "m-1"
    assert body["data"] == {
        "topic": "syncd/acme/crm/x",
        "message_id": "m-1",
        "reason": "bad",
    }


def test_every_rendering_mints_a_new_id():
    message = SyncFailed(tenant="acme", at=AT, data={})
    ids = {orjson.loads(render("syncd", message).payload)["id"] for _ in range(3)}
    assert len(ids) == 3


async def test_the_store_renders_under_its_prefix_once_and_keeps_the_id(tmp_path):
    """The outbox row holds the rendered message: republishing it sends the same id."""
    store = SqliteStore(tmp_path / "syncd.db", prefix="crm-sync")
    await store.open()
    await store.commit(ChangeSet(outbox=[StateChanged.of(_invoice(), AT)]))
    first = await store.pending_outbox(10)
    again = await store.pending_outbox(10)
    assert [r.topic for r in first] == ["crm-sync/acme/sync/invoice/I-1"]
    assert first[0].payload == again[0].payload
    assert orjson.loads(first[0].payload)["data"]["version"] == 3
    await store.close()
