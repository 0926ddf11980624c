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
from decimal import Decimal
from typing import Any

import structlog

from syncd import events, failures, qbo_news
from syncd.exceptions import QboAuthError, QboError
from syncd.models import ChangeSet, Failure, HistoryEntry, Invoice, SyncState
from syncd.push import qbo_status
from syncd.qbo import QboClient, webhooks
from syncd.qbo_news import QboChanges
from syncd.resolve import quote
from syncd.worker import LoopWorker

log = structlog.get_logger(__name__)


class InboundWorker(LoopWorker):
    """Applies stored QBO webhooks, in order, each event once."""

    idle = 5.0  # webhooks wake it; the wait only retries what QBO could not answer

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
        changes = ChangeSet(inbound_done=[seq for seq, _ in pending])
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
        await self._store.commit(changes)
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
            tenant, "customer", str(request["contact_id"])
        )
        if customer is None:
            return {}
        where = [f"CustomerRef = {quote(customer)}"]
        if request.get("from"):
            where.append(f"TxnDate >= {quote(request['from'])}")
        if request.get("to"):
            where.append(f"TxnDate <= {quote(request['to'])}")
        rows = await client.query_all(
            f"select * from Invoice where {' and '.join(where)}", "Invoice"
        )
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
            for link in await self._store.links_to(tenant, "customer", note.deleted_id):
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
        """Apply QBO's current objects (from webhooks, CDC or a refresh).

        The caller holds the write lock. `listing` reports QBO-made invoices even when they
        were reported before (a refresh asks for the list, PD8).
        """
        keys = [f"payment-received:{p['Id']}" for p in found.payments]
        keys += [f"first-payment:{p['CustomerRef']['value']}" for p in found.payments]
        keys += [f"contact-created:{c['Id']}" for c in found.customers]
        keys += [f"invoice-imported:{i}" for i in found.invoices]
        fresh = await self._store.new_events(realm, keys)
        for qbo_id, obj in found.invoices.items():
            await self._invoice(tenant, qbo_id, obj, changes, (realm, fresh), listing)
        for qbo_id in found.deleted:
            await self._invoice(tenant, qbo_id, None, changes, (realm, fresh))
        for payment in found.payments:
            if str(payment.get("PrivateNote", "")).startswith("syncd:"):
                continue  # syncd's own payment, coming back
            if qbo_news.first_time(
                f"payment-received:{payment['Id']}", realm, fresh, changes
            ):
                await self._payment_received(tenant, payment, changes)
            await self._maybe_review(tenant, payment, realm, fresh, changes)
        for customer in found.customers:
            await self._maybe_contact(tenant, customer, realm, fresh, changes)

    async def _maybe_review(
        self,
        tenant: str,
        payment: dict[str, Any],
        realm: str,
        fresh: set[str],
        changes: ChangeSet,
    ) -> None:
        machine = self._rulebook.machine(tenant)
        if machine is None or not machine.rules.reviews.on_first_payment:
            return
        key = f"first-payment:{payment['CustomerRef']['value']}"
        if qbo_news.first_time(key, realm, fresh, changes):
            changes.outbox.append(
                qbo_news.review_requested(self._prefix, tenant, payment, self._clock())
            )

    async def _maybe_contact(
        self,
        tenant: str,
        customer: dict[str, Any],
        realm: str,
        fresh: set[str],
        changes: ChangeSet,
    ) -> None:
        if await self._store.linked_to(tenant, "customer", str(customer["Id"])):
            return  # a customer syncd itself created or matched
        if qbo_news.first_time(
            f"contact-created:{customer['Id']}", realm, fresh, changes
        ):
            changes.outbox.append(
                qbo_news.contact_created(self._prefix, tenant, customer, self._clock())
            )

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

    async def _invoice(
        self,
        tenant: str,
        qbo_id: str,
        obj: dict[str, Any] | None,
        changes: ChangeSet,
        news: tuple[str, set[str]],
        listing: bool = False,
    ) -> None:
        inv = await self._store.invoice_by_qbo_id(tenant, qbo_id)
        machine = self._rulebook.machine(tenant)
        if machine is None:
            return
        if inv is None:
            # created in QBO (by a person), not by syncd: the CRM sees it, linked to no deal
            ours = obj is None or str(obj.get("PrivateNote", "")).startswith("syncd:")
            first = qbo_news.first_time(f"invoice-imported:{qbo_id}", *news, changes)
            if not ours and (first or listing):  # a refresh lists each time it is asked
                deal = await self._store.link(tenant, "deal", qbo_id) or None
                message = qbo_news.imported(
                    self._prefix, tenant, obj or {}, self._clock(), deal
                )
                changes.outbox.append(message)
            return
        key = (tenant, inv.invoice_id)
        inv = changes.invoices.get(key, inv)
        event = _classify(inv, obj, self._clock())
        if event == "invoice_updated" and inv.sync_state == SyncState.PENDING and obj:
            _record_conflict(inv, obj, changes, self._clock())
        _take_qbo_view(inv, obj, self._clock())
        if event is not None:
            await self._move(inv, event, machine, changes)
        changes.invoices[key] = inv
        changes.outbox.append(events.sync_state(self._prefix, inv, self._clock(), None))

    async def _move(
        self, inv: Invoice, event: str, machine: Any, changes: ChangeSet
    ) -> None:
        """Map a QBO event to a CRM status and check the move (RO6, RO7, DC4)."""
        target = machine.rules.qbo_events.get(event, "")
        if not target or target == inv.status:
            return
        now, source = self._clock(), inv.status
        if await machine.move(inv.invoice_id, source, target):
            inv.status = target
            changes.history.append(
                HistoryEntry(
                    tenant=inv.tenant,
                    invoice_id=inv.invoice_id,
                    from_status=source,
                    to_status=target,
                    cause=f"qbo {event}",
                    event_id=f"qbo:{inv.qbo_id}",
                    at=now,
                )
            )
            data = {
                "invoice_id": inv.invoice_id,
                "from": source,
                "to": target,
                "reason": f"QBO: {event}",
            }
            changes.outbox.append(
                events.set_status(self._prefix, inv.tenant, data, now)
            )
            log.info(
                "qbo_event_applied",
                qbo_event=event,
                from_status=source,
                to_status=target,
            )
            return
        refusal = machine.rules.explain_refusal(source, target)
        reason = f"QBO {event}: {refusal} (or change [qbo_events] {event})"
        failure = Failure(
            tenant=inv.tenant,
            invoice_id=inv.invoice_id,
            operation="qbo_event",
            code="move_refused",
            message=reason,
            event_id=None,
            at=now,
        )
        failures.report(changes, self._prefix, failure)
        log.warning("qbo_event_refused", qbo_event=event, reason=reason)

    async def _payment_received(
        self, tenant: str, payment: dict[str, Any], changes: ChangeSet
    ) -> None:
        """OD10, HS5: a QBO payment on a synced invoice goes to the CRM (not syncd's own)."""
        for line in payment.get("Line", []):
            for txn in line.get("LinkedTxn", []):
                inv = await self._store.invoice_by_qbo_id(tenant, str(txn.get("TxnId")))
                if inv is None or txn.get("TxnType") != "Invoice":
                    continue
                data = _payment_data(inv.invoice_id, payment, line)
                changes.outbox.append(
                    events.payment_received(self._prefix, tenant, data, self._clock())
                )


def _payment_data(
    invoice_id: str, payment: dict[str, Any], line: dict[str, Any]
) -> dict[str, Any]:
    """Source, date, amount, status and a link to the payment in QBO (HS5)."""
    return {
        "invoice_id": invoice_id,
        "payment_id": payment["Id"],
        "source": "quickbooks",
        "amount": str(line.get("Amount")),
        "currency": (payment.get("CurrencyRef") or {}).get("value"),
        "date": payment.get("TxnDate"),
        "method": (payment.get("PaymentMethodRef") or {}).get("name"),
        "status": "received" if payment.get("TotalAmt") else "voided",
        "qbo_link": f"https://app.qbo.intuit.com/app/recvpayment?txnId={payment['Id']}",
    }


async def _by_ids(
    client: QboClient, entity: str, ids: set[str]
) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    listed = ", ".join(quote(i) for i in sorted(ids))
    rows = await client.query_all(
        f"select * from {entity} where Id in ({listed})", entity
    )
    return {str(r["Id"]): r for r in rows}


def _classify(inv: Invoice, obj: dict[str, Any] | None, now: datetime) -> str | None:
    """What happened in QBO, as a `[qbo_events]` key; None for syncd's own write."""
    if obj is None:
        return "invoice_deleted" if inv.qbo_status != "deleted" else None
    if str(obj.get("SyncToken")) == str(inv.qbo_sync_token):
        return None  # the write syncd itself made, coming back
    view = qbo_status(obj, now.date())
    if view == "voided":
        return "invoice_voided" if inv.qbo_status != "voided" else None
    balance, known = (
        Decimal(str(obj.get("Balance", 0))),
        Decimal(str(inv.balance or obj.get("TotalAmt", 0))),
    )
    if balance < known:
        return "payment_created" if balance == 0 else "payment_created_partial"
    return "invoice_updated"


def _record_conflict(
    inv: Invoice, obj: dict[str, Any], changes: ChangeSet, now: datetime
) -> None:
    """Both sides changed the invoice since the last sync: record it, with both versions.

    The CRM owns the content (its queued push writes the fields it changed); QBO owns
    payments and balance.
    """
    changes.history.append(
        HistoryEntry(
            tenant=inv.tenant,
            invoice_id=inv.invoice_id,
            from_status=inv.status,
            to_status=inv.status,
            event_id=f"qbo:{obj['Id']}:{obj.get('SyncToken')}",
            at=now,
            cause=(
                f"conflict: CRM version {inv.version} and QBO SyncToken {obj.get('SyncToken')} "
                f"(QBO total {obj.get('TotalAmt')}, balance {obj.get('Balance')}) both changed; "
                "the CRM's content wins, QBO's payments and balance stay"
            ),
        )
    )
    log.warning(
        "sync_conflict", invoice=inv.invoice_id, qbo_sync_token=obj.get("SyncToken")
    )


def _take_qbo_view(inv: Invoice, obj: dict[str, Any] | None, now: datetime) -> None:
    """Keep QBO's view current on the state message, whatever the rules say."""
    if obj is None:
        inv.qbo_status = "deleted"
        return
    inv.qbo_status = qbo_status(obj, now.date())
    inv.balance = str(obj.get("Balance"))
    inv.qbo_sync_token = str(obj.get("SyncToken"))


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
