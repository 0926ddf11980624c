"""QBO job handlers for the money after the invoice (issue 26, HS6, HS7).

A payment deleted in the CRM is deleted (or voided) in QBO and the invoice's balance
read back; a processor's fee is booked as an expense (a Purchase); a refund is a QBO
refund receipt (or a credit memo). Each writes once, as the invoice's writes do: a
requestid stable for the CRM's id, the intent ledger, and a look-up by the marker syncd
leaves in the memo before writing again after an unclear outcome.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import structlog

from syncd.exceptions import QboNotFoundError, QboTransientError
from syncd.models import Invoice, JobKind, MoneyKind, MoneyState, PaymentRecord
from syncd.outbound import mapping, resolve
from syncd.outbound.payments import (
    already_written,
    balance_after_own_write,
    deposit_account,
    payment_marker,
    push_payment,
    tell_unapplied,
)
from syncd.outbound.push import JobContext
from syncd.qbo import queries

log = structlog.get_logger(__name__)


async def push_any_payment(ctx: JobContext) -> None:
    """A CRM payment: of one invoice, or of several."""
    if ctx.job.payload.get("invoices"):
        await push_split(ctx)
    else:
        await push_payment(ctx)


def marker(tenant: str, what: str, crm_id: str) -> str:
    """The memo syncd leaves on what it wrote (`syncd:` marks it as syncd's own)."""
    return f"syncd:{tenant}:{what}:{crm_id}"


async def record_of(
    ctx: JobContext, kind: MoneyKind, crm_id: str
) -> PaymentRecord | None:
    """The store's record of one payment or refund (None: the books changed since)."""
    found = await ctx.store.payment_records(ctx.job.tenant, (kind,), [crm_id])
    return found[0] if found else None


async def remove_payment(ctx: JobContext) -> None:
    """`payment.deleted`: its QBO Payment (or Sales Receipt) deleted, or voided."""
    pid = str(ctx.job.payload["payment_id"])
    payment = ctx.job.kind is JobKind.PAYMENT_REMOVE
    entity = "Payment" if payment else "SalesReceipt"
    kind = MoneyKind.PAYMENT if payment else MoneyKind.RECEIPT
    # one record per invoice it paid (several for a payment of several invoices)
    records = await ctx.store.payment_records(ctx.job.tenant, (kind,), [pid])
    qbo_id = next((r.qbo_id for r in records if r.qbo_id), None)
    ctx.changes.payments += [_removed(r, ctx) for r in records]
    if qbo_id is None:
        # its push never wrote (it failed, or the books changed): nothing is in QBO
        ctx.note = f"payment {pid} was never written to QBO: nothing to remove"
        return
    how = await _remove(ctx, entity, qbo_id, pid)
    log.info("payment_removed", payment=pid, qbo_id=qbo_id, how=how)
    inv = ctx.invoice
    if payment and inv.qbo_id is not None:
        # QBO gave the invoice its balance back
        mine = sum(
            (r.amount for r in records if r.invoice_id == inv.invoice_id), Decimal(0)
        )
        known = mapping.money(inv.balance or "0")
        await balance_after_own_write(ctx, known + mine)


async def _remove(ctx: JobContext, entity: str, qbo_id: str, pid: str) -> str:
    """Delete or void one QBO transaction, as `[payments] on_delete` says; how it went."""
    try:
        current = await ctx.client.read(entity, qbo_id)
    except QboNotFoundError:
        return "deleted"  # gone already (an earlier try, or a person in QBO)
    if str(current.get("PrivateNote", "")).startswith("Voided"):
        return "voided"
    key = {"Id": qbo_id, "SyncToken": str(current["SyncToken"])}
    request = resolve.request_id(ctx.job.tenant, "payment-remove", pid)
    if ctx.rules.payments.on_delete == "void":
        await ctx.client.void(entity, key, request)
        return "voided"
    await ctx.client.delete(entity, key, request)
    return "deleted"


def _removed(record: PaymentRecord, ctx: JobContext) -> PaymentRecord:
    return dataclasses.replace(record, state=MoneyState.REMOVED, at=ctx.now)


async def push_split(ctx: JobContext) -> None:
    """One CRM payment across several invoices: one QBO Payment, a line per invoice.

    Each invoice must be in QBO first (it waits); what the lines leave of the amount
    stays unapplied in QBO and the CRM is told, as for an overpayment. The invoices'
    new balances come back as QBO's events on them (webhooks, CDC).
    """
    pay, tenant = ctx.job.payload, ctx.job.tenant
    pid, amount = str(pay["payment_id"]), mapping.money(pay["amount"])
    records = await ctx.store.payment_records(tenant, (MoneyKind.PAYMENT,), [pid])
    if any(r.state != MoneyState.RECORDED for r in records):
        ctx.note = f"payment {pid} was deleted in the CRM before it reached QBO"
        return
    shares: list[tuple[Invoice, Decimal]] = []
    customers: list[str] = []
    for share in pay["invoices"]:
        inv = await ctx.store.invoice(tenant, str(share["invoice_id"]))
        if inv is None or inv.qbo_id is None or inv.pushed_body is None:
            raise QboTransientError(f"invoice {share['invoice_id']} is not in QBO yet")
        shares.append((inv, mapping.money(share["amount"])))
        customers.append(str(inv.pushed_body["CustomerRef"]["value"]))
    customer_id = customers[0]  # QBO refuses lines of another customer's invoices
    memo = payment_marker(tenant, pid)
    written = await already_written(ctx, "Payment", customer_id, memo)
    if not written:
        body: dict[str, Any] = {
            "CustomerRef": {"value": customer_id},
            "TotalAmt": amount,
            "TxnDate": pay["date"],
            "PaymentRefNum": pid[:21],
            "PrivateNote": memo,
            "DepositToAccountRef": {"value": await deposit_account(ctx)},
            "Line": [
                {
                    "Amount": paid,
                    "LinkedTxn": [{"TxnId": inv.qbo_id, "TxnType": "Invoice"}],
                }
                for inv, paid in shares
            ],
        }
        rid = resolve.request_id(tenant, "payment", pid)
        written = await ctx.client.create("Payment", body, rid)
    by_invoice = {inv.invoice_id: inv for inv, _ in shares}
    ctx.changes.payments += [
        dataclasses.replace(
            r,
            qbo_id=str(written["Id"]),
            qbo_invoice_id=by_invoice[r.invoice_id].qbo_id,
            at=ctx.now,
        )
        for r in records
        if r.invoice_id in by_invoice
    ]
    applied = sum((paid for _, paid in shares), Decimal(0))
    if applied < amount:
        tell_unapplied(ctx, written, amount, applied, None)


async def push_fee(ctx: JobContext) -> None:
    """The processor's fee on a CRM payment, an expense on `[payments] fee_account`."""
    pay, tenant = ctx.job.payload, ctx.job.tenant
    fee, pid = pay["fee"], str(pay["payment_id"])
    memo = marker(tenant, "fee", pid)
    if ctx.unclear and await _purchase_written(ctx, str(pay["date"]), memo):
        return
    rules, accounts = ctx.rules.payments, ctx.connection.preferences.get("accounts", {})
    processor = str(fee.get("processor") or "payment processor")
    paid_from = rules.fee_paid_from or rules.deposit_account
    body: dict[str, Any] = {
        "PaymentType": "Cash",
        "AccountRef": {
            "value": await resolve.account_id(ctx.client, accounts, paid_from)
        },
        "TxnDate": pay["date"],
        "CurrencyRef": {"value": pay["currency"]},
        "PrivateNote": f"{memo} {processor} fee on CRM payment {pid}",
        "Line": [
            {
                "Amount": mapping.money(fee["amount"]),
                "DetailType": "AccountBasedExpenseLineDetail",
                "Description": f"{processor} fee on payment {pid}",
                "AccountBasedExpenseLineDetail": {
                    "AccountRef": {
                        "value": await resolve.account_id(
                            ctx.client, accounts, rules.fee_account
                        )
                    }
                },
            }
        ],
    }
    await ctx.client.create("Purchase", body, resolve.request_id(tenant, "fee", pid))


async def _purchase_written(ctx: JobContext, day: str, memo: str) -> bool:
    rows = await ctx.client.query_all(queries.dated("Purchase", day), "Purchase")
    return any(str(r.get("PrivateNote", "")).startswith(memo) for r in rows)


async def push_refund(ctx: JobContext) -> None:
    """`payment.refunded`: a refund receipt (or credit memo) for the customer (HS7)."""
    data, tenant = ctx.job.payload, ctx.job.tenant
    rid = str(data["refund_id"])
    entity = "CreditMemo" if ctx.rules.refunds.as_ == "credit_memo" else "RefundReceipt"
    customer_id = await _refund_customer(ctx)
    memo = marker(tenant, "refund", rid)
    record = await record_of(ctx, MoneyKind.REFUND, rid)
    if ctx.unclear and (found := await already_written(ctx, entity, customer_id, memo)):
        _written(ctx, record, found)
        return
    item = "Refund"
    items = await resolve.items(
        ctx.client,
        ctx.store,
        tenant,
        ctx.rules,
        [item],
        ctx.changes,
        ctx.connection.preferences.get("accounts", {}),
    )
    reason = data.get("reason") or f"payment {data.get('payment_id') or ''}".strip()
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id},
        "TxnDate": data["date"],
        "CurrencyRef": {"value": data["currency"]},
        "PrivateNote": memo,
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": mapping.money(data["amount"]),
                "Description": f"Refund {rid}: {reason}"[:4000],
                "SalesItemLineDetail": {"ItemRef": {"value": items[item]}},
            }
        ],
    }
    if entity == "RefundReceipt":
        account = ctx.rules.refunds.account or ctx.rules.payments.deposit_account
        body["DepositToAccountRef"] = {
            "value": await resolve.account_id(
                ctx.client, ctx.connection.preferences.get("accounts", {}), account
            )
        }
        body["PaymentRefNum"] = rid[:21]
    written = await ctx.client.create(
        entity, body, resolve.request_id(tenant, "refund", rid)
    )
    _written(ctx, record, written)


async def _refund_customer(ctx: JobContext) -> str:
    """The invoice's QBO customer when the refund names a synced invoice, else matched."""
    pushed = ctx.invoice.pushed_body or {}
    if ctx.job.invoice_id and pushed.get("CustomerRef"):
        return str(pushed["CustomerRef"]["value"])
    return await resolve.customer(
        ctx.client,
        ctx.store,
        ctx.job.tenant,
        ctx.rules,
        ctx.job.payload["customer"],
        ctx.changes,
    )


def _written(
    ctx: JobContext, record: PaymentRecord | None, written: dict[str, Any]
) -> None:
    if record is not None:
        ctx.changes.payments.append(
            dataclasses.replace(record, qbo_id=str(written["Id"]), at=ctx.now)
        )
