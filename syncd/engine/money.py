"""The CRM's payments, deleted payments, fees and refunds → QBO jobs (HL3, HL5, HS6, HS7).

Decided like invoice snapshots, without I/O: what the store knows of the payments named
(loaded by the inbox) and the batch's own records → jobs and payment records in the
same transaction as the ledger row. A payment id is used once: a deleted payment stays
deleted, a second delete or a refund of more than was paid is refused with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal

from syncd.engine.decide import Context, ledger_row, reject, reject_or_wait
from syncd.messages import CreditNoteState
from syncd.models import (
    CreditNote,
    Invoice,
    Job,
    JobKind,
    MoneyKind,
    MoneyState,
    Outcome,
    PaymentRecord,
    SyncState,
)

_PAID = (MoneyKind.PAYMENT, MoneyKind.RECEIPT)


def apply_recorded(
    ctx: Context,
    invoice: Invoice | None,
    known: Iterable[PaymentRecord],
    invoices: Mapping[str, Invoice] | None = None,
) -> None:
    """`payment.recorded`: a QBO Payment for an invoice (HL5), else a Sales Receipt (HL3).

    With a `fee`, the processor's fee is booked as an expense too (HS6), its own job;
    with `invoices`, one QBO Payment pays several (`invoices`: the ones loaded).
    """
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    payment_id, amount = str(data["payment_id"]), Decimal(data["amount"])
    earlier = latest(ctx, known, _PAID, payment_id)
    if earlier is not None and earlier.state != MoneyState.RECORDED:
        reject(ctx, f"payment {payment_id!r} was deleted: a payment id is used once")
        return
    fee = data.get("fee")
    if fee is not None and (problem := _fee_problem(data, fee)):
        reject(ctx, problem)
        return
    if data.get("invoices"):
        _split(ctx, invoices or {})
        return
    if data.get("invoice_id"):
        if invoice is None:
            reject_or_wait(
                ctx,
                f"unknown invoice {data['invoice_id']!r}: the payment needs its invoice first",
            )
            return
        # one job per payment, queued behind the invoice's own jobs
        kind, invoice_id = JobKind.PAYMENT_PUSH, invoice.invoice_id
    else:
        kind, invoice_id = JobKind.RECEIPT_PUSH, None
    jobs = [_job(ctx, kind, payment_id, invoice_id, data)]
    said = f"{kind} queued"
    if fee is not None:
        if ctx.machine.rules.payments.fee_account:
            jobs.append(_job(ctx, JobKind.FEE_PUSH, payment_id, invoice_id, data))
            said += f", {JobKind.FEE_PUSH} queued"
        else:
            said += "; its fee is not booked: [payments] fee_account is empty"
    ctx.changes.jobs += jobs
    ctx.changes.payments.append(
        PaymentRecord(
            tenant=tenant,
            kind=MoneyKind.PAYMENT if invoice_id else MoneyKind.RECEIPT,
            payment_id=payment_id,
            invoice_id=invoice_id or "",
            amount=amount,
            at=ctx.now,
        )
    )
    ledger_row(ctx, Outcome.APPLIED, said)


def _split(ctx: Context, invoices: Mapping[str, Invoice]) -> None:
    """One payment across several invoices: one QBO Payment, a line per invoice.

    Its own queue (`payment:<id>`): each invoice must be in QBO first, and it waits
    for the last; what is left over stays unapplied in QBO, as an overpayment's.
    """
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    payment_id, amount = str(data["payment_id"]), Decimal(data["amount"])
    shares = [(str(a["invoice_id"]), Decimal(a["amount"])) for a in data["invoices"]]
    ids = [i for i, _ in shares]
    problem = None
    if data.get("invoice_id"):
        problem = "a payment names invoice_id or invoices, not both"
    elif len(set(ids)) != len(ids):
        problem = "a payment names each of its invoices once"
    elif (applied := sum((a for _, a in shares), Decimal(0))) > amount:
        problem = (
            f"the amounts applied to its invoices ({applied}) are more than the "
            f"payment ({amount})"
        )
    if problem:
        reject(ctx, problem)
        return
    if missing := [i for i in ids if i not in invoices]:
        reject_or_wait(
            ctx, f"unknown invoice {missing[0]!r}: the payment needs its invoices first"
        )
        return
    jobs = [_job(ctx, JobKind.PAYMENT_PUSH, payment_id, None, data)]
    if data.get("fee") is not None and ctx.machine.rules.payments.fee_account:
        jobs.append(_job(ctx, JobKind.FEE_PUSH, payment_id, None, data))
    ctx.changes.jobs += jobs
    ctx.changes.payments += [
        PaymentRecord(
            tenant=tenant,
            kind=MoneyKind.PAYMENT,
            payment_id=payment_id,
            invoice_id=invoice_id,
            amount=share,
            at=ctx.now,
        )
        for invoice_id, share in shares
    ]
    ledger_row(
        ctx,
        Outcome.APPLIED,
        ", ".join(f"{j.kind} queued" for j in jobs) + f" ({len(shares)} invoices)",
    )


def apply_deleted(ctx: Context, known: Iterable[PaymentRecord]) -> None:
    """`payment.deleted`: its QBO copy deleted or voided, as `[payments] on_delete` says."""
    payment_id = str(ctx.envelope.data["payment_id"])
    record = latest(ctx, known, _PAID, payment_id)
    if record is None:
        reject_or_wait(
            ctx, f"unknown payment {payment_id!r}: syncd never had its payment.recorded"
        )
        return
    if record.state != MoneyState.RECORDED:
        reject(ctx, f"payment {payment_id!r} was already deleted")
        return
    kind = (
        JobKind.PAYMENT_REMOVE
        if record.kind == MoneyKind.PAYMENT
        else JobKind.RECEIPT_REMOVE
    )
    every = _all_of(ctx, known, payment_id)
    payload = {"payment_id": payment_id, "amount": str(record.amount)}
    # a payment of several invoices has its own queue, as its push had
    queue = record.invoice_id or None if len(every) == 1 else None
    ctx.changes.jobs.append(_job(ctx, kind, payment_id, queue, payload))
    ctx.changes.payments += [
        dataclasses.replace(r, state=MoneyState.REMOVING, at=ctx.now) for r in every
    ]
    ledger_row(ctx, Outcome.APPLIED, f"{kind} queued")


def apply_refunded(
    ctx: Context,
    invoice: Invoice | None,
    known: Iterable[PaymentRecord],
    refunded: Decimal,
) -> None:
    """`payment.refunded`: a QBO refund receipt (or credit memo), once per refund (HS7).

    `refunded` is what the store knows was refunded of the payment named so far. A
    refund naming an invoice waits behind the invoice's own jobs and is for its
    customer in QBO.
    """
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    refund_id, amount = str(data["refund_id"]), Decimal(data["amount"])
    known = list(known)
    if latest(ctx, known, (MoneyKind.REFUND,), refund_id) is not None:
        ledger_row(ctx, Outcome.IGNORED, f"refund {refund_id!r} is already recorded")
        return
    payment_id = data.get("payment_id")
    if payment_id:
        paid = latest(ctx, known, _PAID, str(payment_id))
        if paid is None:
            reject_or_wait(
                ctx, f"unknown payment {payment_id!r}: a refund needs its payment first"
            )
            return
        if paid.state != MoneyState.RECORDED:
            reject(
                ctx, f"payment {payment_id!r} was deleted: there is nothing to refund"
            )
            return
        refunded += sum(
            (
                r.amount
                for r in ctx.changes.payments
                if r.kind == MoneyKind.REFUND and r.refunds == payment_id
            ),
            Decimal(0),
        )
        if refunded + amount > paid.amount:
            reject(
                ctx,
                f"a refund of {amount} is more than what is left of payment "
                f"{payment_id!r} ({paid.amount} paid, {refunded} refunded already)",
            )
            return
    if data.get("invoice_id") and invoice is None:
        reject_or_wait(
            ctx, f"unknown invoice {data['invoice_id']!r}: a refund names a known one"
        )
        return
    queue = invoice.invoice_id if invoice is not None else None
    ctx.changes.jobs.append(_job(ctx, JobKind.REFUND_PUSH, refund_id, queue, data))
    ctx.changes.payments.append(
        PaymentRecord(
            tenant=tenant,
            kind=MoneyKind.REFUND,
            payment_id=refund_id,
            amount=amount,
            refunds=str(payment_id) if payment_id else None,
            at=ctx.now,
        )
    )
    ledger_row(ctx, Outcome.APPLIED, f"{JobKind.REFUND_PUSH} queued")


def apply_credit_note(
    ctx: Context,
    current: CreditNote | None,
    invoice: Invoice | None,
) -> CreditNote | None:
    """`credit_note.upserted`: the credit note as it now stands, its job queued.

    `open` is copied to QBO (and applied to its invoice), `voided` removed from QBO; a
    draft stays in the CRM. A note is for one invoice, and a voided one is final.
    """
    data, tenant = ctx.envelope.data, ctx.envelope.tenant
    note_id, version = str(data["credit_note_id"]), int(data["version"])
    if current is not None and version <= current.version:
        ledger_row(
            ctx,
            Outcome.IGNORED,
            f"version {version} is not newer than the applied {current.version}",
        )
        return current
    if current is not None and current.status == "voided":
        reject(ctx, f"credit note {note_id!r} is voided: a voided credit note is final")
        return current
    if data.get("invoice_id") and invoice is None:
        reject_or_wait(
            ctx,
            f"unknown invoice {data['invoice_id']!r}: a credit note names a known one",
        )
        return current
    if (
        current is not None
        and current.invoice_id
        and (data.get("invoice_id") != current.invoice_id)
    ):
        reject(
            ctx,
            f"credit note {note_id!r} is for invoice {current.invoice_id!r}: "
            "it cannot move to another",
        )
        return current
    note = (
        dataclasses.replace(current, version=version, data=dict(data))
        if current is not None
        else CreditNote(
            tenant=tenant,
            credit_note_id=note_id,
            version=version,
            status=str(data["status"]),
            data=dict(data),
            updated_at=ctx.now,
        )
    )
    note.status, note.updated_at = str(data["status"]), ctx.now
    in_qbo = note.qbo_id is not None or note.sync_state in (
        SyncState.PENDING,
        SyncState.FAILED,
    )
    said = "kept (a draft stays in the CRM)"
    if note.status == "open" or (note.status == "voided" and in_qbo):
        # behind its invoice's own jobs (in QBO first; the credit it applies is syncd's
        # own write, as a CRM payment is), else a queue of its own
        queue = invoice.invoice_id if invoice is not None else None
        crediting = str(data["total"]) if note.status == "open" else "0"
        payload = {"version": version, "amount": crediting}
        ctx.changes.jobs.append(
            _job(ctx, JobKind.CREDIT_NOTE_PUSH, note_id, queue, payload)
        )
        note.sync_state = SyncState.PENDING
        said = f"{JobKind.CREDIT_NOTE_PUSH} queued"
    ctx.changes.credit_notes.append(note)
    ctx.changes.outbox.append(CreditNoteState.of(note, ctx.now, ctx.envelope.id))
    ledger_row(ctx, Outcome.APPLIED, said)
    return note


def latest(
    ctx: Context,
    known: Iterable[PaymentRecord],
    kinds: tuple[MoneyKind, ...],
    payment_id: str,
) -> PaymentRecord | None:
    """The newest word on one payment: this batch's, else the store's."""
    tenant = ctx.envelope.tenant
    for record in [*known, *ctx.changes.payments][::-1]:
        if (
            record.tenant == tenant
            and record.kind in kinds
            and record.payment_id == payment_id
        ):
            return record
    return None


def _all_of(
    ctx: Context, known: Iterable[PaymentRecord], payment_id: str
) -> list[PaymentRecord]:
    """Each invoice's record of one CRM payment (one, unless it paid several)."""
    found: dict[str, PaymentRecord] = {}
    for record in [*known, *ctx.changes.payments]:
        if record.kind in _PAID and record.payment_id == payment_id:
            found[record.invoice_id] = record
    return list(found.values())


def _fee_problem(data: dict[str, object], fee: dict[str, object]) -> str | None:
    if fee.get("currency") and fee["currency"] != data["currency"]:
        return (
            f"the fee is in {fee['currency']} and the payment in {data['currency']}: "
            "a fee is booked in the payment's currency"
        )
    if Decimal(str(fee["amount"])) >= Decimal(str(data["amount"])):
        return (
            f"the fee ({fee['amount']}) is not less than the payment ({data['amount']})"
        )
    return None


def _job(
    ctx: Context,
    kind: JobKind,
    subject: str,
    invoice_id: str | None,
    payload: Mapping[str, object],
) -> Job:
    return Job(
        tenant=ctx.envelope.tenant,
        kind=kind,
        subject=subject,
        invoice_id=invoice_id,
        next_attempt_at=ctx.now,
        payload=dict(payload),
    )
