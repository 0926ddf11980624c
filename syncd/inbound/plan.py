"""QBO → CRM, decided: QBO's current objects and what syncd knows → one ChangeSet.

`load` reads, in a few queries, everything the store knows about the objects in one
QboChanges; `plan` then decides without I/O (the state machine's check is a coroutine
but touches nothing outside): QBO's view on each synced invoice, the QBO event each
change maps to through `[qbo_events]` and its checked move (RO6, RO7, DC4), conflicts
recorded with both versions, payments received (OD10, HS5), review requests (HL2),
invoices and customers made in QBO (HS3, PD8), each news item reported once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import structlog

from syncd.engine import qbo_events
from syncd.engine.machine import InvoiceMachine
from syncd.engine.qbo_events import classify, qbo_status
from syncd.inbound import news
from syncd.inbound.news import QboChanges
from syncd.messages import PaymentReceived, PaymentRemoved, StateChanged
from syncd.models import (
    ChangeSet,
    HistoryEntry,
    Invoice,
    MoneyKind,
    MoneyState,
    PaymentRecord,
    SyncState,
)
from syncd.store import References, Webhooks

log = structlog.get_logger(__name__)
_REMOVALS = ("invoice_deleted", "invoice_voided")
_PAYMENTS = ("payment_created", "payment_created_partial")


@dataclass(frozen=True, slots=True, kw_only=True)
class Known:
    """What the store knows about the objects of one QboChanges."""

    invoices: dict[str, Invoice]  # synced invoices, by QBO Id
    deals: dict[str, str]  # QBO-made invoice Id → the CRM deal linked to it (HS4)
    customers: set[str]  # QBO customer Ids syncd created or matched
    fresh: set[str]  # news keys not reported yet
    # CRM invoices whose QBO delete or void syncd queued and has not recorded yet
    removing: set[str] = field(default_factory=set)
    # CRM invoices with CRM payments syncd queued and has not recorded yet: their total
    paying: dict[str, Decimal] = field(default_factory=dict)
    # CRM invoices with a CRM payment's removal under way (syncd's own)
    unpaying: set[str] = field(default_factory=set)
    # syncd's records of the payments QBO says were deleted or voided (issue 26)
    removed: list[PaymentRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """Whose changes these are, and when."""

    tenant: str
    realm: str
    now: datetime
    listing: bool = False  # a refresh lists QBO-made invoices each time it is asked


def news_keys(found: QboChanges) -> list[str]:
    """The keys that make each news item in `found` reported once."""
    keys = [f"payment-received:{p['Id']}" for p in found.payments]
    keys += [f"first-payment:{p['CustomerRef']['value']}" for p in found.payments]
    keys += [f"contact-created:{c['Id']}" for c in found.customers]
    keys += [f"invoice-imported:{i}" for i in found.invoices]
    keys += [f"refund:{r['Id']}" for r in found.refunds]
    keys += [f"credit-memo:{m['Id']}" for m in found.credit_memos]
    return keys


def invoice_ids(found: QboChanges) -> set[str]:
    """Every QBO invoice Id `found` names: changed, deleted, or paid by its payments."""
    paid = {
        str(txn.get("TxnId"))
        for p in found.payments
        for line in p.get("Line", [])
        for txn in line.get("LinkedTxn", [])
    }
    return set(found.invoices) | found.deleted | paid


class Loading(References, Webhooks, Protocol):
    """What loading a batch of QBO changes needs of the store."""


async def load(store: Loading, tenant: str, realm: str, found: QboChanges) -> Known:
    """Read what the store knows about `found`, one question per kind."""
    ids = sorted(invoice_ids(found))
    invoices = await store.invoices_by_qbo_ids(tenant, ids)
    crm_ids = sorted(i.invoice_id for i in invoices.values())
    under_way = await store.writes_under_way(tenant, crm_ids)
    return Known(
        invoices=invoices,
        removing=under_way.removing,
        paying=under_way.paying,
        unpaying=under_way.unpaying,
        deals=await store.deals(tenant, sorted(found.invoices)),
        customers=await store.linked_customers(tenant, _customer_ids(found)),
        fresh=await store.new_events(realm, news_keys(found)),
        removed=await store.payments_in_qbo(tenant, sorted(found.removed_payments)),
    )


async def plan(
    found: QboChanges,
    known: Known,
    machine: InvoiceMachine,
    scope: Scope,
    changes: ChangeSet,
) -> None:
    """Add to `changes` what QBO's objects mean for the CRM."""
    removed, credited = _removed_on(found, known), _credited(found)
    for qbo_id, obj in found.invoices.items():
        how = (
            "removed" if qbo_id in removed else "credited" if qbo_id in credited else ""
        )
        await _invoice(qbo_id, obj, known, machine, scope, changes, how)
    for qbo_id in found.deleted:
        await _invoice(qbo_id, None, known, machine, scope, changes)
    _tell_removed(found, removed, known, scope, changes)
    _credits(found, known, scope, changes)
    for payment in found.payments:
        if str(payment.get("PrivateNote", "")).startswith("syncd:"):
            continue  # syncd's own payment, coming back
        if _first(f"payment-received:{payment['Id']}", known, scope, changes):
            # a $0 payment only applying a credit memo brings no money in
            money_in = payment.get("TotalAmt") or not _linked(payment, "CreditMemo")
            _payment_received(payment, known, scope, changes, tell=bool(money_in))
        if machine.rules.reviews.on_first_payment and _first(
            f"first-payment:{payment['CustomerRef']['value']}", known, scope, changes
        ):
            changes.outbox.append(
                news.review_requested(scope.tenant, payment, scope.now)
            )
    for customer in found.customers:
        if str(customer["Id"]) in known.customers:
            continue  # a customer syncd itself created or matched
        if _first(f"contact-created:{customer['Id']}", known, scope, changes):
            changes.outbox.append(
                news.contact_created(scope.tenant, customer, scope.now)
            )


def _customer_ids(found: QboChanges) -> list[str]:
    """New customers, and the customers of refunds and credit memos made in QBO."""
    ids = {str(c["Id"]) for c in found.customers}
    for obj in (*found.refunds, *found.credit_memos):
        ids.add(str((obj.get("CustomerRef") or {}).get("value")))
    return sorted(ids)


def _credits(found: QboChanges, known: Known, scope: Scope, changes: ChangeSet) -> None:
    """Refunds and credit memos a person made in QBO for synced customers (HS7)."""
    for refund in found.refunds:
        if _ours(refund) or not _for_synced(refund, known):
            continue
        if _first(f"refund:{refund['Id']}", known, scope, changes):
            changes.outbox.append(news.refunded(scope.tenant, refund, scope.now))
    for memo in found.credit_memos:
        if _ours(memo) or not _for_synced(memo, known):
            continue
        if _first(f"credit-memo:{memo['Id']}", known, scope, changes):
            applied = _applied_to(found, known, str(memo["Id"]))
            changes.outbox.append(
                news.credit_memo_imported(scope.tenant, memo, applied, scope.now)
            )


def _ours(obj: dict[str, Any]) -> bool:
    return str(obj.get("PrivateNote", "")).startswith("syncd:")


def _for_synced(obj: dict[str, Any], known: Known) -> bool:
    return str((obj.get("CustomerRef") or {}).get("value")) in known.customers


def _applied_to(found: QboChanges, known: Known, memo_id: str) -> list[str]:
    """The synced invoices the payments in `found` applied this credit memo to."""
    applied: list[str] = []
    for payment in found.payments:
        if memo_id not in _linked(payment, "CreditMemo"):
            continue
        for qbo_id in _linked(payment, "Invoice"):
            if (inv := known.invoices.get(qbo_id)) is not None:
                applied.append(inv.invoice_id)
    return applied


def _linked(payment: dict[str, Any], kind: str) -> set[str]:
    return {
        str(t.get("TxnId"))
        for line in payment.get("Line", [])
        for t in line.get("LinkedTxn", [])
        if t.get("TxnType") == kind
    }


def _credited(found: QboChanges) -> set[str]:
    """Invoices a payment made in QBO applied a credit memo to (`credit_applied`)."""
    return {
        qbo_id
        for p in found.payments
        if not _ours(p) and _linked(p, "CreditMemo")
        for qbo_id in _linked(p, "Invoice")
    }


def _first(key: str, known: Known, scope: Scope, changes: ChangeSet) -> bool:
    return news.first_time(key, scope.realm, known.fresh, changes)


async def _invoice(
    qbo_id: str,
    obj: dict[str, Any] | None,
    known: Known,
    machine: InvoiceMachine,
    scope: Scope,
    changes: ChangeSet,
    paid_how: str = "",
) -> None:
    inv = known.invoices.get(qbo_id)
    if inv is None:
        # created in QBO (by a person), not by syncd: the CRM sees it, linked to no deal
        ours = obj is None or str(obj.get("PrivateNote", "")).startswith("syncd:")
        first = _first(f"invoice-imported:{qbo_id}", known, scope, changes)
        if not ours and (first or scope.listing):
            message = news.imported(
                scope.tenant,
                obj or {},
                scope.now,
                known.deals.get(qbo_id),
            )
            changes.outbox.append(message)
        return
    key = (inv.tenant, inv.invoice_id)
    inv = changes.invoices.get(key, inv)  # changed earlier in the same batch
    if obj is not None and older_than_known(inv, obj):
        log.info(
            "qbo_view_outdated",
            tenant=inv.tenant,
            invoice=inv.invoice_id,
            qbo_sync_token=obj.get("SyncToken"),
            known_sync_token=inv.qbo_sync_token,
            qbo_status=inv.qbo_status,
        )
        return
    event = _paid_how(_event(inv, obj, known, scope), paid_how, obj, machine, scope.now)
    if event == "invoice_updated" and inv.sync_state == SyncState.PENDING and obj:
        _record_conflict(inv, obj, changes, scope.now)
    take_qbo_view(inv, obj, scope.now)
    if event is not None:
        await qbo_events.apply(inv, event, machine, scope.now, changes)
    changes.invoices[key] = inv
    changes.outbox.append(StateChanged.of(inv, scope.now))


def _payment_received(
    payment: dict[str, Any],
    known: Known,
    scope: Scope,
    changes: ChangeSet,
    *,
    tell: bool = True,
) -> None:
    """OD10, HS5: a QBO payment on a synced invoice goes to the CRM (not syncd's own).

    It is recorded too: removed in QBO later, the CRM is told which invoice it paid.
    """
    for line in payment.get("Line", []):
        for txn in line.get("LinkedTxn", []):
            inv = known.invoices.get(str(txn.get("TxnId")))
            if inv is None or txn.get("TxnType") != "Invoice":
                continue
            if tell:
                data = payment_data(inv.invoice_id, payment, line)
                changes.outbox.append(
                    PaymentReceived(tenant=scope.tenant, at=scope.now, data=data)
                )
            changes.payments.append(
                PaymentRecord(
                    tenant=scope.tenant,
                    kind=MoneyKind.QBO_PAYMENT,
                    payment_id=str(payment["Id"]),
                    invoice_id=inv.invoice_id,
                    amount=Decimal(str(line.get("Amount", 0))),
                    qbo_id=str(payment["Id"]),
                    qbo_invoice_id=inv.qbo_id,
                    at=scope.now,
                )
            )


def _removed_on(found: QboChanges, known: Known) -> set[str]:
    """The QBO invoices whose payments were removed in QBO (syncd's own removals aside)."""
    return {
        str(r.qbo_invoice_id)
        for r in known.removed
        if r.state == MoneyState.RECORDED and r.qbo_id in found.removed_payments
    }


def _event(
    inv: Invoice, obj: dict[str, Any] | None, known: Known, scope: Scope
) -> str | None:
    """What happened to a synced invoice in QBO, syncd's own writes under way aside."""
    paying = known.paying.get(inv.invoice_id)
    if paying and inv.balance is not None:
        # syncd's own payments and credits under way are not QBO events: compare with
        # the balance they will leave (a payment made by hand besides still shows)
        expected = Decimal(inv.balance) - paying
        total = (obj or {}).get("TotalAmt", inv.total or expected)
        view = qbo_status({"TotalAmt": total, "Balance": expected}, scope.now.date())
        after = dataclasses.replace(inv, balance=str(expected), qbo_status=view)
        event = classify(after, obj, scope.now, removals=False)
    else:
        # a balance coming back while syncd removes a payment is that removal
        own_removal = inv.invoice_id in known.unpaying
        event = classify(inv, obj, scope.now, removals=not own_removal)
    if event in _REMOVALS:
        own = inv.invoice_id in known.removing
        log.info(
            "qbo_removal_seen",
            tenant=inv.tenant,
            invoice=inv.invoice_id,
            qbo_event=event,
            qbo_status=inv.qbo_status,
            own=own,
        )
        if own:
            # syncd's own delete or void coming back before its job recorded it (a
            # crash between QBO's answer and the commit): not a move made in QBO
            return None
    return event


def _paid_how(
    event: str | None,
    how: str,
    obj: dict[str, Any] | None,
    machine: InvoiceMachine,
    now: datetime,
) -> str | None:
    """The event, once what its payments went through is known (issue 26)."""
    if how == "removed" and obj is not None:
        return _after_removal(obj, now) or event
    if how == "credited" and event in _PAYMENTS:
        # a credit memo applied in QBO: as `[qbo_events] credit_applied` maps, else as
        # the payment it is
        mapped = machine.rules.qbo_events.get("credit_applied")
        return "credit_applied" if mapped else event
    return event


def _after_removal(obj: dict[str, Any], now: datetime) -> str | None:
    """What a payment removed in QBO leaves: still partly paid, or open again.

    Decided by QBO's view now, not by a change since the last one seen: the invoice's
    own event may have come (and been taken) before the payment's.
    """
    view = qbo_status(obj, now.date())
    if view == "partially_paid":
        return "payment_created_partial"
    return "payment_removed" if view in ("open", "overdue") else None


def _tell_removed(
    found: QboChanges,
    removed_on: set[str],
    known: Known,
    scope: Scope,
    changes: ChangeSet,
) -> None:
    """`payment.removed` for each payment on a synced invoice deleted or voided in QBO."""
    for record in known.removed:
        if record.state != MoneyState.RECORDED or record.qbo_id is None:
            continue  # syncd's own removal coming back, or told already
        if str(record.qbo_invoice_id) not in removed_on:
            continue
        inv = changes.invoices.get((scope.tenant, record.invoice_id))
        data = {
            "invoice_id": record.invoice_id,
            "payment_id": (
                record.payment_id if record.kind == MoneyKind.PAYMENT else None
            ),
            "qbo_payment_id": record.qbo_id,
            "how": found.removed_payments[record.qbo_id],
            "balance": inv.balance if inv is not None else None,
        }
        changes.outbox.append(
            PaymentRemoved(tenant=scope.tenant, at=scope.now, data=data)
        )
        changes.payments.append(
            dataclasses.replace(record, state=MoneyState.REMOVED, at=scope.now)
        )
        log.info(
            "qbo_payment_removed",
            tenant=scope.tenant,
            invoice=record.invoice_id,
            qbo_payment=record.qbo_id,
            how=data["how"],
        )


def payment_data(
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
                f"conflict: CRM version {inv.version} and QBO SyncToken "
                f"{obj.get('SyncToken')} (QBO total {obj.get('TotalAmt')}, balance "
                f"{obj.get('Balance')}) both changed; the CRM's content wins, QBO's "
                "payments and balance stay"
            ),
        )
    )
    log.warning(
        "sync_conflict", invoice=inv.invoice_id, qbo_sync_token=obj.get("SyncToken")
    )


def older_than_known(inv: Invoice, obj: dict[str, Any]) -> bool:
    """QBO's object was read before a change syncd has already recorded.

    Webhooks are read outside the write lock, so a copy fetched just before syncd's own
    delete, void or update may arrive after that job recorded its answer; taking it
    would put an older QBO view back (a deleted invoice "open" again). A deletion is
    final, and SyncTokens only grow (syncd may know only a floor: `token_floor`).
    """
    if inv.qbo_status == "deleted":
        return True
    floor, seen = qbo_events.token_floor(inv.qbo_sync_token), str(obj.get("SyncToken"))
    return floor is not None and seen.isdigit() and int(seen) < floor


def take_qbo_view(inv: Invoice, obj: dict[str, Any] | None, now: datetime) -> None:
    """Keep QBO's view current on the state message, whatever the rules say."""
    if obj is None:
        inv.qbo_status = "deleted"
        return
    inv.qbo_status = qbo_status(obj, now.date())
    inv.balance = str(obj.get("Balance"))
    inv.qbo_sync_token = str(obj.get("SyncToken"))
