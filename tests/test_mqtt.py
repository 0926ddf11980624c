"""The MQTT link's parts that can be checked without a broker (the rest is integration)."""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from syncd.bus.link import _BatchAcks, share_paho_property_tables


def test_shared_property_tables_pack_and_unpack_as_paho_does():
    """Paho's v5 Properties still round-trip after their tables are shared."""
    share_paho_property_tables()
    sent: Any = Properties(PacketTypes.PUBLISH)
    sent.UserProperty = ("tenant", "acme")
    sent.MessageExpiryInterval = 60
    received: Any = Properties(PacketTypes.PUBLISH)
    received.unpack(sent.pack())
    assert received.UserProperty == [("tenant", "acme")]
    assert received.MessageExpiryInterval == 60
    fresh = Properties(PacketTypes.PUBLISH)
    assert not hasattr(fresh, "UserProperty")  # values never leak between instances
    assert fresh.pack() == b"\x00"


def test_batch_acks_count_only_the_acked_prefix():
    """Rows after the first un-acked one are republished: order is kept."""
    acks = _BatchAcks()
    for mid in (1, 2, 4):
        acks.waiter(mid).set()
    assert acks.acked_prefix([1, 2, 3, 4]) == 2
    assert acks.acked_prefix([1, 2]) == 2
    assert acks.acked_prefix([3]) == 0
