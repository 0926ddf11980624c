"""A QBO event moves a CRM invoice: mapped by `[qbo_events]`, checked by the moves.

Both directions use it: the inbound side for what someone did in QBO (a payment, a void,
a deletion), the outbound side when syncd's own write changed QBO's view of the money
(a CRM edit raising the total of an invoice QBO held as paid makes it partly paid again).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog

from syncd.engine import failures
from syncd.engine.machine import InvoiceMachine
from syncd.messages import StatusSet
from syncd.models import ChangeSet, Failure, HistoryEntry, Invoice

log = structlog.get_logger(__name__)
_PAID = ("paid", "partially_paid")


def qbo_status(obj: dict[str, Any], today: date) -> str:
    """QBO's view of an invoice, derived as qbo.md §9 says."""
    total, balance = (
        Decimal(str(obj.get("TotalAmt", 0))),
        Decimal(str(obj.get("Balance", 0))),
    )
    if "Voided" in str(obj.get("PrivateNote", "")) and not total:
        return "voided"
    if total > 0 and balance == 0:
        return "paid"
    if 0 < balance < total:
        return "partially_paid"
    due = obj.get("DueDate")
    if balance > 0 and due and date.fromisoformat(due) < today:
        return "overdue"
    return "open"


def token_floor(token: str | None) -> int | None:
    """The lowest SyncToken QBO's copy can have, as syncd knows it.

    `"7"`: exactly 7 (a write's answer, a read); `"7+"`: at least 7 (syncd's payment
    moved it by one without an answer naming it); None: not known at all.
    """
    if not token:
        return None
    digits = token.removesuffix("+")
    return int(digits) if digits.isdigit() else None


def exact_token(token: str | None) -> str | None:
    """The SyncToken to write with, when syncd knows it exactly."""
    return token if token and token.isdigit() else None


def moved_by_one(token: str | None) -> str | None:
    """What syncd knows after its own write moved the copy without reading it back.

    A webhook read from before that write (SyncToken below the floor) is then known as
    older; without a floor, one moved the CRM back to paid (the long chaos run).
    """
    floor = token_floor(token)
    return None if floor is None else f"{floor + 1}+"


def classify(
    inv: Invoice,
    obj: dict[str, Any] | None,
    now: datetime,
    *,
    removals: bool = True,
) -> str | None:
    """What happened in QBO, as a `[qbo_events]` key; None for syncd's own write.

    `removals=False` while syncd's own payments are under way: a balance above the one
    they will leave is theirs not applied yet, not a payment removed.
    """
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
    kept = removals and _total_kept(inv, obj)
    if balance > known and kept and inv.qbo_status in _PAID:
        # the balance came back with the total as the CRM has it: a payment (or a
        # credit) was removed, even when the payment's own event never reached syncd
        # (deleted before it was read: the long chaos run)
        return (
            "payment_created_partial" if view == "partially_paid" else "payment_removed"
        )
    if view in _PAID and inv.qbo_status not in _PAID:
        # paid though the balance did not drop: a payment and a raised total (syncd's
        # own write of a CRM edit, its record lost) came back as one object
        return "payment_created" if view == "paid" else "payment_created_partial"
    return "invoice_updated"


def _total_kept(inv: Invoice, obj: dict[str, Any]) -> bool:
    total = inv.total
    return total is not None and Decimal(str(obj.get("TotalAmt", 0))) == Decimal(total)


def view_changed(before: str | None, after: str | None) -> str | None:
    """The QBO event a write's own effect on the balance amounts to, or None.

    Only between payment views: paid → partially paid (the total went up), and
    partially paid → paid (the total came down to what was paid).
    """
    if before == "paid" and after == "partially_paid":
        return "payment_created_partial"
    if before == "partially_paid" and after == "paid":
        return "payment_created"
    return None


async def apply(
    inv: Invoice,
    event: str,
    machine: InvoiceMachine,
    now: datetime,
    changes: ChangeSet,
) -> None:
    """Map a QBO event to a CRM status and check the move (RO6, RO7, DC4)."""
    target = machine.rules.qbo_events.get(event, "")
    if not target or target == inv.status:
        return
    source = inv.status
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
        changes.outbox.append(StatusSet(tenant=inv.tenant, at=now, data=data))
        log.info(
            "qbo_event_applied",
            qbo_event=event,
            from_status=source,
            to_status=target,
            tenant=inv.tenant,
            invoice=inv.invoice_id,
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
    failures.report(changes, failure)
    log.warning(
        "qbo_event_refused",
        qbo_event=event,
        reason=reason,
        tenant=inv.tenant,
        invoice=inv.invoice_id,
        qbo_id=inv.qbo_id,
        qbo_status=inv.qbo_status,
        sync_state=inv.sync_state.value,
        version=inv.version,
    )
