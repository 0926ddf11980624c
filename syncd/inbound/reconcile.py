"""Reconciliation: QBO's change data capture, because webhooks are late, lost or doubled.

Per connected tenant, on start and every `[qbo] reconcile_interval` seconds: CDC of
invoices and payments since the tenant's checkpoint, applied exactly as webhooks are (the
comparisons are idempotent, so what a webhook already applied changes nothing). The
checkpoint advances only after what it covers is committed. A saturated answer (1,000
objects) is followed at once from its last object's time; a gap beyond CDC's 30 days falls
back to queries by `MetaData.LastUpdatedTime`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from syncd import metrics
from syncd.config import Config
from syncd.exceptions import FencedError, StaleWriteError
from syncd.inbound.fetch import removed_payments_invoices
from syncd.inbound.news import QboChanges
from syncd.inbound.worker import InboundWorker
from syncd.loop import Loop, Said
from syncd.messages import StateChanged
from syncd.models import ChangeSet
from syncd.qbo import QboClient, queries
from syncd.qbo.steps import Step, next_step
from syncd.replicas import Alone, Ownership
from syncd.store import InvoiceReads, Payments, Realms, decided_afresh
from syncd.worker import Clients

log = structlog.get_logger(__name__)
CDC_DAYS, CDC_MAX = 30, 1000
SAFETY = timedelta(seconds=2)  # QBO and syncd clocks differ a little
DAILY = timedelta(days=1)
OVERDUE_PAGE = 100  # invoices marked overdue per write (~50 ms under the lock at 1M)


class Reconciling(Realms, InvoiceReads, Payments, Protocol):
    """What reconciliation needs of the store (its checkpoint, overdue invoices)."""


class Reconciler:
    """Runs CDC passes for every connected tenant."""

    def __init__(
        self,
        config: Config,
        store: Reconciling,
        connections: Clients,
        inbound: InboundWorker,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None],
        ownership: Ownership | None = None,
    ) -> None:
        self._config, self._store, self._connections = config, store, connections
        self._ownership: Ownership = ownership or Alone()  # the realms it reconciles
        self._inbound, self._clock, self._on_commit = inbound, clock, on_commit
        self.passed: dict[str, datetime] = {}  # tenant → when its last pass ended
        self._last_daily = clock()
        self._interval = float(config.qbo.reconcile_interval)
        self._loop = Loop(
            self._round,
            interval=lambda: self._interval,
            said=Said(paused="reconcile_paused", failed="reconcile_crashed"),
        )

    def stop(self) -> None:
        """End `run`."""
        self._loop.stop()

    def wake(self) -> None:
        """Pass now (this replica took a realm over)."""
        self._loop.wake()

    async def run(self) -> None:
        """Pass at start, then every interval; sooner while webhooks fail; a day's pass daily.

        The interval shrinks to a fifth while CDC keeps finding what webhooks missed. One
        failing tenant never stops the rest.
        """
        await self._loop.run()

    async def _round(self) -> int:
        daily = self._clock() - self._last_daily >= DAILY
        missed = 0
        for tenant in self._config.tenants:
            if not self._ownership.owns(tenant):
                continue  # another replica runs its QBO side
            try:
                missed += await self.pass_for(tenant, full_day=daily)
                await self._connections.watch(tenant)
            except FencedError as exc:  # taken over mid-pass: the new holder passes
                log.warning("realm_lease_lost", tenant=tenant, reason=str(exc))
            except StaleWriteError:  # its invoices kept changing (CRM traffic on them)
                log.info("reconcile_decided_later", tenant=tenant)
            except Exception as exc:  # noqa: BLE001 -- one tenant's, never the rest's
                await self._after(tenant, exc)
        if daily:
            self._last_daily = self._clock()
        interval = self._config.qbo.reconcile_interval
        if missed:  # webhooks are failing: look again sooner
            log.warning("reconcile_found_missed_changes", changes=missed)
            interval = max(1, interval // 5)
        self._interval = float(interval)
        metrics.RECONCILE_ROUNDS.inc()
        return 0  # never busy: the next pass is an interval away

    async def _after(self, tenant: str, exc: Exception) -> None:
        """A tenant's pass failed: reconnect needed, or tried again next interval."""
        then = next_step(exc)
        if then.step is Step.RECONNECT:  # the grant is gone: said everywhere
            await self._connections.needs_reconnect(tenant, str(exc))
        elif then.step is Step.DEFECT:
            log.error("reconcile_crashed", tenant=tenant, exc_info=exc)
        else:  # the next pass starts from the same checkpoint
            log.warning("reconcile_failed", tenant=tenant, error=then.message)

    async def pass_for(self, tenant: str, full_day: bool = False) -> int:
        """One CDC pass for a tenant (the last day's changes if `full_day`).

        Returns how many changes it applied that webhooks had not (moves, failures, news).
        """
        client = await self._connections.client(tenant)
        conn = await self._store.connection(tenant)
        if client is None or conn is None:
            return 0
        since = datetime.fromisoformat(
            conn.preferences.get("reconciled_to", conn.connected_at.isoformat())
        )
        if full_day:
            since = min(since, self._clock() - DAILY)
        missed = 0
        while True:
            started = self._clock()
            found, newest = await _changes(client, since, started)
            await removed_payments_invoices(client, self._store, tenant, found)
            changes = await self._apply(tenant, conn.realm_id, found)
            metrics.decided(changes, "qbo")
            missed += missed_by_webhooks(changes)
            saturated = newest is not None
            since = newest if newest is not None else started - SAFETY
            await self._store.set_preferences(
                tenant, {**conn.preferences, "reconciled_to": since.isoformat()}
            )
            conn.preferences["reconciled_to"] = since.isoformat()
            self._on_commit()
            if not saturated:
                await self._overdue(tenant)
                self.passed[tenant] = self._clock()
                return missed

    async def _apply(self, tenant: str, realm: str, found: QboChanges) -> ChangeSet:
        """Decide and commit a CDC answer; decide again if another writer came first."""

        async def decide() -> ChangeSet:
            changes = ChangeSet(at=self._clock(), fence=self._ownership.fence(tenant))
            await self._inbound.apply(tenant, realm, found, changes)
            await self._store.commit(changes)
            return changes

        return await decided_afresh(decide)

    async def _overdue(self, tenant: str) -> None:
        """QBO's view changes as days pass: an open balance past its due date is overdue.

        An index finds the few that turned; they are marked a page at a time, so CRM
        messages are applied between pages whatever the size of the store.
        """
        today = self._clock().date()

        async def page() -> int:
            found = await self._store.past_due(tenant, today, OVERDUE_PAGE)
            changes = ChangeSet(fence=self._ownership.fence(tenant))
            for inv in found:
                inv.qbo_status = "overdue"
                changes.invoices[(tenant, inv.invoice_id)] = inv
                changes.outbox.append(StateChanged.of(inv, self._clock()))
            if changes.invoices:
                await self._store.commit(changes)
            return len(found)

        # another writer changing one of a page's invoices: the page is read again
        while await decided_afresh(page) == OVERDUE_PAGE:
            pass


def missed_by_webhooks(changes: ChangeSet) -> int:
    """What a pass applied that webhooks had not: moves, failures, news (not states)."""
    told = sum(1 for o in changes.outbox if not isinstance(o, StateChanged))
    return len(changes.history) + len(changes.failures) + told


async def _changes(
    client: QboClient, since: datetime, now: datetime
) -> tuple[QboChanges, datetime | None]:
    """What changed since `since`; and, when the answer was saturated, where to go on."""
    if since < now - timedelta(days=CDC_DAYS - 1):
        log.warning("reconcile_gap_beyond_cdc", since=since.isoformat())
        return await _by_queries(client, since), None
    answer = await client.cdc(
        ["Invoice", "Payment", "Customer", "RefundReceipt", "CreditMemo"], _stamp(since)
    )
    found = QboChanges(
        invoices={
            str(o["Id"]): o
            for o in answer.get("Invoice", [])
            if o.get("status") != "Deleted"
        },
        deleted={
            str(o["Id"])
            for o in answer.get("Invoice", [])
            if o.get("status") == "Deleted"
        },
        payments=[o for o in answer.get("Payment", []) if not _removed(o)],
        customers=[c for c in answer.get("Customer", []) if _created_since(c, since)],
        removed_payments={
            str(o["Id"]): r for o in answer.get("Payment", []) if (r := _removed(o))
        },
        refunds=[
            o for o in answer.get("RefundReceipt", []) if _created_since(o, since)
        ],
        credit_memos=[
            o for o in answer.get("CreditMemo", []) if _created_since(o, since)
        ],
    )
    everything = [o for objs in answer.values() for o in objs]
    newest = None
    if len(everything) >= CDC_MAX:
        newest = max(
            datetime.fromisoformat(o["MetaData"]["LastUpdatedTime"]) for o in everything
        )
    return found, newest


def _removed(payment: dict[str, Any]) -> str | None:
    """A payment CDC shows deleted (a tombstone) or voided (zeroed, "Voided" noted)."""
    if payment.get("status") == "Deleted":
        return "deleted"
    voided = str(payment.get("PrivateNote", "")).startswith("Voided")
    return "voided" if voided and not payment.get("TotalAmt") else None


def _created_since(obj: dict[str, Any], since: datetime) -> bool:
    created = (obj.get("MetaData") or {}).get("CreateTime")
    return isinstance(created, str) and datetime.fromisoformat(created) >= since


async def _by_queries(client: QboClient, since: datetime) -> QboChanges:
    """Beyond CDC's window: every invoice and payment updated since, page by page."""
    stamp = _stamp(since)
    found = {
        entity: await client.query_all(
            queries.updated_since(entity, stamp),
            entity,
        )
        for entity in ("Invoice", "Payment")
    }
    return QboChanges(
        invoices={str(o["Id"]): o for o in found["Invoice"]}, payments=found["Payment"]
    )


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
