"""QBO → CRM: stored webhooks → fetch what changed → the rules' QBO events → checked moves.

Per batch of stored webhook bodies: repeats are dropped (CloudEvents id, or entity, id,
operation and time), every changed invoice and payment of a realm is fetched with one
`Id IN (…)` query per entity, and each synced invoice's QBO view is compared with the
one syncd last knew: a void, a deletion, a balance paid down (fully or partly), or another
edit. Each maps through `[qbo_events]` to a CRM status; a move the rules allow is applied,
recorded and published as `…/out/invoice/set_status`, a refused one is a failure naming the
move and the rule to change (RO6, RO7, DC4). syncd's own writes coming back (the SyncToken
it wrote, or a payment it wrote) are not bounced to the CRM.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from syncd import metrics
from syncd.exceptions import QboAuthError, QboError, StaleWriteError
from syncd.inbound import plan
from syncd.inbound.news import QboChanges
from syncd.models import ChangeSet, LinkKind
from syncd.qbo import QboClient, queries, webhooks
from syncd.worker import LoopWorker

log = structlog.get_logger(__name__)


class InboundWorker(LoopWorker):
    """Applies stored QBO webhooks, in order, each event once."""

    idle = 5.0  # webhooks wake it; the wait only retries what QBO could not answer
    last_webhook: dict[str, datetime]  # tenant → when its last notification was applied

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_webhook = {}

    async def run_once(self) -> int:
        """Process the stored webhook bodies and refresh requests waiting now; how many."""
        pending = await self._store.pending_inbound(50)
        refreshes = await self._store.pending_refreshes(50)
        if not pending and not refreshes:
            return 0
        by_realm: dict[str, list[webhooks.Notification]] = {}
        for _, body in pending:
            for note in webhooks.parse(body):
                by_realm.setdefault(note.realm_id, []).append(note)
        # one tenant's trouble never holds up the others: what cannot be done now is
        # tried again later (behind what came since) and the rest is committed
        changes = ChangeSet(inbound_done=[seq for seq, _ in pending], at=self._clock())
        done = 0
        for seq, request in refreshes:
            work = functools.partial(self._refresh, request)
            if await _whole_or_not_at_all(f"refresh {seq}", work, changes):
                changes.refreshes_done.append(seq)
                done += 1
        for realm, notes in by_realm.items():
            work = functools.partial(self._realm, realm, notes)
            if await _whole_or_not_at_all(f"realm {realm}", work, changes):
                done += 1
            else:
                changes.inbound_new.append(webhooks.legacy_body(realm, notes))
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
                found.invoices = await _by_ids(
                    client, "Invoice", {request["invoice_qbo_id"]}
                )
            else:
                found.invoices = await self._contact_invoices(client, tenant, request)
        except QboError as exc:
            log.warning("refresh_failed", tenant=tenant, error=exc.message)
            return False
        async with self._store.write_lock:
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
        except QboAuthError as exc:
            await self._connections.needs_reconnect(tenant, exc.message)
            return True
        except QboError as exc:
            log.warning("inbound_fetch_failed", tenant=tenant, error=exc.message)
            return False  # stored again: tried after what came since
        changes.inbound_events += [(realm, n.key) for n in notes]
        self.last_webhook[tenant] = self._clock()
        await self._merges(tenant, notes, changes)
        async with self._store.write_lock:
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
            prefix=self._prefix,
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
        found.invoices = await _by_ids(
            client, "Invoice", ids("Invoice", "Create", "Update", "Void", "Emailed")
        )
        found.payments = list(
            (await _by_ids(client, "Payment", ids("Payment", "Create"))).values()
        )
        found.customers = list(
            (await _by_ids(client, "Customer", ids("Customer", "Create"))).values()
        )
        # a payment moves its invoices' balances: fetch those too (one more query at most)
        linked = {
            t["TxnId"]
            for p in found.payments
            for line in p.get("Line", [])
            for t in line.get("LinkedTxn", [])
            if t.get("TxnType") == "Invoice"
        } - set(found.invoices)
        found.invoices.update(await _by_ids(client, "Invoice", linked))
        found.deleted = ids("Invoice", "Delete") - set(found.invoices)
        return found


async def _by_ids(
    client: QboClient, entity: str, ids: set[str]
) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    rows = await client.query_all(queries.by_ids(entity, ids), entity)
    return {str(r["Id"]): r for r in rows}


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
