"""Issue 9 §2-§4: one message can never stop the others (real broker, real files).

Each poison below stopped all intake (§2, §3) or all publishing (§4) of every tenant on
the main before the fix. Each is now refused at the door with a reason, and the next
valid message of another tenant is applied and published.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.crm import Crm, envelope, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.mosquitto import Broker
from tests.syncd_process import RULES, SyncdProcess, write_config

TENANTS = {"acme": RULES, "globex": RULES}
ACME = "syncd/acme/crm/invoice/upserted"
GLOBEX = "syncd/globex/crm/invoice/upserted"


def _deep() -> bytes:
    """The issue's 779-byte message: 300 nested lists in an extra field."""
    head = (
        '{"id":"d1","type":"invoice.upserted","tenant":"acme",'
        f'"occurred_at":"{datetime.now(UTC).isoformat()}",'
        '"data":{"invoice_id":"D","version":1,"status":"draft","x":'
    )
    return (head + "[" * 300 + "]" * 300 + "}}").encode()


def _upsert(message_id: str, invoice_id: str, version: int = 1) -> bytes:
    data = invoice(invoice_id, version, "draft")
    return json.dumps(envelope("acme", "invoice.upserted", data, message_id)).encode()


POISONS = [
    pytest.param(_deep(), "d1", "nests deeper than 32 levels", id="nesting-300"),
    pytest.param(
        _upsert("v1", "V", 9223372036854775808),
        "v1",
        "the number 9223372036854775808 is out of range",
        id="version-2^63",
    ),
    *(
        pytest.param(
            _upsert(f"c{n}", f"CTL{char}A"),
            f"c{n}",
            f"(U+{ord(char):04X} at character 4)",
            id=f"id-U+{ord(char):04X}",
        )
        for n, char in enumerate(["\x01", "\n", "\x7f", "\u0085", "\uffff"])
    ),
]


async def _outbox_empties(db: DbView) -> None:
    """The publisher deletes a row just after its PUBACK: wait for that."""
    await eventually(lambda: db.outbox_size() == 0, timeout=10)


def _syncd(tmp_path: Path, broker: Broker) -> SyncdProcess:
    workdir = tmp_path / "syncd"
    workdir.mkdir(exist_ok=True)
    return SyncdProcess(write_config(workdir, broker.port, TENANTS))


def _globex_state(crm: Crm, invoice_id: str) -> list[str]:
    return [
        m.body["data"]["status"]
        for m in crm.on(f"syncd/globex/sync/invoice/{invoice_id}")
    ]


@pytest.mark.parametrize(("poison", "message_id", "reason"), POISONS)
async def test_poison_is_refused_and_the_next_message_flows(
    tmp_path, broker, poison, message_id, reason
):
    """Issue 9 §2-§4 (DC3): refused with a reason; another tenant's next message flows."""
    syncd = _syncd(tmp_path, broker)
    syncd.start()
    try:
        async with Crm(broker.port) as crm:
            await crm.publish_raw(ACME, poison)
            good = envelope("globex", "invoice.upserted", invoice("G-1", 1, "draft"))
            await crm.publish_raw(GLOBEX, json.dumps(good).encode())
            later = envelope("acme", "invoice.upserted", invoice("A-2", 1, "draft"))
            await crm.publish_raw(ACME, json.dumps(later).encode())
            await crm.wait_for(
                lambda r: (
                    bool(_globex_state(crm, "G-1"))
                    and bool(crm.on("syncd/acme/sync/invoice/A-2"))
                )
            )
        [rejected] = crm.on("syncd/acme/out/input/rejected")
        assert rejected.body["data"]["message_id"] == message_id
        assert reason in rejected.body["data"]["reason"]
        assert _globex_state(crm, "G-1") == ["draft"]
        db = DbView(syncd.config.parent / "syncd.db")
        assert db.outcomes("acme")[message_id] == "rejected"
        await _outbox_empties(db)
        # the poison survives no restart: syncd comes back and keeps flowing
        syncd.stop()
        syncd.start()
        async with Crm(broker.port) as crm:
            again = envelope("globex", "invoice.upserted", invoice("G-2", 1, "draft"))
            await crm.publish_raw(GLOBEX, json.dumps(again).encode())
            await crm.wait_for(lambda r: bool(_globex_state(crm, "G-2")))
    finally:
        syncd.stop()


async def test_an_outbox_row_the_broker_would_refuse_is_parked(tmp_path, broker):
    """Issue 9 §4: a stored row whose topic Mosquitto drops syncd for never blocks."""
    syncd = _syncd(tmp_path, broker)
    db_path = syncd.config.parent / "syncd.db"
    view = DbView(db_path)  # as an older syncd left it: the row is already stored
    await asyncio.to_thread(view.create_empty)
    bad_topic = "syncd/acme/sync/invoice/CTL\x01A"
    view.execute(
        "INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, 1)", bad_topic, b"{}"
    )
    syncd.start()
    try:
        async with Crm(broker.port) as crm:
            good = envelope("globex", "invoice.upserted", invoice("G-1", 1, "draft"))
            await crm.publish_raw(GLOBEX, json.dumps(good).encode())
            await crm.wait_for(lambda r: bool(_globex_state(crm, "G-1")))
        await _outbox_empties(view)
        [failure] = view.failures("acme")
        assert failure[1:3] == ("publish", "broker_refused")
        assert "U+0001" in failure[3]
        assert "malformed" not in broker.log().lower()  # syncd never sent it
    finally:
        syncd.stop()


async def test_a_row_the_broker_drops_syncd_for_is_parked_after_5_tries(tmp_path):
    """Issue 9 §4: a row Mosquitto disconnects syncd for (here: over max_packet_size)."""
    broker = Broker(tmp_path / "broker", extra_conf="max_packet_size 4096\n")
    broker.start()
    syncd = _syncd(tmp_path, broker)
    db_path = syncd.config.parent / "syncd.db"
    view = DbView(db_path)
    await asyncio.to_thread(view.create_empty)
    view.execute(
        "INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, 0)",
        "syncd/acme/out/sync/failed",
        b"x" * 10_000,
    )
    syncd.start()
    try:
        async with Crm(broker.port) as crm:
            good = envelope("globex", "invoice.upserted", invoice("G-1", 1, "draft"))
            await crm.publish_raw(GLOBEX, json.dumps(good).encode())
            await crm.wait_for(lambda r: bool(_globex_state(crm, "G-1")), timeout=40)
        view = DbView(db_path)
        [failure] = view.failures("acme")
        assert failure[1:3] == ("publish", "broker_refused")
        assert "dropped the connection each of the last 5 times" in failure[3]
        await _outbox_empties(view)
    finally:
        syncd.stop()
        broker.stop()


async def test_a_message_the_broker_refuses_is_parked_not_lost(tmp_path):
    """Issue 9: a PUBACK that refuses (Mosquitto ACL, 0x87) parks the row as a failure."""
    acl = tmp_path / "acl"
    acl.write_text("topic deny syncd/acme/sync/invoice/DENIED\ntopic readwrite #\n")
    broker = Broker(tmp_path / "broker", extra_conf=f"acl_file {acl}\n")
    broker.start()
    syncd = _syncd(tmp_path, broker)
    syncd.start()
    try:
        async with Crm(broker.port) as crm:
            for invoice_id in ("DENIED", "FINE"):
                body = envelope(
                    "acme", "invoice.upserted", invoice(invoice_id, 1, "draft")
                )
                await crm.publish_raw(ACME, json.dumps(body).encode())
            await crm.wait_for(lambda r: bool(crm.on("syncd/acme/sync/invoice/FINE")))
        assert not crm.on("syncd/acme/sync/invoice/DENIED")
        view = DbView(syncd.config.parent / "syncd.db")
        [failure] = view.failures("acme")
        assert failure[1:3] == ("publish", "broker_refused")
        assert "Not authorized (0x87)" in failure[3]
        await _outbox_empties(view)
    finally:
        syncd.stop()
        broker.stop()
