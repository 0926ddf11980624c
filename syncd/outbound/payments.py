"""QBO job handlers for CRM payments.

A payment of a synced invoice becomes a QBO Payment linked to it (HL5, RO4); a payment
with no invoice (order form, subscription, membership, booking) a Sales Receipt (HL3).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from syncd.engine import qbo_events
from syncd.engine.qbo_events import qbo_status
from syncd.exceptions import QboTransientError
from syncd.messages import PaymentUnapplied
from syncd.models import LinkKind, MoneyKind, MoneyState, PaymentRecord, SyncState
from syncd.outbound import mapping, resolve
from syncd.outbound.push import JobContext, apply_answer
from syncd.qbo import queries
from syncd.rules.model import Rules


def payment_marker(tenant: str, payment_id: str) -> str:
    """The PrivateNote syncd leaves on a Payment or Sales Receipt it wrote."""
    return f"syncd:{tenant}:payment:{payment_id}"


async def push_payment(ctx: JobContext) -> None:
    """A QBO Payment applied to the invoice's QBO copy, deposited per the rules."""
    inv, pay = ctx.invoice, ctx.job.payload
    if inv.qbo_id is None or inv.pushed_body is None:
        # the invoice's own push comes first (same queue); if it has not made it, wait
        raise QboTransientError(f"invoice {inv.invoice_id} is not in QBO yet")
    amount = mapping.money(pay["amount"])
    customer_id = str(inv.pushed_body["CustomerRef"]["value"])
    marker = payment_marker(ctx.job.tenant, pay["payment_id"])
    before = inv.qbo_status
    record = await _still_wanted(ctx, MoneyKind.PAYMENT)
    if record is None:
        return
    if ctx.unclear and (
        found := await already_written(ctx, "Payment", customer_id, marker)
    ):
        _written(ctx, record, found)
        await balance_from_qbo(ctx)
        see_settled(ctx, before)
        return
    applied = await _applicable(ctx, amount)
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id},
        "TotalAmt": amount,
        "TxnDate": pay["date"],
        "PaymentRefNum": str(pay["payment_id"])[:21],
        "PrivateNote": marker,
        "DepositToAccountRef": {"value": await _account(ctx, ctx.rules)},
        "Line": [
            {
                "Amount": applied,
                "LinkedTxn": [{"TxnId": inv.qbo_id, "TxnType": "Invoice"}],
            }
        ]
        if applied
        else [],
    }
    written = await ctx.client.create(
        "Payment",
        body,
        resolve.request_id(ctx.job.tenant, "payment", pay["payment_id"]),
    )
    _written(ctx, record, written)
    if ctx.job.attempts > 1:
        # an earlier try may have written it (the requestid gave its answer back) and its
        # webhook already set the balance: read it rather than subtract the amount again
        await balance_from_qbo(ctx)
    else:
        _apply_to_invoice(ctx, applied)
    see_settled(ctx, before)
    if applied < amount:
        tell_unapplied(ctx, written, amount, applied, ctx.invoice.invoice_id)


async def _applicable(ctx: JobContext, amount: Decimal) -> Decimal:
    """What of the payment the invoice can take: all of it, or its open balance.

    An overpayment's surplus stays on the QBO Payment as its unapplied amount (a credit
    of the customer's, qbo.md §11.4), and the CRM is told: never silently lost.
    """
    known = mapping.money(ctx.invoice.balance or "0")
    if amount <= known:
        return amount
    current = await ctx.client.read("Invoice", str(ctx.invoice.qbo_id))
    return min(amount, mapping.money(current.get("Balance") or "0"))


def tell_unapplied(
    ctx: JobContext,
    written: dict[str, Any],
    amount: Decimal,
    applied: Decimal,
    invoice_id: str | None,
) -> None:
    """The CRM is told what of its payment QBO keeps unapplied (never silently lost)."""
    pay = ctx.job.payload
    data = {
        "payment_id": pay["payment_id"],
        "invoice_id": invoice_id,
        "qbo_payment_id": str(written["Id"]),
        "amount": str(amount),
        "applied": str(applied),
        "unapplied": str(mapping.money(written.get("UnappliedAmt", amount - applied))),
        "currency": pay.get("currency"),
    }
    ctx.changes.outbox.append(
        PaymentUnapplied(tenant=ctx.job.tenant, at=ctx.now, data=data)
    )


def see_settled(ctx: JobContext, before: str | None) -> None:
    """The payment that settles the invoice is seen as QBO's `payment_created`.

    The webhook of an earlier partial payment, read before this one was in QBO, may
    have moved the CRM back to partially paid meanwhile (found by the replicas'
    30-minute run: partially_paid in syncd, paid in QBO). A move to the status the
    invoice already has is none.
    """
    if moved := qbo_events.view_changed(before, ctx.invoice.qbo_status):
        ctx.seen.append(moved)


async def balance_from_qbo(ctx: JobContext) -> None:
    """The invoice's balance and QBO view as QBO has them now (one read)."""
    inv = ctx.invoice
    current = await ctx.client.read("Invoice", str(inv.qbo_id))
    apply_answer(inv, current, ctx.now)
    inv.qbo_sync_token = None  # a change of someone else's may hide in it


async def balance_after_own_write(ctx: JobContext, expected: Decimal) -> None:
    """The invoice read after syncd's own payment write, its SyncToken kept.

    Kept, a webhook's older read is known as older (with none kept, a read taken before
    syncd removed its payment moved the CRM back to paid: the long chaos run). A balance
    other than the one syncd's write leaves means someone changed it too: a QBO event.
    """
    inv = ctx.invoice
    current = await ctx.client.read("Invoice", str(inv.qbo_id))
    if mapping.money(current.get("Balance") or "0") != expected and (
        seen := qbo_events.classify(inv, current, ctx.now)
    ):
        ctx.seen.append(seen)
    apply_answer(inv, current, ctx.now)


def _apply_to_invoice(ctx: JobContext, amount: Decimal) -> None:
    """No read after write: the invoice's balance is known from the payment applied."""
    inv = ctx.invoice
    balance = mapping.money(inv.balance or "0") - amount
    inv.balance = str(balance)
    total = mapping.money(inv.data.get("total") or str(balance + amount))
    inv.qbo_status = qbo_status({"TotalAmt": total, "Balance": balance}, ctx.now.date())
    # QBO bumped it when the payment moved the balance: at least one more than known
    inv.qbo_sync_token = qbo_events.moved_by_one(inv.qbo_sync_token)
    inv.sync_state, inv.error = SyncState.SYNCED, None


async def push_receipt(ctx: JobContext) -> None:
    """A QBO Sales Receipt for a payment with no invoice (order form, subscription…)."""
    pay, tenant = ctx.job.payload, ctx.job.tenant
    # HL3/HL4: a payment's customer is matched (or created) by e-mail
    by_email = dataclasses.replace(
        ctx.rules, customers=dataclasses.replace(ctx.rules.customers, match="email")
    )
    customer_id = await resolve.customer(
        ctx.client, ctx.store, tenant, by_email, pay["customer"], ctx.changes
    )
    marker = payment_marker(tenant, pay["payment_id"])
    record = await _still_wanted(ctx, MoneyKind.RECEIPT)
    if record is None:
        return
    if ctx.unclear and (
        found := await already_written(ctx, "SalesReceipt", customer_id, marker)
    ):
        _written(ctx, record, found)
        return
    item_name = str(pay["kind"]).replace("_", " ").capitalize()
    items = await resolve.items(
        ctx.client,
        ctx.store,
        tenant,
        ctx.rules,
        [item_name],
        ctx.changes,
        ctx.connection.preferences.get("accounts", {}),
    )
    amount = mapping.money(pay["amount"])
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id},
        "TxnDate": pay["date"],
        "PaymentRefNum": str(pay["payment_id"])[:21],
        "PrivateNote": marker,
        "CurrencyRef": {"value": pay["currency"]},
        "DepositToAccountRef": {"value": await _account(ctx, ctx.rules)},
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": amount,
                "Description": f"{item_name} {pay['payment_id']}",
                "SalesItemLineDetail": {"ItemRef": {"value": items[item_name]}},
            }
        ],
    }
    written = await ctx.client.create(
        "SalesReceipt", body, resolve.request_id(tenant, "receipt", pay["payment_id"])
    )
    _written(ctx, record, written)


async def already_written(
    ctx: JobContext, entity: str, customer_id: str, marker: str
) -> dict[str, Any] | None:
    """The transaction an earlier try wrote, found by the marker in its memo."""
    rows = await ctx.client.query_all(
        queries.of_customer(entity, customer_id),
        entity,
    )
    return next((found for found in rows if found.get("PrivateNote") == marker), None)


async def _still_wanted(ctx: JobContext, kind: MoneyKind) -> PaymentRecord | None:
    """The payment's record, or None when the CRM deleted it before it was written.

    Its delete waits behind it in the same queue; a push failed and retried by the
    admin after that delete must not bring it back.
    """
    pid = str(ctx.job.payload["payment_id"])
    found = await ctx.store.payment_records(ctx.job.tenant, (kind,), [pid])
    if found and found[0].state != MoneyState.RECORDED:
        ctx.note = f"payment {pid} was deleted in the CRM before it reached QBO"
        return None
    return found[0] if found else _unrecorded(ctx, kind, pid)


def _unrecorded(ctx: JobContext, kind: MoneyKind, pid: str) -> PaymentRecord:
    """A payment queued before payments had records (a store from before issue 26)."""
    return PaymentRecord(
        tenant=ctx.job.tenant,
        kind=kind,
        payment_id=pid,
        invoice_id=ctx.job.invoice_id or "",
        amount=mapping.money(ctx.job.payload["amount"]),
        at=ctx.now,
    )


def _written(ctx: JobContext, record: PaymentRecord, written: dict[str, Any]) -> None:
    """Remember the QBO copy, so that a delete on either side finds the other."""
    ctx.changes.payments.append(
        dataclasses.replace(
            record,
            qbo_id=str(written["Id"]),
            qbo_invoice_id=ctx.invoice.qbo_id if record.invoice_id else None,
            at=ctx.now,
        )
    )


async def deposit_account(ctx: JobContext) -> str:
    """The rules' deposit account's Id (RO4)."""
    return await _account(ctx, ctx.rules)


async def _account(ctx: JobContext, rules: Rules) -> str:
    """The deposit account (RO4), by name or Id."""
    wanted = rules.payments.deposit_account
    return await resolve.account_id(
        ctx.client, ctx.connection.preferences.get("accounts", {}), wanted
    )


async def push_customer(ctx: JobContext) -> None:
    """PD5: push a linked customer's changed e-mail, address and tax id to QBO."""
    contact, tenant = ctx.job.payload, ctx.job.tenant
    qbo_id = await ctx.store.link(tenant, LinkKind.CUSTOMER, str(contact["contact_id"]))
    if qbo_id is None:
        return  # not linked yet: the first invoice's sync will create or match it
    current = await ctx.client.read("Customer", qbo_id)
    wanted: dict[str, Any] = {}
    if contact.get("email"):
        wanted["PrimaryEmailAddr"] = {"Address": contact["email"]}
    if contact.get("tax_id"):
        wanted["PrimaryTaxIdentifier"] = contact["tax_id"]
    address = contact.get("address") or {}
    if address:
        wanted["BillAddr"] = {
            k: v
            for k, v in {
                "Line1": address.get("line1"),
                "City": address.get("city"),
                "PostalCode": address.get("postal_code"),
                "Country": address.get("country"),
            }.items()
            if v
        }
    changed = {k: v for k, v in wanted.items() if _differs(current.get(k), v)}
    if not changed:
        return
    body = {"Id": qbo_id, "SyncToken": current["SyncToken"], "sparse": True, **changed}
    await ctx.client.update(
        "Customer",
        body,
        resolve.request_id(
            tenant, "contact", str(contact["contact_id"]), str(current["SyncToken"])
        ),
    )


def _differs(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict) and isinstance(current, dict):
        return any(current.get(k) != v for k, v in wanted.items())
    return bool(current != wanted)
