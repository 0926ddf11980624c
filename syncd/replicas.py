"""This replica among the others on one store: its heartbeat, its realms, its chores.

Each realm's QBO side (its jobs, webhooks, refresh requests, reconciliation, quota and
token) runs in one replica at a time, the holder of the realm's lease; the leader's
chores (publishing the outbox, retention) run in the holder of the `leader` lease. A
replica holds its fair share of the realms (the realms ÷ the replicas alive, rounded
up): one that joins takes realms the others give back, one that dies loses its leases
when they expire, and the others take them. Work done under a lease carries its epoch
(`fence`), so a replica that lost its lease (paused, cut off) cannot commit over the new
holder's work. One syncd alone holds every lease: the same code, nothing to configure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from syncd import metrics
from syncd.loop import Loop, Said
from syncd.models import Fence, Held
from syncd.store import Leases

log = structlog.get_logger(__name__)
REALM = "realm:"
LEADER = "leader"


class Ownership(Protocol):
    """What the workers ask: which realms are theirs to run, and whether they lead."""

    def owns(self, tenant: str) -> bool:
        """Whether this replica runs the tenant's QBO side now."""

    def owned(self) -> list[str] | None:
        """The tenants whose QBO side this replica runs now (None: every one)."""

    def fence(self, tenant: str) -> Fence | None:
        """The tenant's lease as held (for commits of its QBO work); None if not held."""

    def settled(self, tenant: str) -> bool:
        """Whether the tenant's unclear work may be looked into now.

        False for a while after its realm was taken over from a replica that did not
        give it back: a QBO call that replica had under way may still land.
        """

    @property
    def leads(self) -> bool:
        """Whether this replica runs the leader's chores now."""


class Quotas(Protocol):
    """Each realm's QBO quota as this replica spends it, carried by the realm's lease.

    A realm's holder keeps a record in its lease at each beat: the requests of its
    minute, and a grant of what it may send until the next beat (it sends no more).
    The next holder counts that record as its own before it sends anything, so the
    two together never pass QBO's quota, even when the first died mid-minute.
    """

    def quota_record(self, tenant: str, ahead: float) -> str:
        """The tenant's quota as spent here, with a grant for `ahead` seconds."""

    def quota_grant(self, tenant: str, record: str) -> None:
        """Send what `record` (now kept in the lease) grants, and no more."""

    def quota_charge(self, tenant: str, record: str | None) -> None:
        """Count the last holder's `record` as spent here; send nothing until a grant."""


class Alone:
    """Ownership without leases: a worker on a store of its own (tests, tools)."""

    def owns(self, tenant: str) -> bool:
        """Every tenant."""
        return True

    def owned(self) -> list[str] | None:
        """Every tenant."""
        return None

    def fence(self, tenant: str) -> Fence | None:
        """No lease to check."""
        return None

    def settled(self, tenant: str) -> bool:
        """Always."""
        return True

    @property
    def leads(self) -> bool:
        """Always."""
        return True


class Replica:
    """Holds this replica's leases, renewed every third of their life."""

    def __init__(
        self,
        name: str,
        store: Leases,
        tenants: Callable[[], Collection[str]],
        clock: Callable[[], datetime],
        *,
        lease: timedelta = timedelta(seconds=30),
        settle: timedelta = timedelta(seconds=30),
        on_change: Callable[[], None] = lambda: None,
        busy: Callable[[str], bool] = lambda tenant: False,
        quotas: Quotas | None = None,
    ) -> None:
        self.name = name
        self._store, self._tenants, self._clock = store, tenants, clock
        self._lease, self._settle = lease, settle
        self._on_change = on_change
        self._busy = busy  # a tenant's QBO work is under way here (a job round)
        self._quotas = quotas
        self._held: dict[str, int] = {}  # lease name → epoch
        self._draining: set[str] = set()  # held past the share until its work ends
        self._unsettled: dict[str, datetime] = {}  # realm taken over → settled then
        self._until: datetime | None = None  # the leases are ours until then, for sure
        self.replicas: list[str] = [name]  # alive at the last beat, this one included
        self._loop = Loop(
            self.beat,
            interval=lease.total_seconds() / 3,
            said=Said(paused="replica_beat_paused", failed="replica_beat_failed"),
        )

    def owns(self, tenant: str) -> bool:
        """Whether this replica runs the tenant's QBO side now."""
        return self.fence(tenant) is not None

    def owned(self) -> list[str] | None:
        """The tenants whose QBO side this replica runs now (not those it hands over)."""
        if not self._valid():
            return []
        return sorted(
            n.removeprefix(REALM)
            for n in self._held
            if n.startswith(REALM) and n not in self._draining
        )

    def settled(self, tenant: str) -> bool:
        """Whether the tenant's unclear work may be looked into now."""
        until = self._unsettled.get(REALM + tenant)
        return until is None or self._clock() >= until

    def fence(self, tenant: str) -> Fence | None:
        """The tenant's lease as held (for commits of its QBO work); None if not held."""
        return self._fence(REALM + tenant)

    @property
    def leads(self) -> bool:
        """Whether this replica runs the leader's chores now."""
        return self._fence(LEADER) is not None

    def _fence(self, name: str) -> Fence | None:
        epoch = self._held.get(name)
        if epoch is None or not self._valid():
            return None
        return Fence(name, self.name, epoch)

    def _valid(self) -> bool:
        # a third of the lease short of its end: others take it only once it has ended
        return self._until is not None and self._clock() < self._until

    async def beat(self) -> int:
        """Say this replica lives, and hold its share of the leases (none when busy)."""
        now = self._clock()
        self.replicas = await self._store.beat(self.name, now, self._lease)
        realms = [REALM + t for t in sorted(self._tenants())]
        share = math.ceil(len(realms) / max(1, len(self.replicas)))
        # a realm given back while its round runs would be taken at once by another
        # replica, which would find the round's jobs in flight: kept until it ends
        busy = {
            n
            for n in self._held
            if n.startswith(REALM) and self._busy(n.removeprefix(REALM))
        }
        ahead = self._lease.total_seconds() / 3  # until the next beat
        # what this beat gives back (as the store decides: the share kept in name order,
        # and the busy ones) sends nothing more: its record promises nothing ahead, so
        # the next holder need not wait out requests that will never be sent
        mine = sorted(n for n in self._held if n.startswith(REALM))
        giving = {n for n in mine[share:] if n not in busy}
        records = {
            n: self._quotas.quota_record(
                n.removeprefix(REALM), 0 if n in giving else ahead
            )
            for n in mine
            if self._quotas
        }
        found = await self._store.hold(
            self.name, realms, share, now, self._lease, busy=busy, spent=records
        )
        found |= await self._store.hold(self.name, [LEADER], 1, now, self._lease)
        await self._carry_quotas(found, records, ahead)
        self._until = now + self._lease * 2 / 3
        self._draining = set(sorted(n for n in found if n.startswith(REALM))[share:])
        for name, lease in found.items():
            if lease.taken_over and name not in self._held:
                self._unsettled[name] = now + self._settle
        held = {name: lease.epoch for name, lease in found.items()}
        if held != self._held:
            gained = sorted(set(held) - set(self._held))
            lost = sorted(set(self._held) - set(held))
            self._held = held
            log.info(
                "replica_leases",
                replica=self.name,
                replicas=len(self.replicas),
                took=gained,
                gave=lost,
                holds=len(held),
            )
            self._on_change()
        metrics.LEASES.set(len(held))
        return 0

    async def _carry_quotas(
        self, found: dict[str, Held], records: dict[str, str], ahead: float
    ) -> None:
        """Grant what the kept records allow; count the quota of realms just taken."""
        quotas = self._quotas
        if quotas is None:
            return
        for name, record in records.items():
            # kept: its grant for the next beat; given back: nothing more (its record,
            # kept now, promised nothing ahead)
            quotas.quota_grant(name.removeprefix(REALM), record)
        taken = [n for n in found if n.startswith(REALM) and n not in self._held]
        for name in taken:
            quotas.quota_charge(name.removeprefix(REALM), found[name].spent)
        fresh = {n: quotas.quota_record(n.removeprefix(REALM), ahead) for n in taken}
        if fresh:
            await self._store.keep_spent(self.name, fresh)
            for name, record in fresh.items():
                quotas.quota_grant(name.removeprefix(REALM), record)

    async def first_beat(self) -> None:
        """The beat before the workers start: a failure is said, never raised.

        A store that cannot be used must not stop syncd serving (its /readyz says why);
        the loop beats again.
        """
        await self._loop.guarded(self.beat())

    async def run(self) -> None:
        """Beat until stopped."""
        await self._loop.run()

    def stop(self) -> None:
        """End `run` after the beat in hand."""
        self._loop.stop()

    async def leave(self) -> None:
        """Give back every lease now (a clean stop): the others take them at once."""
        records = {
            n: self._quotas.quota_record(n.removeprefix(REALM), 0)
            for n in self._held
            if self._quotas and n.startswith(REALM)
        }
        self._held, self._until = {}, None
        await self._store.release(self.name, self._clock(), spent=records)
