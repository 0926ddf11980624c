"""The fence around aiomqtt's internals, checked against a real Mosquitto.

Each thing `syncd.bus.wire.Wire` reaches into aiomqtt or paho for is exercised here:
manual acks (an un-acked message comes back on the next connection), publishes with one
waiter per batch, PUBACK reason codes, already-arrived messages, the connection's end.
An aiomqtt upgrade that moves any of them fails this file first.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from syncd.bus.wire import Wire
from tests.eventually import eventually
from tests.mosquitto import Broker


class _Answered:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        self.event.set()


def _wire(
    broker: Broker, refusals: dict[int, str] | None = None, name: str = "wire-test"
) -> Wire:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
    )
    found = refusals if refusals is not None else {}
    return Wire(client, found.__setitem__)


@pytest.fixture
async def acl_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    acl = tmp_path / "acl"
    acl.write_text("topic deny t/denied\ntopic readwrite #\n")
    broker = Broker(tmp_path / "broker", extra_conf=f"acl_file {acl}\n")
    broker.start()
    yield broker
    broker.stop()


def _gathered(wire: Wire, got: list[aiomqtt.Message], count: int) -> bool:
    """Add what has arrived to `got`; True once it holds `count` messages."""
    got += wire.arrived(count - len(got))
    return len(got) >= count


async def _take(wire: Wire, count: int) -> list[aiomqtt.Message]:
    async with asyncio.timeout(10):
        first = await anext(wire.client.messages)
        got = [first]
        await eventually(lambda: _gathered(wire, got, count), every=0.02)
    return got


async def test_an_unacked_message_comes_back_on_the_next_connection(acl_broker):
    """Manual acks: acked messages are gone, the un-acked one is redelivered."""
    wire = _wire(acl_broker)
    async with wire.client:
        await wire.client.subscribe("t/in", qos=1)
    async with aiomqtt.Client("127.0.0.1", acl_broker.port) as sender:
        for n in range(3):
            await sender.publish("t/in", f"m{n}".encode(), qos=1)
    wire = _wire(acl_broker)
    async with wire.client:
        first = await _take(wire, 3)
        assert [m.payload for m in first] == [b"m0", b"m1", b"m2"]
        wire.ack(first[0])
        wire.ack(first[1])
        # no wait: the acks leave before the DISCONNECT that leaving the block sends,
        # and the broker reads its socket in order
    wire = _wire(acl_broker)
    async with wire.client:
        [again] = await _take(wire, 1)
        assert again.payload == b"m2"
        wire.ack(again)
        assert not wire.lost.done()
    assert wire.lost.done()  # the connection's end is visible


async def test_a_batch_of_publishes_is_answered_and_refusals_have_their_reason(
    acl_broker,
):
    """One waiter per message id; a PUBACK ≥ 0x80 (ACL deny) names its reason.

    (With Mosquitto 2.0 and paho 2, the connection then drops: syncd reconnects and
    carries on, tests/integration/test_poison.py.)
    """
    refusals: dict[int, str] = {}
    wire = _wire(acl_broker, refusals, name="publisher")
    async with wire.client:
        answered: dict[int, _Answered] = {}
        for topic in ("t/a", "t/b", "t/denied"):
            mid = wire.publish_now(topic, b"x", retain=False)
            assert mid is not None
            answered[mid] = _Answered()
            wire.on_puback(mid, answered[mid])
        async with asyncio.timeout(10):
            for waiter in answered.values():
                await waiter.event.wait()
        mids = list(answered)
        assert list(refusals) == [mids[2]]
        assert "Not authorized (0x87)" in refusals[mids[2]]
        for mid in mids:
            wire.forget(mid)


async def test_paho_s_per_message_shortcuts_keep_its_behaviour(broker: Broker):
    """Wire's two paho shortcuts: messages still arrive, and a publish can be waited on.

    paho's message infos make their Condition only when waited on; its per-topic
    callback matcher, never filled by syncd, is not walked. Both names are paho's own:
    an upgrade that renames them fails here.
    """
    matching = inspect.getsource(paho.Client._handle_on_message)
    assert "self._on_message_filtered.iter_match(" in matching
    wire = _wire(broker, name="shortcut-test")
    paho_client = wire.client._client
    async with wire.client:
        await wire.client.subscribe("t/short", qos=1)
        info = paho_client.publish("t/short", b"one", qos=1)
        assert info._made is None  # type: ignore[attr-defined]
        await asyncio.to_thread(info.wait_for_publish, 5)  # a real wait, on a Condition
        assert info.is_published()
        [message] = await _take(wire, 1)
        assert message.payload == b"one"
        wire.ack(message)
