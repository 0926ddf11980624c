"""The loop the QBO workers share: woken by commits, never ended by one bad iteration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from syncd.engine.rulebook import RuleBook
from syncd.loop import Loop, Said
from syncd.models import Connection
from syncd.qbo import QboClient
from syncd.replicas import Alone, Ownership
from syncd.store import Store


class Clients(Protocol):
    """What a worker asks of the tenants' QBO connections (`realms.Connections` is one).

    Workers get this, never the whole of the connections: no OAuth, no books.
    """

    async def client(self, tenant: str) -> QboClient | None:
        """The tenant's client, or None when it is not connected."""

    async def connected(self, tenant: str) -> tuple[QboClient, Connection] | None:
        """The client and the connection with the company's settings read."""

    async def needs_reconnect(self, tenant: str, reason: str) -> None:
        """The grant is gone: pause the tenant and say so everywhere."""

    async def watch(self, tenant: str) -> None:
        """Say how the tenant's grant stands (and warn before it ends)."""


class LoopWorker:
    """Runs `run_once` whenever woken (or every `idle` seconds) until stopped."""

    idle = 1.0

    def __init__(
        self,
        store: Store,
        connections: Clients,
        rulebook: RuleBook,
        *,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None],
        ownership: Ownership | None = None,
    ) -> None:
        self._store, self._connections, self._rulebook = store, connections, rulebook
        self._clock, self._on_commit = clock, on_commit
        # which realms are this replica's to run (all of them, without a Replica)
        self._ownership: Ownership = ownership or Alone()
        self._loop = Loop(
            self.run_once,
            interval=lambda: self.idle,
            said=Said(paused="worker_paused", failed="worker_iteration_failed"),
            worker=type(self).__name__,
        )

    @property
    def stopping(self) -> bool:
        """Whether the worker was asked to stop."""
        return self._loop.stopping

    def wake(self) -> None:
        """Something to do was committed."""
        self._loop.wake()

    def stop(self) -> None:
        """End `run` after the current iteration."""
        self._loop.stop()

    async def guarded(self, work: Awaitable[int | None]) -> int:
        """`work`'s result (0 for none); a failure is logged, never raised."""
        return await self._loop.guarded(work)

    async def run_once(self) -> int:
        """Do what is due now; return how much was done."""
        raise NotImplementedError

    async def run(self) -> None:
        """Iterate until stopped; an iteration that fails is logged and tried again."""
        await self._loop.run()
