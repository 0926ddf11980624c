"""The one place that reaches into aiomqtt's and paho's internals (aiomqtt 2.x, paho 2.x).

aiomqtt 2 hides what syncd needs for at-least-once without loss: manual acks (an
inbound message is acked only after its batch is committed, aiomqtt #345), the PUBACK's
reason code, a batch of publishes with one waiter, the queue of already-arrived messages
and the future that ends with the connection. `Wire` names each of those; the rest of
syncd never touches a private field. tests/test_mqtt_wire.py checks every one against a
real broker, so an aiomqtt upgrade that moves them fails there, not in production.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import aiomqtt
import paho.mqtt.client as paho


class Acked(Protocol):
    """What aiomqtt calls when a PUBACK arrives for a message id."""

    def set(self) -> None:
        """The broker answered."""


class Wire:
    """One aiomqtt client, with manual acks on, seen through what syncd needs."""

    def __init__(
        self, client: aiomqtt.Client, on_refused: Callable[[int, str], None]
    ) -> None:
        self.client = client
        self._paho: paho.Client = client._client
        # before connecting: the broker's queue flushes at once, all of it un-acked
        self._paho.manual_ack_set(True)
        # syncd adds no per-topic callbacks: paho need not walk its matcher per message
        self._paho._on_message_filtered = _NO_FILTERS  # type: ignore[assignment]
        self._paho.on_publish = _noting_refusals(self._paho.on_publish, on_refused)
        client.pending_calls_threshold = 100_000  # a burst is not a leak: no warnings

    @property
    def lost(self) -> asyncio.Future[None]:
        """Done when the connection ends (with the cause as its exception)."""
        return self.client._disconnected

    def publish_now(self, topic: str, payload: bytes, retain: bool) -> int | None:
        """Queue one QoS 1 publish without a task; its message id, or None if refused."""
        info = self._paho.publish(topic, payload, 1, retain)
        return info.mid if info.rc == paho.MQTT_ERR_SUCCESS else None

    def on_puback(self, mid: int, waiter: Acked) -> None:
        """Have `waiter.set()` called when the broker answers message `mid`."""
        self.client._pending_publishes[mid] = waiter  # type: ignore[assignment]

    def forget(self, mid: int) -> None:
        """Stop waiting for message `mid`'s answer."""
        self.client._pending_publishes.pop(mid, None)

    def arrived(self, limit: int) -> list[aiomqtt.Message]:
        """Messages already received and not yet taken, without waiting (≤ `limit`)."""
        queue: asyncio.Queue[aiomqtt.Message] = self.client._queue
        taken: list[aiomqtt.Message] = []
        while not queue.empty() and len(taken) < limit:
            taken.append(queue.get_nowait())
        return taken

    def ack(self, message: aiomqtt.Message) -> None:
        """Acknowledge a received message (after what it caused is committed)."""
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)


def _noting_refusals(
    aiomqtt_on_publish: Any, on_refused: Callable[[int, str], None]
) -> Any:
    """A PUBACK with a reason ≥ 0x80 refused the message: say so, then let aiomqtt see it."""

    def on_publish(*args: Any) -> None:
        _client, _userdata, mid, reason, _properties = args
        if reason is not None and reason.is_failure:
            on_refused(mid, f"{reason} (0x{reason.value:02X})")
        aiomqtt_on_publish(*args)

    return on_publish


class _NoFilters:
    """Stands in for paho's per-topic callback matcher, which syncd never fills."""

    def iter_match(self, topic: str) -> Iterator[Any]:
        return iter(())


_NO_FILTERS = _NoFilters()


class _LazyInfo(paho.MQTTMessageInfo):
    """paho's MQTTMessageInfo, its Condition made only when someone waits on it.

    paho builds one for every message sent and received, each with a Condition (and
    its lock): measured as 4 % of syncd's CPU per message, while syncd never waits on
    one (PUBACKs come through `on_publish`). Behaves the same when waited on.
    """

    __slots__ = ("_made",)

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self._published = False
        self.rc = paho.MQTT_ERR_SUCCESS
        self._iterpos = 0
        self._made: threading.Condition | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        if self._made is None:
            self._made = threading.Condition()
        return self._made


def lazy_message_info() -> None:
    """Have paho build `_LazyInfo` for every message (idempotent)."""
    paho.MQTTMessageInfo = _LazyInfo  # type: ignore[misc]


lazy_message_info()
