"""syncd's components wired together: started in dependency order, stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from datetime import timedelta

import structlog

from syncd import metrics
from syncd.bus.inbox import Inbox
from syncd.bus.link import MqttLink
from syncd.bus.publisher import Publisher
from syncd.clock import Clock, utc_now
from syncd.config import Config, reload_rules
from syncd.drift.check import DriftChecker
from syncd.engine.rulebook import RuleBook
from syncd.exceptions import ConfigError, StoreError
from syncd.housekeeping import Housekeeper
from syncd.inbound.reconcile import Reconciler
from syncd.inbound.worker import InboundWorker
from syncd.loop import Loop, Said
from syncd.models import ChangeSet, RawMessage
from syncd.outbound.jobs import JobWorker
from syncd.realms.connections import Connections
from syncd.realms.reads import ReadsMeter
from syncd.realms.secrets import Cipher
from syncd.replicas import Replica
from syncd.rules.tables import shown
from syncd.store import Store, postgres_store, sqlite_store

log = structlog.get_logger(__name__)
ADMIN_TOKEN_MIN = 24  # characters: guesses are paced, not impossible
PARKED_SWEEP = 5.0  # seconds between the leader's looks at the parked messages


def open_store(config: Config, check: str | None = None) -> Store:
    """The store `[store] url` names: the SQLite file, or a PostgreSQL database.

    `check` overrides `[store] check` (SQLite's check at start) for a short-lived use.
    """
    prefix = config.mqtt.topic_prefix
    if config.store_url:
        password = config.secrets.get("STORE_PASSWORD")
        return postgres_store(config.store_url, password, prefix=prefix)
    check = check or config.store_check
    return sqlite_store(config.store_path, check=check, prefix=prefix)


class Daemon:
    """Store, rules, inbox, MQTT link and publisher of one syncd process."""

    def __init__(self, config: Config, clock: Clock = utc_now) -> None:
        self.config = config
        self.clock = clock
        key = config.secrets.get("SECRET_KEY")
        self.store = open_store(config)
        cipher = Cipher(key) if key else None
        self.connections = Connections(config, self.store, self.clock, cipher)
        self.rulebook = RuleBook({t.id: t.rules for t in config.tenants.values()})
        self.inbox = Inbox(
            self.store,
            self.rulebook,
            prefix=config.mqtt.topic_prefix,
            max_payload_bytes=config.mqtt.max_payload_bytes,
            clock=self.clock,
            ids_kept=timedelta(days=config.retention.ledger_days),
            park_for=(
                timedelta(seconds=config.mqtt.park_seconds)
                if config.mqtt.shared_group
                else None
            ),
        )
        self.replica = Replica(
            config.replica,
            self.store,
            lambda: config.tenants,
            self.clock,
            lease=timedelta(seconds=config.lease_seconds),
            # a call of a replica that died holding a realm lands within this
            settle=timedelta(seconds=2 * config.qbo.request_timeout),
            on_change=self._leases_changed,
            busy=lambda tenant: self.jobs.busy(tenant),
            quotas=self.connections,
        )
        several = bool(config.mqtt.shared_group) or config.replica_named
        self.link = MqttLink(
            config.mqtt,
            config.secrets,
            self._on_batch,
            self.clock,
            replica=config.replica if several else None,
        )
        self.publisher = Publisher(
            self.store,
            self.link,
            config.mqtt.topic_prefix,
            self.clock,
            ownership=self.replica,
        )
        self.jobs = JobWorker(
            self.store,
            self.connections,
            self.rulebook,
            clock=self.clock,
            on_commit=self.publisher.wake,
            ownership=self.replica,
        )
        self.inbound = InboundWorker(
            self.store,
            self.connections,
            self.rulebook,
            clock=self.clock,
            on_commit=self.publisher.wake,
            ownership=self.replica,
        )
        self.reconciler = Reconciler(
            config,
            self.store,
            self.connections,
            self.inbound,
            self.clock,
            self.publisher.wake,
            ownership=self.replica,
        )
        self.drift = DriftChecker(
            config,
            self.store,
            self.connections,
            self.inbound,
            self.rulebook,
            self.clock,
            self.publisher.wake,
            ownership=self.replica,
        )
        self.housekeeper = Housekeeper(
            self.store, config.retention, self.clock, ownership=self.replica
        )
        # parked messages whose invoice changed unseen, or that waited long enough
        self.parked = Loop(
            self._sweep_parked,
            interval=PARKED_SWEEP,
            said=Said(paused="parked_sweep_paused", failed="parked_sweep_failed"),
        )
        self.meter = ReadsMeter(self.store, config.qbo.monthly_reads_budget, self.clock)
        self.connections.on_read = self.meter.count
        self.connections.on_connected = self.jobs.wake
        self.connections.on_published = self.publisher.wake
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()  # two SIGHUPs: the later file wins
        self.crashed = False
        self._listener: asyncio.Task[None] | None = None

    @property
    def ready(self) -> dict[str, bool]:
        """What /readyz reports: store open, broker connected, rules loaded."""
        return {
            "store": self.store.is_open and self.store.problem is None,
            "broker": self.link.connected.is_set(),
            "rules": self.rulebook.loaded,
        }

    async def refresh_metrics(self) -> None:
        """Set the gauges that are the store's and the connections' state (for /metrics)."""
        now = self.clock()
        backlog = await self.store.backlog()
        metrics.JOBS.labels("pending").set(backlog.jobs_pending)
        metrics.JOBS.labels("in_flight").set(backlog.jobs_in_flight)
        metrics.OUTBOX.set(backlog.outbox)
        oldest = backlog.oldest_webhook
        metrics.WEBHOOK_LAG.set((now - oldest).total_seconds() if oldest else 0)
        for tenant, at in self.reconciler.passed.items():
            metrics.RECONCILED_AGE.labels(tenant).set((now - at).total_seconds())
        for tenant, expires in self.connections.refresh_expiries().items():
            metrics.TOKEN_EXPIRY.labels(tenant).set(expires - now.timestamp())
        for tenant, count in (await self.store.drift_open()).items():
            metrics.DRIFT_OPEN.labels(tenant).set(count)  # whichever replica checked

    async def start(self) -> None:
        """Open the store, then connect and start publishing."""
        await self.store.open()
        await self.connections.open()
        await self.connections.open_all_books()
        await self.replica.first_beat()  # leases first: the workers start knowing them
        self._tasks = [
            asyncio.create_task(self.replica.run(), name="syncd.replicas"),
            asyncio.create_task(self.link.run(), name="syncd.bus.link"),
            asyncio.create_task(self.publisher.run(), name="syncd.publisher"),
            asyncio.create_task(self.jobs.run(), name="syncd.outbound.jobs"),
            asyncio.create_task(self.inbound.run(), name="syncd.inbound.worker"),
            asyncio.create_task(self.reconciler.run(), name="syncd.inbound.reconcile"),
            asyncio.create_task(self.drift.run(), name="syncd.drift"),
            asyncio.create_task(self.housekeeper.run(), name="syncd.housekeeping"),
            asyncio.create_task(self.meter.run(), name="syncd.reads_meter"),
        ]
        self._listener = asyncio.create_task(self._told(), name="syncd.wake_ups")
        if self.config.mqtt.shared_group:
            self._tasks.append(
                asyncio.create_task(self.parked.run(), name="syncd.bus.parked")
            )
        for task in self._tasks:
            task.add_done_callback(self._exit_if_crashed)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        token = self.config.secrets.get("ADMIN_TOKEN") or ""
        if 0 < len(token) < ADMIN_TOKEN_MIN:  # its length only: never the token
            log.warning(
                "admin_token_short",
                length=len(token),
                advice=f"use {ADMIN_TOKEN_MIN} characters or more, e.g. "
                'python -c "import secrets; print(secrets.token_urlsafe(32))"',
            )
        log.info("syncd_started", tenants=sorted(self.config.tenants))

    async def stop(self) -> None:
        """Stop intake, finish the batch in hand, flush the outbox, close everything."""
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        self.connections.stopping()  # a refresh's answer must be kept: none starts now
        await self.link.stop_intake()
        self.jobs.stop()
        self.inbound.stop()
        self.reconciler.stop()
        self.drift.stop()
        self.housekeeper.stop()
        self.meter.stop()
        self.publisher.stop()
        self.replica.stop()
        self.parked.stop()
        if self._listener is not None:
            self._listener.cancel()
        flushed = False
        try:
            flushed = await self.publisher.drain(self.config.drain_seconds)
        finally:  # whatever failed above, close: an open aiosqlite thread hangs exit
            await self.link.close()
            for task in self._tasks:
                task.remove_done_callback(self._exit_if_crashed)
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(StoreError):  # every read, to the last worker's
                await self.meter.flush()
            with contextlib.suppress(StoreError):  # the others take its realms now
                await self.replica.leave()
            await self.connections.close()
            await self.store.close()
        log.info("syncd_stopped", outbox_flushed=flushed)

    def reload(self) -> None:
        """SIGHUP: re-read the rules in a thread (the loop serves every tenant meanwhile)."""
        task = asyncio.get_running_loop().create_task(
            self._reload(), name="syncd.reload"
        )
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        """Re-read every tenant's rules; keep the old ones if any new file is bad.

        Whatever goes wrong is said in the log, never raised: the old rules stay.
        """
        try:
            async with self._reloading:
                fresh = await asyncio.to_thread(reload_rules, self.config)
                self.rulebook.replace(fresh)
        except ConfigError as exc:
            log.error(  # noqa: TRY400 -- the problems say it all; no traceback
                "rules_reload_refused", problems=shown(exc.problems)
            )
            return
        except Exception:
            log.exception("rules_reload_failed")
            return
        log.info("rules_reloaded", tenants=sorted(fresh))

    async def _on_batch(self, batch: list[RawMessage]) -> None:
        self._woken_by(await self.inbox.handle(batch))

    async def _sweep_parked(self) -> int:
        """The leader decides the parked messages again (the others need not)."""
        if not self.replica.leads:
            return 0
        changes = await self.inbox.redecide_parked()
        if changes.unparked:
            self._woken_by(changes)
        return 0

    def _woken_by(self, changes: ChangeSet) -> None:
        self.publisher.wake()
        if changes.jobs:
            self.jobs.wake()
        if changes.refreshes:
            self.inbound.wake()

    async def _told(self) -> None:
        """Another replica committed work for this one: wake who does it (polls stay)."""
        woken: dict[str, list[Callable[[], None]]] = {
            "jobs": [self.jobs.wake],
            "outbox": [self.publisher.wake],
            "inbound": [self.inbound.wake],
        }
        everyone = [wake for wakes in woken.values() for wake in wakes]
        try:
            async for what in self.store.wake_ups():
                for wake in woken.get(what, everyone):
                    wake()
        except asyncio.CancelledError:
            raise
        except Exception:  # the polls carry on without it
            log.exception("wake_ups_ended")

    def _leases_changed(self) -> None:
        """Realms (or the lead) came or went: the workers look again now."""
        if not self._tasks:
            return  # the first beat, before they start: their first round is now
        workers = (self.jobs, self.inbound, self.reconciler, self.drift, self.publisher)
        for worker in workers:
            worker.wake()

    def _exit_if_crashed(self, task: asyncio.Task[None]) -> None:
        """A loop that dies is a bug: say so and stop (exit 1); the supervisor restarts."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical("loop_crashed", task=task.get_name(), exc_info=task.exception())
        self.crashed = True
        os.kill(os.getpid(), signal.SIGTERM)
