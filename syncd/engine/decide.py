"""The core: a CRM invoice snapshot → checked status move → changes for one transaction.

Pure apart from the state machine (which does no I/O): it reads the invoice as loaded,
and appends ledger rows, invoice state, history, failures and outbound messages to the
ChangeSet that the inbox commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from syncd.engine.machine import InvoiceMachine
from syncd.messages import InputRejected, InvoiceLinked, StateChanged
from syncd.models import (
    ChangeSet,
    DealLink,
    Envelope,
    Failure,
    HistoryEntry,
    Invoice,
    Job,
    JobKind,
    LedgerEntry,
    Outcome,
    Parked,
    SyncState,
)
from syncd.rules.model import Rules

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What one message is handled with."""

    envelope: Envelope
    machine: InvoiceMachine
    now: datetime
    changes: ChangeSet
    # replicas: a message that meets an invoice not (yet) where it expects may be early
    # (its invoice's earlier messages went to another replica): it waits, parked
    may_wait: bool = False


async def apply_upsert(ctx: Context, current: Invoice | None) -> Invoice | None:
    """Apply one `invoice.upserted`; return the invoice as it now stands."""
    data = ctx.envelope.data
    status, version = data["status"], data["version"]
    rules = ctx.machine.rules
    if status not in rules.statuses:
        known = ", ".join(rules.statuses)
        reject(ctx, f"status {status!r} is not in the rules ({rules.source}): {known}")
        return current
    backfill = data.get("backfill") is True
    if _stale(ctx, current, version, backfill=backfill):
        return current
    if ctx.may_wait and not backfill and (gap := _gap(current, version)):
        _wait(ctx, gap)
        return current
    from_status = current.status if current else None
    if not await _allowed(ctx, from_status, status):
        return current
    invoice = _updated(ctx, current, status, version)
    if from_status != status:
        _record_move(ctx, from_status, status)
    if backfill:
        kinds = backfill_jobs(rules, invoice)
    else:
        kinds = jobs_for_move(rules, invoice, entered=from_status != status)
    enqueue(ctx, invoice, kinds)
    ctx.changes.invoices[(invoice.tenant, invoice.invoice_id)] = invoice
    ctx.changes.outbox.append(StateChanged.of(invoice, ctx.now, ctx.envelope.id))
    told = f"{from_status or 'new'} → {status}"
    if backfill:
        told += "; backfill: " + ("copy queued" if kinds else "kept out of QBO")
    ledger_row(ctx, Outcome.APPLIED, told)
    return invoice


def _gap(current: Invoice | None, version: int) -> str | None:
    """Why a snapshot looks early (a version between it and the applied one is missing).

    Applied now, the missing one would come stale and its move be lost: a QBO copy never
    made, an e-mail never sent. Versions are taken to start at 1 and grow by one per
    snapshot the CRM publishes (a CRM that skips some makes those wait `park_for`).
    """
    if current is None:
        if version > 1:
            return f"version {version} of an invoice never seen: versions 1 to {version - 1} first"
        return None
    if version > current.version + 1:
        return f"version {version} after {current.version}: {current.version + 1} first"
    return None


def _delete_gap(current: Invoice | None, version: Any) -> str | None:
    """Why a delete looks early: its invoice unknown, or a version before it missing."""
    if current is None:
        return "unknown invoice: its snapshots first"
    if isinstance(version, int) and version > current.version + 1:
        return f"version {version} after {current.version}: the ones between first"
    return None


def _stale(
    ctx: Context, current: Invoice | None, version: int, *, backfill: bool
) -> bool:
    """A snapshot no newer than the applied one is ignored (a backfill replay aside)."""
    if current is None or version > current.version:
        return False
    if backfill and takes_backfill(current, version):
        return False
    reason = f"version {version} is not newer than the applied {current.version}"
    log.info("stale_snapshot_ignored", version=version, applied=current.version)
    ledger_row(ctx, Outcome.IGNORED, reason)
    return True


def jobs_for_move(rules: Rules, invoice: Invoice, *, entered: bool) -> list[JobKind]:
    """What QBO must do after a snapshot (RO3, HS1, HL5, OD5, OD6, PD7)."""
    sync, status = rules.sync, invoice.status
    kinds: list[JobKind] = []
    if status in sync.on and (entered or invoice.qbo_id):
        kinds.append(
            JobKind.INVOICE_PUSH
        )  # entering a sync status, or an edit while synced
    elif (
        invoice.qbo_id
        and not entered
        and status not in (*sync.void_on, *sync.delete_on)
    ):
        kinds.append(JobKind.INVOICE_PUSH)  # later edits update the same QBO invoice
    if entered and status in sync.send_on:
        kinds += [JobKind.INVOICE_PUSH, JobKind.INVOICE_SEND]
    if entered and status in sync.void_on:
        kinds.append(JobKind.INVOICE_VOID)
    if entered and status in sync.delete_on:
        kinds.append(JobKind.INVOICE_DELETE)
    return list(dict.fromkeys(kinds))


def takes_backfill(current: Invoice, version: int) -> bool:
    """A backfill replay of the snapshot already applied, kept out of QBO until now.

    The CRM hands its history over with the versions syncd may have seen live (and kept
    out by `[sync] since`, HL8): the same version, flagged, is taken once more.
    """
    return (
        version == current.version
        and current.qbo_id is None
        and not current.data.get("backfill")
    )


def backfill_jobs(rules: Rules, invoice: Invoice) -> list[JobKind]:
    """A backfilled snapshot is copied to QBO, never e-mailed, voided or deleted.

    History is copied as it stands: drafts and voided or deleted invoices stay out
    (a later move of a draft syncs as usual); a sent or paid one is created as is
    (its payments follow as `payment.recorded`).
    """
    sync = rules.sync
    kept_out = {rules.initial, *rules.final, *sync.void_on, *sync.delete_on}
    if invoice.qbo_id is None and invoice.status in kept_out:
        return []
    return [JobKind.INVOICE_PUSH]


def enqueue(ctx: Context, invoice: Invoice, kinds: list[JobKind]) -> None:
    """Add QBO jobs in the same transaction as the change that calls for them."""
    for kind in kinds:
        ctx.changes.jobs.append(
            Job.for_invoice(invoice.tenant, kind, invoice.invoice_id, ctx.now)
        )
    if kinds and invoice.sync_state != SyncState.FAILED:
        invoice.sync_state = SyncState.PENDING


_COMMANDS = {
    "command.sync": [JobKind.INVOICE_PUSH],
    "command.send": [JobKind.INVOICE_PUSH, JobKind.INVOICE_SEND],
    "command.void": [JobKind.INVOICE_VOID],
    "command.delete": [JobKind.INVOICE_DELETE],
}


async def apply_command(ctx: Context, current: Invoice | None) -> None:
    """`command.sync` / `send` / `void` / `delete`: the manual buttons (RO3, OD4, PD7)."""
    kinds = _COMMANDS[ctx.envelope.type]
    if current is None:
        reject_or_wait(
            ctx,
            f"unknown invoice {ctx.envelope.data['invoice_id']!r}: send invoice.upserted first",
        )
        return
    enqueue(ctx, current, kinds)
    ctx.changes.invoices[(current.tenant, current.invoice_id)] = current
    ctx.changes.outbox.append(StateChanged.of(current, ctx.now, ctx.envelope.id))
    ledger_row(ctx, Outcome.APPLIED, f"{ctx.envelope.type}: {', '.join(kinds)} queued")


_COPY_COMING = (SyncState.PENDING, SyncState.FAILED)


def apply_deleted(ctx: Context, current: Invoice | None) -> None:
    """`invoice.deleted`: delete the QBO copy, or void it, as the rules say (PD7)."""
    sync = ctx.machine.rules.sync
    # a copy still being made (queued, or failing and retried) is deleted once it exists:
    # the delete waits behind the push in the invoice's queue
    coming = current is not None and current.sync_state in _COPY_COMING
    if ctx.may_wait and (gap := _delete_gap(current, ctx.envelope.data.get("version"))):
        _wait(ctx, gap)
        return
    if current is None or (current.qbo_id is None and not coming):
        ledger_row(ctx, Outcome.IGNORED, "the invoice has no QBO copy")
        return
    deletes = sync.delete_on or not sync.void_on
    kind = JobKind.INVOICE_DELETE if deletes else JobKind.INVOICE_VOID
    enqueue(ctx, current, [kind])
    ctx.changes.invoices[(current.tenant, current.invoice_id)] = current
    ctx.changes.outbox.append(StateChanged.of(current, ctx.now, ctx.envelope.id))
    ledger_row(ctx, Outcome.APPLIED, f"{kind} queued")


def apply_refresh(ctx: Context, invoice: Invoice | None) -> None:
    """`command.refresh` (PD8): pull one invoice, or a contact's invoices in a range.

    The request is queued for the inbound worker in the same transaction as the ledger.
    """
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    request: dict[str, Any] = {
        "tenant": tenant,
        "message_id": ctx.envelope.id,
        "at": ctx.now.isoformat(),
    }
    if data.get("invoice_id"):
        if invoice is None or invoice.qbo_id is None:
            reject(
                ctx, f"invoice {data['invoice_id']!r} has no QBO copy to refresh from"
            )
            return
        request["invoice_qbo_id"] = invoice.qbo_id
    else:
        request |= {
            "contact_id": data["contact_id"],
            "from": data.get("from"),
            "to": data.get("to"),
        }
    ctx.changes.refreshes.append(request)
    ledger_row(ctx, Outcome.APPLIED, "refresh queued")


def apply_link(ctx: Context) -> None:
    """`command.link` / `command.unlink` (HS4, PD8): a QBO-made invoice and a CRM deal.

    Linking is the CRM's decision, never automatic; syncd remembers it (imported and
    refreshed invoices carry the deal) and confirms on `…/out/invoice/linked`.
    """
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    deal = data.get("deal_id") if ctx.envelope.type == "command.link" else None
    ctx.changes.deals.append(
        DealLink(
            tenant=tenant,
            qbo_invoice_id=str(data["qbo_invoice_id"]),
            deal_id=str(deal) if deal else None,
        )
    )
    ctx.changes.outbox.append(
        InvoiceLinked(
            tenant=tenant,
            at=ctx.now,
            data={"qbo_invoice_id": data["qbo_invoice_id"], "deal_id": deal},
            causation_id=ctx.envelope.id,
        )
    )
    ledger_row(ctx, Outcome.APPLIED, f"deal {deal or 'unlinked'}")


def apply_contact(ctx: Context) -> None:
    """`contact.upserted`: push changed details to QBO when the rules allow (PD5)."""
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    if not ctx.machine.rules.customers.push_updates:
        ledger_row(ctx, Outcome.IGNORED, "[customers] push_updates is off")
        return
    job = Job(
        tenant=tenant,
        kind=JobKind.CUSTOMER_PUSH,
        subject=str(data["contact_id"]),
        invoice_id=None,
        next_attempt_at=ctx.now,
        payload=data,
    )
    ctx.changes.jobs.append(job)
    ledger_row(ctx, Outcome.APPLIED, "customer.push queued")


async def _allowed(ctx: Context, from_status: str | None, status: str) -> bool:
    machine = ctx.machine
    if from_status is None:
        if machine.can_start_in(status):
            return True
        reason = (
            f"a new invoice cannot start in {status!r}: the rules "
            f"({machine.rules.source}) reach no such status from "
            f"{machine.rules.initial!r}"
        )
    elif from_status == status or await machine.move(
        ctx.envelope.data["invoice_id"], from_status, status
    ):
        return True
    else:
        reason = machine.rules.explain_refusal(from_status, status)
    if ctx.may_wait:
        _wait(ctx, reason)
    else:
        _refuse(ctx, from_status, status, reason)
    return False


def _updated(
    ctx: Context, current: Invoice | None, status: str, version: int
) -> Invoice:
    env = ctx.envelope
    if current is None:
        return Invoice(
            tenant=env.tenant,
            invoice_id=env.data["invoice_id"],
            status=status,
            version=version,
            data=env.data,
            updated_at=ctx.now,
            first_seen_at=ctx.now,
        )
    if current.data.get("backfill") and not env.data.get("backfill"):
        # HL8 counts the invoice in once it was handed over in a backfill
        current.data = {**env.data, "backfill": True}
    else:
        current.data = env.data
    current.status, current.version = status, version
    current.updated_at = ctx.now
    return current


def _record_move(ctx: Context, from_status: str | None, status: str) -> None:
    env = ctx.envelope
    ctx.changes.history.append(
        HistoryEntry(
            tenant=env.tenant,
            invoice_id=env.data["invoice_id"],
            from_status=from_status,
            to_status=status,
            cause=f"crm {env.type}" if from_status else f"crm {env.type} (created)",
            event_id=env.id,
            at=ctx.now,
        )
    )
    log.info("status_moved", from_status=from_status, to_status=status)


def _refuse(ctx: Context, from_status: str | None, status: str, reason: str) -> None:
    env = ctx.envelope
    ctx.changes.failures.append(
        Failure(
            tenant=env.tenant,
            invoice_id=env.data["invoice_id"],
            operation="status_move",
            code="move_refused",
            message=reason,
            event_id=env.id,
            at=ctx.now,
        )
    )
    log.warning(
        "move_refused", from_status=from_status, to_status=status, reason=reason
    )
    ledger_row(ctx, Outcome.REFUSED, reason)
    ctx.changes.outbox.append(
        InputRejected.of(env.tenant, env.topic, env.id, reason, ctx.now)
    )


def reject_or_wait(ctx: Context, reason: str) -> None:
    """Park the message when it may be early (replicas), else refuse it."""
    if ctx.may_wait:
        _wait(ctx, reason)
    else:
        reject(ctx, reason)


def _wait(ctx: Context, reason: str) -> None:
    """Park the message: decided again when its invoice changes, or refused later."""
    env = ctx.envelope
    log.debug("message_waits", reason=reason)  # each look again too: the inbox says
    ctx.changes.parked.append(
        Parked(
            tenant=env.tenant,
            message_id=env.id,
            # a payment's message without one waits on its payment's own key
            invoice_id=str(
                env.data.get("invoice_id") or f"payment:{env.data.get('payment_id')}"
            ),
            topic=env.topic,
            payload=env.payload,
            reason=reason,
            parked_at=ctx.now,
        )
    )
    ledger_row(
        ctx, Outcome.PARKED, f"waiting for the invoice's earlier messages: {reason}"
    )


def reject(ctx: Context, reason: str) -> None:
    """Refuse the message with a reason a person reads, on `…/out/input/rejected`."""
    env = ctx.envelope
    log.warning("message_rejected", reason=reason)
    ledger_row(ctx, Outcome.REJECTED, reason)
    ctx.changes.outbox.append(
        InputRejected.of(env.tenant, env.topic, env.id, reason, ctx.now)
    )


def ledger_row(ctx: Context, outcome: Outcome, reason: str) -> None:
    """The message's row in the processed-message ledger."""
    env = ctx.envelope
    ctx.changes.ledger.append(
        LedgerEntry(
            tenant=env.tenant,
            message_id=env.id,
            topic=env.topic,
            type=env.type,
            outcome=outcome,
            reason=reason,
            received_at=ctx.now,
        )
    )
