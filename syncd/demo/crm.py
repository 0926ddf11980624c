"""The demo's CRM: publishes invoice events and reads what syncd answers, over MQTT."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiomqtt


@dataclass(frozen=True, slots=True)
class Heard:
    """One message syncd published."""

    topic: str
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        """The envelope's data."""
        return dict(self.body.get("data") or {})


class Crm:
    """A CRM on the broker: `send` an event, `wait` for syncd's answer."""

    def __init__(self, port: int, prefix: str = "syncd") -> None:
        self._prefix = prefix
        self._client = aiomqtt.Client("127.0.0.1", port, identifier="demo-crm")
        self._ids = itertools.count(1)
        self.heard: list[Heard] = []
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Crm:
        await self._client.__aenter__()
        await self._client.subscribe(f"{self._prefix}/+/out/#", qos=1)
        await self._client.subscribe(f"{self._prefix}/+/sync/#", qos=1)
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._client.__aexit__(None, None, None)

    async def send(self, tenant: str, kind: str, data: dict[str, Any]) -> str:
        """Publish one event (QoS 1); its id."""
        message_id = f"demo-{next(self._ids)}"
        envelope = {
            "id": message_id,
            "type": kind,
            "tenant": tenant,
            "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": data,
        }
        topic = f"{self._prefix}/{tenant}/crm/" + kind.replace(".", "/")
        await self._client.publish(topic, json.dumps(envelope).encode(), qos=1)
        return message_id

    async def wait(
        self,
        suffix: str,
        matches: Callable[[dict[str, Any]], bool],
        within: float = 30,
    ) -> dict[str, Any]:
        """The data of the first message on a topic ending in `suffix` that `matches`."""
        async with asyncio.timeout(within):
            while True:
                for heard in self.heard:
                    if heard.topic.endswith(suffix) and matches(heard.data):
                        return heard.data
                self._news.clear()
                await self._news.wait()

    async def _listen(self) -> None:
        async for message in self._client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b"{}"
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            self.heard.append(Heard(message.topic.value, body))
            self._news.set()
