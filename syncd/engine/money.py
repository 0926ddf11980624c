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
from syncd.models import (
    Invoice,
    Job,
    JobKind,
    MoneyKind,
    MoneyState,
    Outcome,
    PaymentRecord,
)

_PAID = (MoneyKind.PAYMENT, MoneyKind.RECEIPT)


def apply_recorded(
    ctx: Context, invoice: Invoice | None, known: Iterable[PaymentRecord]
) -> None:
    """`payment.recorded`: a QBO Payment for an invoice (HL5), else a Sales Receipt (HL3).

    With a `fee`, the processor's fee is booked as an expense too (HS6), its own job.
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
    payload = {"payment_id": payment_id, "amount": str(record.amount)}
    ctx.changes.jobs.append(
        _job(ctx, kind, payment_id, record.invoice_id or None, payload)
    )
    ctx.changes.payments.append(
        dataclasses.replace(record, state=MoneyState.REMOVING, at=ctx.now)
    )
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
