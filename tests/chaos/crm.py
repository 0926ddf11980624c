"""The chaos run's CRM: a persistent MQTT session that outlives broker restarts.

It publishes with retries (a publish cut by a restart goes again with the same envelope id:
at least once, as real CRMs do) and keeps everything syncd says, deduplicated by envelope id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from tests.crm import NODELAY

# aiomqtt warns of every publish waiting while the broker is down: the saboteur's doing
_QUIET = logging.getLogger("chaos.crm.mqtt")
_QUIET.setLevel(logging.ERROR)


@dataclass
class Heard:
    """What syncd said, per tenant: each message once, latest retained state per topic."""

    messages: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    retained: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: int = 0  # including redeliveries of the same envelope

    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [
            body for topic, body in self.messages.values() if topic.endswith(suffix)
        ]


class ChaosCrm:
    """One client for publishing and hearing; reconnects by itself."""

    def __init__(
        self, port: int, name: str, on_message: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.port, self.name, self.on_message = port, name, on_message
        self.heard = Heard()
        self.undecodable = 0
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.republished = 0

    async def __aenter__(self) -> ChaosCrm:
        self._task = asyncio.create_task(self._run(), name=f"crm.{self.name}")
        async with asyncio.timeout(20):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=self.name,
                clean_session=False,
                socket_options=NODELAY,
                keepalive=5,
                logger=_QUIET,
            )
            self._broken.clear()
            try:
                async with client:
                    await client.subscribe("syncd/#", qos=1)
                    self._client = client
                    self._connected.set()
                    reader = asyncio.create_task(self._read(client))
                    broken = asyncio.create_task(self._broken.wait())
                    try:
                        # a socket a broker restart broke can leave the reader waiting
                        # for ever: a publish that fails says so, and we reconnect
                        await asyncio.wait(
                            {reader, broken}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        reader.cancel()
                        broken.cancel()
            except aiomqtt.MqttError:
                pass
            self._connected.clear()
            self._client = None
            await asyncio.sleep(0.2)

    async def _read(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for m in client.messages:
                self._keep(m.topic.value, m.payload, m.retain)

    def _keep(self, topic: str, payload: object, retain: bool) -> None:
        if "/crm/" in topic:  # its own messages, back from the broker
            return
        self.heard.deliveries += 1
        try:
            body = json.loads(payload if isinstance(payload, bytes) else b"")
            message_id = str(body["id"])
        except (ValueError, KeyError, TypeError):
            self.undecodable += 1
            return
        if "/sync/invoice/" in topic or "/sync/credit_note/" in topic:
            self.heard.retained[topic] = body
        if message_id in self.heard.messages:
            return
        self.heard.messages[message_id] = (topic, body)
        self.on_message(topic, body)

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 until the broker has it (again after a cut: syncd deduplicates by id)."""
        first = True
        while True:
            await self._connected.wait()
            client = self._client
            if client is None:
                continue
            try:
                await client.publish(topic, payload, qos=1, timeout=5)
            except aiomqtt.MqttError:
                first = False
                if client is self._client:  # reconnect, whatever the reader thinks
                    self._connected.clear()
                    self._broken.set()
                await asyncio.sleep(0.1)
                continue
            self.published += 1
            self.republished += not first
            return
