"""The MQTT link: one persistent v5 session, manual acks after commit, reconnect forever.

A new aiomqtt Client per connection: message ids are per connection, so a message read
on one connection must never be acked on the next, and aiomqtt's queue is not cleared
between connections. Whatever was not acked is redelivered by the broker. aiomqtt's
internals (manual acks, PUBACK reasons, batch publishes) are reached only through
`syncd.bus.wire.Wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog
from paho.mqtt import properties as paho_properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from syncd.bus.probe import accepts_anonymous
from syncd.bus.wire import Wire
from syncd.clock import Clock
from syncd.config import MqttConfig, Secrets
from syncd.const import TOPIC_STATUS
from syncd.exceptions import StoreError
from syncd.loop import Backoff, Loop, Said
from syncd.models import OutboxRow, RawMessage

log = structlog.get_logger(__name__)


def share_paho_property_tables() -> None:
    """Let paho's MQTT v5 Properties share their constant lookup tables.

    paho rebuilds two 40-entry tables (with ~30 `list.index` calls) for every packet it
    decodes or sends: measured as a tenth of syncd's CPU per message. The tables are only
    ever read, so one shared copy behaves the same. Idempotent.
    """
    cls = paho_properties.Properties
    if getattr(cls.__init__, "_syncd_shared", False):
        return
    template = cls(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    shared = {
        name: template.__dict__[name] for name in ("types", "names", "properties")
    }

    def __init__(self: Any, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        self.__dict__.update(shared)

    __init__._syncd_shared = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[method-assign]


share_paho_property_tables()

BatchHandler = Callable[[list[RawMessage]], Awaitable[object]]
_MAX_BATCH = 500
_BACKOFF_FIRST, _BACKOFF_CAP = 0.2, 30.0
_PUBLISH_TIMEOUT = 10.0
_CALL_TIMEOUT = 4.0


class MqttLink:
    """Owns the broker connection: intake into a batch handler, and publishing."""

    def __init__(
        self,
        config: MqttConfig,
        secrets: Secrets,
        handler: BatchHandler,
        clock: Clock,
        replica: str | None = None,
    ) -> None:
        self._config, self._clock = config, clock
        # one of several replicas: its own client id (its own session, its own queued
        # share) and, when sharing the subscription, its own status topic
        self.client_id = (
            f"{config.client_id}-{replica}" if replica else config.client_id
        )
        self._secrets = secrets
        self._handler = handler
        self._wire: Wire | None = None
        self.connected = asyncio.Event()
        self._intake_open = True
        self._intake_stopped = asyncio.Event()
        self._closing = asyncio.Event()
        self._failing = False
        self._consumer: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.status_topic = f"{config.topic_prefix}/{TOPIC_STATUS}"
        if config.shared_group and replica:
            self.status_topic += f"/{replica}"
        self.intake_topic = f"{config.topic_prefix}/+/crm/#"
        if config.shared_group:  # the broker hands each message to one replica
            self.intake_topic = f"$share/{config.shared_group}/{self.intake_topic}"
        self._refusals: dict[int, str] = {}  # mid → the reason of a PUBACK that refused
        self._probe: asyncio.Task[None] | None = None
        self._reconnects = Backoff(_BACKOFF_FIRST, _BACKOFF_CAP)
        # the batch was not committed when a round fails, so not acked: it comes again
        self._loop = Loop(
            self._session,
            interval=self._reconnects.pause,
            said=Said(paused="intake_paused", failed="intake_failed"),
        )

    async def run(self) -> None:
        """Connect, serve and reconnect with capped jittered backoff until closed."""
        await self._loop.run()

    async def _session(self) -> int:
        """One connection, served until it falls (a round of the link's loop)."""
        wire = self._new_wire()
        try:
            async with wire.client:
                self._reconnects.reset()
                await self._serve(wire)
        except aiomqtt.MqttError as exc:
            self._lost(exc)
        finally:
            self._wire = None
            self.connected.clear()
        return 0

    async def publish_many(self, messages: Sequence[OutboxRow]) -> Published:
        """Publish in order at QoS 1; say how many from the start the broker answered.

        One waiter for the whole batch instead of aiomqtt's task per publish.
        """
        wire = self._wire
        if wire is None:
            return Published(0, {}, lost=False)  # the publisher waits, tries again
        acks = _BatchAcks()
        mids: list[int] = []
        try:
            for m in messages:
                mid = wire.publish_now(m.topic, m.payload, m.retain)
                if mid is None:
                    break
                mids.append(mid)
                wire.on_puback(mid, acks.waiter(mid))
            with contextlib.suppress(TimeoutError):
                await acks.wait(len(mids), _PUBLISH_TIMEOUT, wire.lost)
        finally:
            for mid in mids:
                wire.forget(mid)
        acked = acks.acked_prefix(mids)
        refused = {
            n: self._refusals.pop(mid)
            for n, mid in enumerate(mids[:acked])
            if mid in self._refusals
        }
        return Published(acked, refused, lost=wire.lost.done())

    async def stop_intake(self) -> None:
        """Take no new messages; let the batch being committed finish and be acked."""
        self._intake_open = False
        self._intake_stopped.set()
        if self._consumer is not None:
            self._consumer.cancel()
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight

    async def close(self) -> None:
        """Publish `offline`, disconnect cleanly and end `run`."""
        self._closing.set()
        self._loop.stop()
        if self._probe is not None:
            self._probe.cancel()

    async def _warn_if_open(self) -> None:
        """Say so when the broker lets anyone in: its ACL is all that isolates tenants."""
        c = self._config
        try:
            open_ = await accepts_anonymous(c, tls_context(c))
        except Exception:  # a probe only: its failure is no news
            log.debug("broker_probe_failed", exc_info=True)
            return
        if open_:
            log.warning(
                "broker_accepts_anonymous",
                host=c.host,
                port=c.port,
                why="anyone who reaches the broker can write any tenant's CRM topics "
                "(void, delete, pay) and forge syncd's messages",
                fix="allow_anonymous false, a password per CRM and the per-tenant ACL "
                "(README, 'Deployment: a closed broker')",
            )

    def _new_wire(self) -> Wire:
        c = self._config
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = c.session_expiry
        props.ReceiveMaximum = c.receive_maximum
        client = aiomqtt.Client(
            c.host,
            c.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # with SessionExpiryInterval: the broker keeps our queue
            properties=props,
            keepalive=c.keepalive,
            # a broker that resets the socket mid-CONNECT leaves aiomqtt waiting this long
            timeout=_CALL_TIMEOUT,
            username=self._secrets.get("MQTT_USERNAME"),
            password=self._secrets.get("MQTT_PASSWORD"),
            tls_context=tls_context(c),
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            # Nagle + delayed ACKs hold a lone PUBACK or state message back ~40 ms
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        self._refusals.clear()  # message ids are per connection
        return Wire(client, self._refusals.__setitem__)

    async def _serve(self, wire: Wire) -> None:
        client = wire.client
        await client.publish(self.status_topic, b"online", qos=1, retain=True)
        if self._intake_open:
            # never the retained messages of these topics: the broker would send them
            # again at every subscribe, and a message would act again once its ledger
            # row is gone (a second receipt, a second e-mail)
            await client.subscribe(
                self.intake_topic,
                options=SubscribeOptions(
                    qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND
                ),
            )
        self._wire = wire
        self.connected.set()
        log.info("mqtt_connected", host=self._config.host, port=self._config.port)
        if self._probe is None:  # once a run, beside the work: never delays intake
            self._probe = asyncio.create_task(self._warn_if_open(), name="syncd.probe")
        self._failing = False
        self._consumer = None
        if self._intake_open:
            self._consumer = asyncio.create_task(
                self._consume(wire), name="syncd.intake"
            )
        try:
            await self._until_closed(wire, self._consumer)
        finally:
            if self._consumer is not None:
                self._consumer.cancel()
        self._wire = None
        await client.publish(self.status_topic, b"offline", qos=1, retain=True)

    async def _until_closed(
        self, wire: Wire, consumer: asyncio.Task[None] | None
    ) -> None:
        """Return when closing; raise when the connection or the intake fails."""
        closing = asyncio.ensure_future(self._closing.wait())
        lost = wire.lost
        waiting: set[asyncio.Future[Any]] = {closing, lost}
        if consumer is not None:
            waiting.add(consumer)
        try:
            while not closing.done():
                done, _ = await asyncio.wait(
                    waiting, return_when=asyncio.FIRST_COMPLETED
                )
                if lost in done:
                    cause = lost.exception()
                    raise aiomqtt.MqttError(f"connection lost: {cause}")
                if consumer is not None and consumer in done:
                    waiting.discard(consumer)
                    if not consumer.cancelled():
                        consumer.result()  # raises what ended the intake
        finally:
            closing.cancel()

    async def _consume(self, wire: Wire) -> None:
        messages = wire.client.messages
        while self._intake_open:
            first = await anext(messages)
            # take what has already arrived without a task per message: group commit
            batch = [first, *wire.arrived(_MAX_BATCH - 1)]
            self._inflight = asyncio.create_task(
                self._process(wire, batch), name="syncd.intake.batch"
            )
            # shielded: stopping intake must not cut a commit between store and ack
            await asyncio.shield(self._inflight)

    async def _process(self, wire: Wire, batch: list[aiomqtt.Message]) -> None:
        now = self._clock()
        raw = [
            RawMessage(
                topic=m.topic.value,
                payload=_bytes(m.payload),
                received_at=now,
                retained=bool(m.retain),
            )
            for m in batch
        ]
        await self._handle_until_stored(raw)
        for m in batch:
            wire.ack(m)

    async def _handle_until_stored(self, raw: list[RawMessage]) -> None:
        """Hand the batch over; while the store cannot be used, pause and try again.

        The batch stays un-acked meanwhile: the broker keeps it, and the rest of the
        queue waits behind the receive window. Stopping gives up on it, still un-acked.
        """
        pauses = Backoff(_BACKOFF_FIRST, _BACKOFF_CAP)
        while True:
            try:
                await self._handler(raw)
            except StoreError as exc:
                if self._intake_stopped.is_set():
                    raise
                pause = pauses.pause()
                log.warning("intake_paused", reason=str(exc), retry_in=round(pause, 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._intake_stopped.wait(), pause)
            else:
                if pauses.backing_off:
                    log.info("intake_resumed")
                return

    def _lost(self, exc: Exception) -> None:
        """Log the first failure of a streak as a warning, the repeats at debug."""
        if self._closing.is_set():
            return
        if self._failing:
            log.debug("mqtt_connect_failed", error=str(exc))
        else:
            log.warning("mqtt_disconnected", error=str(exc))
            self._failing = True


@dataclass(frozen=True, slots=True)
class Published:
    """What the broker answered to a batch of publishes."""

    acked: int  # how many from the start were answered
    refused: dict[int, str]  # among those: index → why the broker refused it
    lost: bool  # the connection fell before every answer came


class _BatchAcks:
    """Counts PUBACKs of one batch; aiomqtt calls `.set()` on each waiter."""

    def __init__(self) -> None:
        self.acked: set[int] = set()
        self._all = asyncio.Event()
        self._expected = 0

    def waiter(self, mid: int) -> _Waiter:
        return _Waiter(self, mid)

    def ack(self, mid: int) -> None:
        self.acked.add(mid)
        if len(self.acked) >= self._expected:
            self._all.set()

    async def wait(
        self, expected: int, seconds: float, lost: asyncio.Future[None]
    ) -> None:
        """Wait for every ack, the connection's end, or `seconds`."""
        self._expected = expected
        if len(self.acked) >= expected or lost.done():
            return
        everything: asyncio.Future[Any] = asyncio.ensure_future(self._all.wait())
        try:
            await asyncio.wait(
                {everything, lost}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            everything.cancel()

    def acked_prefix(self, mids: list[int]) -> int:
        for n, mid in enumerate(mids):
            if mid not in self.acked:
                return n
        return len(mids)


class _Waiter:
    __slots__ = ("_acks", "_mid")

    def __init__(self, acks: _BatchAcks, mid: int) -> None:
        self._acks, self._mid = acks, mid

    def set(self) -> None:
        self._acks.ack(self._mid)


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """A verifying TLS context for mqtts:// (the configured CA, else the system's)."""
    if not config.tls:
        return None
    cafile = str(config.ca_file) if config.ca_file else None
    return ssl.create_default_context(cafile=cafile)


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode() if payload is not None else b""
