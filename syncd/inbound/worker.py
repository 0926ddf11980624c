"""QBO → CRM: stored webhooks → fetch what changed → the rules' QBO events → checked moves.

Per batch of stored webhook bodies: repeats are dropped (CloudEvents id, or entity, id,
operation and time), every changed invoice and payment of a realm is fetched with
`Id IN (…)` queries per entity (100 ids each), and each synced invoice's QBO view is
compared with the one syncd last knew: a void, a deletion, a balance paid down (fully or
partly), or another edit. Each maps through `[qbo_events]` to a CRM status; a move the
rules allow is applied, recorded and published as `…/out/invoice/set_status`, a refused
one is a failure naming the move and the rule to change (RO6, RO7, DC4). syncd's own
writes coming back (the SyncToken it wrote, or a payment it wrote) are not bounced to the
CRM.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from syncd import metrics
from syncd.exceptions import QboError, StaleWriteError
from syncd.inbound import plan
from syncd.inbound.fetch import by_ids, removed_payments_invoices
from syncd.inbound.news import QboChanges
from syncd.models import ChangeSet, LinkKind, StoredWebhook, WebhookRetry
from syncd.qbo import QboClient, queries, webhooks
from syncd.qbo.steps import Step, next_step
from syncd.worker import LoopWorker

log = structlog.get_logger(__name__)
# Ids to one `Id IN (…)` question: a GET's URL holds about 550 (issue 22 §2); 100 keep
# it near 2 KB
# a body whose fetch failed: tried again after 5 s, doubling to 5 min, 8 tries in all
# (about 15 minutes), then left to reconciliation
RETRY_ATTEMPTS, RETRY_FIRST_PAUSE, RETRY_PAUSE_CAP = 8, 5.0, 300.0


class InboundWorker(LoopWorker):
    """Applies stored QBO webhooks, in order, each event once."""

    idle = 5.0  # webhooks wake it; the wait only retries what QBO could not answer

    async def run_once(self) -> int:
        """Process the stored webhook bodies and refresh requests due now; how many."""
        now = self._clock()
        owned = self._ownership.owned()  # its realms' bodies; the leader's, no one's
        leads = self._ownership.leads
        pending = await self._store.pending_inbound(
            50, now, tenants=owned, strays=leads
        )
        refreshes = await self._store.pending_refreshes(50, owned)
        if not pending and not refreshes:
            return 0
        # one tenant's trouble never holds up the others, and a body that failed never
        # holds up the ones after it: what cannot be done now is stored again on its own
        # and tried later, a few times; the rest is committed
        changes = ChangeSet(inbound_done=[w.seq for w in pending], at=now)
        done = 0
        for seq, request in refreshes:
            work = functools.partial(self._refresh, request)
            if await _whole_or_not_at_all(f"refresh {seq}", work, changes):
                changes.refreshes_done.append(seq)
                done += 1
        for group in _groups(pending):
            work = functools.partial(self._realm, group.realm, group.notes)
            if await _whole_or_not_at_all(f"realm {group.realm}", work, changes):
                done += 1
            elif (retry := _again(group, now)) is not None:
                changes.inbound_new.append(retry)
        try:
            await self._store.commit(changes)
        except StaleWriteError:
            # the job worker wrote one of these invoices meanwhile: nothing was stored,
            # so decide again at once from fresh copies (it was a 5 s wait and an error)
            log.info("inbound_decided_again", webhooks=len(pending))
            return max(done, 1)
        metrics.decided(changes, "qbo")
        self._on_commit()
        return done

    async def _refresh(self, request: dict[str, Any], changes: ChangeSet) -> bool:
        """A CRM's `command.refresh`: one invoice, or a contact's invoices in a range."""
        tenant = request["tenant"]
        client = await self._connections.client(tenant)
        if client is None:
            log.warning("refresh_not_connected", tenant=tenant)
            return True  # nothing to refresh from
        found = QboChanges()
        try:
            if "invoice_qbo_id" in request:
                found.invoices = await by_ids(
                    client, "Invoice", {request["invoice_qbo_id"]}
                )
            else:
                found.invoices = await self._contact_invoices(client, tenant, request)
        except QboError as exc:
            log.warning("refresh_failed", tenant=tenant, error=exc.message)
            return False
        await self.apply(tenant, client.realm_id, found, changes, listing=True)
        return True

    async def _contact_invoices(
        self, client: QboClient, tenant: str, request: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        customer = await self._store.link(
            tenant, LinkKind.CUSTOMER, str(request["contact_id"])
        )
        if customer is None:
            return {}
        statement = queries.of_customer(
            "Invoice", customer, request.get("from"), request.get("to")
        )
        rows = await client.query_all(statement, "Invoice")
        return {str(r["Id"]): r for r in rows}

    async def _realm(
        self, realm: str, notes: list[webhooks.Notification], changes: ChangeSet
    ) -> bool:
        tenant = await self._store.tenant_of_realm(realm)
        if tenant is None:
            log.warning("webhook_unknown_realm", realm=realm, notifications=len(notes))
            return True  # no tenant holds it: logged and dropped
        fresh = await self._store.new_events(realm, [n.key for n in notes])
        notes = [n for n in notes if n.key in fresh]
        if not notes:
            return True
        client = await self._connections.client(tenant)
        if client is None:
            # not connected (or to be reconnected): reconciliation catches up after
            log.warning(
                "webhook_tenant_not_connected", tenant=tenant, notifications=len(notes)
            )
            return True
        try:
            found = await self._fetch(client, notes)
            await removed_payments_invoices(client, self._store, tenant, found)
        except QboError as exc:
            then = next_step(exc)
            if then.step is Step.RECONNECT:
                await self._connections.needs_reconnect(tenant, exc.message)
                return True  # reconciliation brings them once reconnected
            log.warning(
                "inbound_fetch_failed", tenant=tenant, error=exc.message, then=then.step
            )
            # RETRY: stored again on its own, tried later; FAIL: asking again cannot
            # help, so they are left to reconciliation now
            return then.step is not Step.RETRY
        changes.inbound_events += [(realm, n.key) for n in notes]
        changes.webhooks_applied[tenant] = self._clock()
        await self._merges(tenant, notes, changes)
        await self.apply(tenant, realm, found, changes)
        return True

    async def _merges(
        self, tenant: str, notes: list[webhooks.Notification], changes: ChangeSet
    ) -> None:
        """A customer merged away in QBO: its links move to the surviving customer."""
        for note in notes:
            if note.entity != "Customer" or note.operation != "Merge":
                continue
            if not note.deleted_id:
                log.warning("qbo_merge_without_deleted_id", customer=note.id)
                continue
            for link in await self._store.links_to(
                tenant, LinkKind.CUSTOMER, note.deleted_id
            ):
                changes.links.append(dataclasses.replace(link, qbo_id=note.id))
                log.info(
                    "customer_link_moved",
                    contact=link.key,
                    merged=note.deleted_id,
                    into=note.id,
                )

    async def apply(
        self,
        tenant: str,
        realm: str,
        found: QboChanges,
        changes: ChangeSet,
        listing: bool = False,
    ) -> None:
        """Apply QBO's current objects (from webhooks, CDC or a refresh): load, then plan.

        The caller holds the write lock. `listing` reports QBO-made invoices even when they
        were reported before (a refresh asks for the list, PD8).
        """
        machine = self._rulebook.machine(tenant)
        if machine is None:
            return
        known = await plan.load(self._store, tenant, realm, found)
        scope = plan.Scope(
            tenant=tenant,
            realm=realm,
            now=self._clock(),
            listing=listing,
        )
        await plan.plan(found, known, machine, scope, changes)

    async def _fetch(
        self, client: QboClient, notes: list[webhooks.Notification]
    ) -> QboChanges:
        """One query per entity for everything changed (coalesced: each Id once)."""

        def ids(entity: str, *operations: str) -> set[str]:
            return {
                n.id for n in notes if n.entity == entity and n.operation in operations
            }

        found = QboChanges()
        found.invoices = await by_ids(
            client, "Invoice", ids("Invoice", "Create", "Update", "Void", "Emailed")
        )
        found.payments = list(
            (await by_ids(client, "Payment", ids("Payment", "Create"))).values()
        )
        found.customers = list(
            (await by_ids(client, "Customer", ids("Customer", "Create"))).values()
        )
        for entity, into in (
            ("RefundReceipt", found.refunds),
            ("CreditMemo", found.credit_memos),
        ):
            into += (await by_ids(client, entity, ids(entity, "Create"))).values()
        # a payment moves its invoices' balances: fetch those too (one more query at most)
        linked = {
            t["TxnId"]
            for p in found.payments
            for line in p.get("Line", [])
            for t in line.get("LinkedTxn", [])
            if t.get("TxnType") == "Invoice"
        } - set(found.invoices)
        found.invoices.update(await by_ids(client, "Invoice", linked))
        found.deleted = ids("Invoice", "Delete") - set(found.invoices)
        found.removed_payments = {
            **dict.fromkeys(ids("Payment", "Void"), "voided"),
            **dict.fromkeys(ids("Payment", "Delete"), "deleted"),
        }
        return found


@dataclass(slots=True)
class _Group:
    """Notifications of one realm fetched together, and what their bodies carried."""

    realm: str
    notes: list[webhooks.Notification]
    received_at: datetime
    attempts: int


def _groups(pending: list[StoredWebhook]) -> list[_Group]:
    """A realm's new notifications together; each body being retried on its own.

    A body that failed before is never merged with the ones that came since: whatever
    made it fail cannot hold them back (issue 22: one big body jammed a realm for ever).
    """
    fresh: dict[str, _Group] = {}
    groups: list[_Group] = []
    for stored in pending:
        try:
            notes = webhooks.parse(stored.body)
        except (ValueError, KeyError, TypeError):  # checked at the door: never here
            log.exception("inbound_body_unreadable", seq=stored.seq)
            continue
        by_realm: dict[str, list[webhooks.Notification]] = {}
        for note in notes:
            by_realm.setdefault(note.realm_id, []).append(note)
        for realm, realm_notes in by_realm.items():
            if stored.attempts:
                groups.append(
                    _Group(realm, realm_notes, stored.received_at, stored.attempts)
                )
            elif realm in fresh:
                fresh[realm].notes += realm_notes
            else:
                fresh[realm] = _Group(realm, realm_notes, stored.received_at, 0)
    return [*fresh.values(), *groups]


def _again(group: _Group, now: datetime) -> WebhookRetry | None:
    """The group stored again to try later, or None once it has failed too often.

    Given up, its changes still reach the CRM: reconciliation (CDC) reads everything
    changed since its last pass, webhooks or not.
    """
    attempts = group.attempts + 1
    if attempts >= RETRY_ATTEMPTS:
        metrics.WEBHOOKS_GIVEN_UP.inc()
        log.error(
            "inbound_given_up",
            realm=group.realm,
            notifications=len(group.notes),
            attempts=attempts,
            received_at=group.received_at.isoformat(),
            left_to="reconciliation (CDC)",
        )
        return None
    pause = min(RETRY_FIRST_PAUSE * 2 ** (attempts - 1), RETRY_PAUSE_CAP)
    return WebhookRetry(
        body=webhooks.legacy_body(group.realm, group.notes),
        received_at=group.received_at,
        attempts=attempts,
        next_at=now + timedelta(seconds=pause),
        realm_id=group.realm,
    )


async def _whole_or_not_at_all(
    what: str, work: Callable[[ChangeSet], Awaitable[bool]], changes: ChangeSet
) -> bool:
    """Apply one realm's notifications (or one refresh) whole, or not at all.

    True: done (its changes join the batch). False: to try again later. An unexpected
    failure is logged and counts as done: the reconciliation pass (CDC) brings the rest.
    """
    part = ChangeSet()
    try:
        handled = await work(part)
    except Exception:
        log.exception("inbound_item_failed", item=what)
        return True
    if handled:
        changes.merge(part)
    return handled
