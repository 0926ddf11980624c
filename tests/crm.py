"""A CRM of the tests: publishes envelopes and collects what syncd publishes."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt

_ids = itertools.count(1)
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def body(self) -> Any:
        return json.loads(self.payload)


def envelope(
    tenant: str,
    message_type: str,
    data: dict[str, Any],
    message_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """An envelope as a CRM sends it, dated now (or `at`, a test's own clock)."""
    return {
        "id": message_id or f"msg-{next(_ids)}",
        "type": message_type,
        "tenant": tenant,
        "occurred_at": (at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "data": data,
    }


def invoice(invoice_id: str, version: int, status: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "version": version,
        "status": status,
        "currency": "USD",
        "total": "199.50",
        "lines": [
            {
                "description": "Ticket #42",
                "item": "Consulting",
                "quantity": "2",
                "unit_price": "100.00",
            }
        ],
    }
    data.update(extra)
    return data


class Crm:
    """Connects to the broker, subscribes to everything syncd says."""

    def __init__(self, port: int, prefix: str = "syncd") -> None:
        self.port = port
        self.prefix = prefix
        self.received: list[Received] = []
        self._client = aiomqtt.Client(
            "127.0.0.1", port, identifier=f"crm-{next(_ids)}", socket_options=NODELAY
        )
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._barriers: set[bytes] = set()  # markers back from the broker

    async def __aenter__(self) -> Crm:
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.prefix}/#", qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for m in self._client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            if m.topic.value == self._barrier_topic:
                self._barriers.add(payload)
            else:
                self.received.append(Received(m.topic.value, payload, m.retain))
            self._arrived.set()

    @property
    def _barrier_topic(self) -> str:
        return f"{self.prefix}/_test/barrier"  # syncd reads P/+/crm/# only

    async def barrier(self, timeout: float = 15) -> None:
        """Return once all the broker took before now has reached this client.

        The broker hands one subscriber its messages in the order it took them, so a
        marker published now comes back after whatever syncd published before it: a
        positive signal that "nothing more came", instead of a sleep.
        """
        marker = f"barrier-{next(_ids)}".encode()
        await self._client.publish(self._barrier_topic, marker, qos=1)
        async with asyncio.timeout(timeout):
            while marker not in self._barriers:
                self._arrived.clear()
                await self._arrived.wait()

    async def publish_raw(
        self, topic: str, payload: bytes, retain: bool = False
    ) -> None:
        await self._client.publish(topic, payload, qos=1, retain=retain)

    async def send(
        self,
        tenant: str,
        message_type: str,
        data: dict[str, Any],
        retain: bool = False,
        **kw: Any,
    ) -> dict[str, Any]:
        env = envelope(tenant, message_type, data, **kw)
        topic = f"{self.prefix}/{tenant}/crm/" + message_type.replace(".", "/")
        await self.publish_raw(topic, json.dumps(env).encode(), retain)
        return env

    def on(self, suffix: str) -> list[Received]:
        return [r for r in self.received if r.topic.endswith(suffix)]

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 15
    ) -> list[Received]:
        async with asyncio.timeout(timeout):
            while not predicate(self.received):
                self._arrived.clear()
                await self._arrived.wait()
        return self.received
