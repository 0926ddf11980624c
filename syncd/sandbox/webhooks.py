"""Webhook delivery as QBO does it: batched, signed, retried, at least once, in order.

Every change is queued; after `batch_delay` the queue goes out as one notification per
realm (legacy `eventNotifications`) or one CloudEvents array (which may mix realms). A
delivery is retried on a non-200 answer or no answer within 3 s, after 10 s, 20 s, 30 s,
5 min, 20 min, 2 h, 4 h, then every 6 h (divided by `time_scale`), and later deliveries
wait behind it ("you may not receive subsequent events until you acknowledge the first").
Faults drop, duplicate, delay (so reorder) deliveries at given rates with a seed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import simplejson

from syncd.sandbox.clock import local_time
from syncd.sandbox.company import Change

RETRY_SECONDS = (10, 20, 30, 300, 1200, 7200, 14400, 21600)
ANSWER_TIMEOUT = 3.0
# the names on the app's subscription page (qbo.md §10): `void`, not `voided`
_PAST = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Void": "void",
    "Emailed": "emailed",
    "Merge": "merged",
}
MAX_EVENTS = 100  # CloudEvents per delivery (qbo.md §10)


@dataclass
class WebhookFaults:
    """Rates (0..1) of delivery faults."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 2.0


@dataclass
class Delivery:
    """One POST to the app, and what became of it."""

    body: bytes
    realms: list[str]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    delivered: bool = False
    dropped: bool = False

    def report(self) -> dict[str, Any]:
        """What the admin API shows."""
        return {
            "id": self.id,
            "realms": self.realms,
            "attempts": self.attempts,
            "statuses": self.statuses,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "body": simplejson.loads(self.body),
        }


def sign(body: bytes, verifier: str) -> str:
    """intuit-signature: base64(HMAC-SHA256(verifier token, raw body))."""
    return base64.b64encode(
        hmac.new(verifier.encode(), body, hashlib.sha256).digest()
    ).decode()


def legacy_body(realm_id: str, changes: list[Change]) -> bytes:
    """One realm's `eventNotifications` payload."""
    entities = [
        {
            "name": c.entity,
            "id": c.id,
            "operation": c.operation,
            "lastUpdated": local_time(c.at),
            **c.data,
        }
        for c in changes
    ]
    note = {"realmId": realm_id, "dataChangeEvent": {"entities": entities}}
    text: str = simplejson.dumps({"eventNotifications": [note]})
    return text.encode()


def cloudevents_body(changes: list[Change]) -> bytes:
    """A CloudEvents array (realms may be mixed)."""
    events = [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "intuit.sandbox",
            "type": f"qbo.{c.entity.lower()}.{_PAST.get(c.operation, c.operation.lower())}.v1",
            "datacontenttype": "application/json",
            "time": c.at.isoformat().replace("+00:00", "Z"),
            "intuitentityid": c.id,
            "intuitaccountid": c.realm_id,
            "data": dict(c.data),
        }
        for c in changes
    ]
    text: str = simplejson.dumps(events)
    return text.encode()


class Notifier:
    """Queues changes and delivers them to the app's webhook URL."""

    def __init__(
        self,
        url: str | None,
        verifier: str,
        fmt: str = "legacy",
        batch_delay: float = 0.2,
        time_scale: float = 1.0,
    ) -> None:
        self.url, self.verifier, self.fmt = url, verifier, fmt
        # several URLs (comma-separated): each post goes to the next, as a load balancer
        # in front of several replicas would send them
        self._urls = (url or "").split(",")
        self._turn = 0
        self.batch_delay, self.time_scale = batch_delay, time_scale
        self.faults = WebhookFaults()
        self.rng = random.Random(0)  # noqa: S311 -- fault rolls, not secrets
        self.deliveries: list[Delivery] = []
        self._pending: list[Change] = []
        self._queue: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = 0  # deliveries being posted (and retried) now

    def notify(self, change: Change) -> None:
        """Queue one change (called by every company on every change)."""
        if self.url:
            self._pending.append(change)
            self._wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Batch, then deliver in order, forever."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.batch_delay)
            self._wake.clear()
            self._enqueue(self._take())
            while self._queue:
                delivery = self._queue.popleft()
                self._sending += 1
                try:
                    await self._deliver(session, delivery)
                finally:
                    self._sending -= 1

    def outstanding(self) -> int:
        """Changes and deliveries not answered yet (dropped ones are not coming)."""
        return len(self._pending) + len(self._queue) + len(self._tasks) + self._sending

    def _take(self) -> list[Delivery]:
        changes, self._pending = self._pending, []
        if not changes:
            return []
        if self.fmt == "cloudevents":
            chunks = [
                changes[n : n + MAX_EVENTS] for n in range(0, len(changes), MAX_EVENTS)
            ]
            return [
                Delivery(cloudevents_body(chunk), sorted({c.realm_id for c in chunk}))
                for chunk in chunks
            ]
        by_realm: dict[str, list[Change]] = {}
        for change in changes:
            by_realm.setdefault(change.realm_id, []).append(change)
        return [Delivery(legacy_body(r, cs), [r]) for r, cs in by_realm.items()]

    def _enqueue(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self.deliveries.append(delivery)
            roll = self.rng.random()
            if roll < self.faults.drop:
                delivery.dropped = True
                continue
            if roll < self.faults.drop + self.faults.delay:
                self._later(delivery, self.faults.delay_seconds)
                continue
            self._queue.append(delivery)
            if self.rng.random() < self.faults.duplicate:
                self._queue.append(delivery)

    def _later(self, delivery: Delivery, seconds: float) -> None:
        async def requeue() -> None:
            await asyncio.sleep(seconds)
            self._queue.append(delivery)
            self._wake.set()

        task = asyncio.create_task(requeue(), name="sandbox.webhook.delayed")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, session: aiohttp.ClientSession, delivery: Delivery
    ) -> None:
        """Retry one delivery until it is answered 200 (later ones wait)."""
        for wait in (0, *RETRY_SECONDS, *([21600] * 1000)):
            if wait:
                await asyncio.sleep(wait / self.time_scale)
            delivery.attempts += 1
            status = await self._post(session, delivery)
            delivery.statuses.append(status)
            if status == 200:
                delivery.delivered = True
                return

    async def _post(
        self, session: aiohttp.ClientSession, delivery: Delivery
    ) -> int | str:
        headers = {
            "intuit-signature": sign(delivery.body, self.verifier),
            "Content-Type": "application/cloudevents+json"
            if self.fmt == "cloudevents"
            else "application/json",
        }
        try:
            url = self._urls[self._turn % len(self._urls)]
            self._turn += 1
            async with session.post(
                url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT),
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def close(self) -> None:
        """Cancel delayed deliveries."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
