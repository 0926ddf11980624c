"""The QBO side of a CRM credit note (issue 26): a CreditMemo kept like an invoice.

`open`: copied (created once: requestid, intent ledger, a look-up of its marker after an
unclear outcome), later only the fields that changed (no call when none did), and
applied to its invoice through a $0 Payment linking both (qbo.md §11.2). `voided`:
removed, the link payment first (QBO's API cannot void a credit memo, §11.1). Its own
queue: an invoice not in QBO yet makes it wait, and its failures are its own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from syncd.exceptions import QboNotFoundError, QboStaleError, QboTransientError
from syncd.messages import CreditNoteState
from syncd.models import CreditNote, Invoice, SyncState
from syncd.outbound import mapping, resolve
from syncd.outbound.payments import (
    already_written,
    balance_after_own_write,
    see_settled,
)
from syncd.outbound.push import JobContext
from syncd.qbo.steps import Step, next_step

log = structlog.get_logger(__name__)


async def push_credit_note(ctx: JobContext) -> None:
    """Bring the credit note's QBO side to what the CRM says now."""
    tenant, note_id = ctx.job.tenant, ctx.job.subject
    note = (await ctx.store.credit_notes(tenant, [note_id])).get(note_id)
    if note is None:
        ctx.note = f"credit note {note_id} is not kept any more"
        return
    try:
        await _bring(ctx, note)
    except Exception as exc:
        # the job's failure shows on the credit note too (its retained state)
        then = next_step(exc)
        if then.step is not Step.STORE:
            gave_up = then.step in (Step.FAIL, Step.DEFECT)
            note.sync_state = SyncState.FAILED if gave_up else SyncState.PENDING
            note.error = then.message if gave_up else f"retrying: {then.message}"
            ctx.changes.credit_notes_synced.append(note)
            ctx.changes.outbox.append(CreditNoteState.of(note, ctx.now))
        raise
    if ctx.problem is not None:  # written, but QBO's books differ (HL6)
        note.sync_state, note.error = SyncState.FAILED, ctx.problem[1]
    elif note.qbo_id is not None or note.qbo_status == "deleted":
        note.sync_state, note.error, note.last_synced_at = (
            SyncState.SYNCED,
            None,
            ctx.now,
        )
    ctx.changes.credit_notes_synced.append(note)
    ctx.changes.outbox.append(CreditNoteState.of(note, ctx.now))


async def _bring(ctx: JobContext, note: CreditNote) -> None:
    tenant = ctx.job.tenant
    if note.invoice_id and ctx.job.invoice_id == note.invoice_id:
        invoice: Invoice | None = ctx.invoice  # its queue's: what it does to it is kept
    elif note.invoice_id:  # queued on its own by an earlier syncd
        invoice = await ctx.store.invoice(tenant, note.invoice_id)
    else:
        invoice = None
    if note.status == "voided":
        await _remove(ctx, note, invoice)
    elif note.status == "open":
        if invoice is not None and invoice.qbo_id is None:
            raise QboTransientError(f"invoice {invoice.invoice_id} is not in QBO yet")
        customer_id = await _customer(ctx, note, invoice)
        await _copy(ctx, note, customer_id)
        if invoice is not None and note.applied_payment is None:
            await _apply(ctx, note, invoice, customer_id)


async def _customer(ctx: JobContext, note: CreditNote, invoice: Invoice | None) -> str:
    """The invoice's QBO customer when the note names one, else matched or made."""
    pushed = (invoice.pushed_body if invoice is not None else None) or {}
    if pushed.get("CustomerRef"):
        return str(pushed["CustomerRef"]["value"])
    return await resolve.customer(
        ctx.client,
        ctx.store,
        ctx.job.tenant,
        ctx.rules,
        note.data.get("customer") or {},
        ctx.changes,
    )


async def _copy(ctx: JobContext, note: CreditNote, customer_id: str) -> None:
    tenant, prefs = ctx.job.tenant, ctx.connection.preferences
    items = await resolve.items(
        ctx.client,
        ctx.store,
        tenant,
        ctx.rules,
        mapping.item_names(note.data),
        ctx.changes,
        prefs.get("accounts", {}),
    )
    resolved = mapping.Resolved(
        customer_id=customer_id,
        items=items,
        tax_codes=prefs.get("tax_codes", {}),
        automated_tax=bool(prefs.get("automated_sales_tax")),
    )
    body = mapping.credit_memo_body(tenant, note.data, ctx.rules, resolved)
    if note.qbo_id is None:
        # an earlier job of this note may have written it, its answer lost (it was in
        # doubt, then the note changed): look for its marker before writing
        answer = await already_written(
            ctx, "CreditMemo", customer_id, body["PrivateNote"]
        )
        if not answer:
            rid = resolve.request_id(tenant, "credit_note", note.credit_note_id)
            answer = await ctx.client.create("CreditMemo", body, rid)
    else:
        diff = mapping.changed_fields(body, note.pushed_body)
        if not diff:
            return  # unchanged: no call
        answer = await _update(ctx, note, diff)
    _take(ctx, note, answer, body)


async def _update(
    ctx: JobContext, note: CreditNote, diff: dict[str, Any]
) -> dict[str, Any]:
    """A sparse update; its SyncToken read again when QBO moved it (an application)."""
    for attempt in range(2):
        if note.qbo_sync_token is None:
            current = await ctx.client.read("CreditMemo", str(note.qbo_id))
            note.qbo_sync_token = str(current["SyncToken"])
        body = {"Id": note.qbo_id, "SyncToken": note.qbo_sync_token, "sparse": True}
        rid = resolve.request_id(
            ctx.job.tenant,
            "credit_note",
            note.credit_note_id,
            str(note.version),
            str(attempt),
        )
        try:
            return await ctx.client.update("CreditMemo", body | diff, rid)
        except QboStaleError:
            if attempt:
                raise
            note.qbo_sync_token = None
    raise AssertionError("unreachable")  # pragma: no cover


def _take(
    ctx: JobContext, note: CreditNote, answer: dict[str, Any], body: dict[str, Any]
) -> None:
    note.qbo_id, note.qbo_sync_token = str(answer["Id"]), str(answer["SyncToken"])
    note.qbo_doc_number = answer.get("DocNumber")
    left, total = Decimal(str(answer.get("RemainingCredit"))), answer.get("TotalAmt")
    note.remaining_credit = str(left)
    note.qbo_status = "applied" if left < Decimal(str(total)) else "open"
    note.pushed_body = mapping.canonical(body)
    crm_total = note.data.get("total")
    if crm_total is not None and mapping.money(crm_total) != Decimal(str(total)):
        ctx.problem = (
            "total_mismatch",
            f"QBO computed a credit memo total of {total} but the CRM total is "
            f"{crm_total}: check the tax codes mapped for this credit note",
        )


async def _apply(
    ctx: JobContext, note: CreditNote, invoice: Invoice, customer_id: str
) -> None:
    """A $0 Payment: the credit note's remaining credit against the invoice's balance."""
    current = await ctx.client.read("Invoice", str(invoice.qbo_id))
    amount = min(Decimal(str(note.remaining_credit)), Decimal(str(current["Balance"])))
    if amount <= 0:
        ctx.note = f"invoice {invoice.invoice_id} has no open balance to apply it to"
        return
    marker = _apply_marker(ctx, note)
    found = await already_written(ctx, "Payment", customer_id, marker)
    if not found:
        body = {
            "CustomerRef": {"value": customer_id},
            "TotalAmt": Decimal(0),
            "PrivateNote": marker,
            "Line": [
                {
                    "Amount": amount,
                    "LinkedTxn": [{"TxnId": invoice.qbo_id, "TxnType": "Invoice"}],
                },
                {
                    "Amount": amount,
                    "LinkedTxn": [{"TxnId": note.qbo_id, "TxnType": "CreditMemo"}],
                },
            ],
        }
        rid = resolve.request_id(ctx.job.tenant, "credit_apply", note.credit_note_id)
        found = await ctx.client.create("Payment", body, rid)
    note.applied_payment = str(found["Id"])
    note.remaining_credit = str(Decimal(str(note.remaining_credit)) - amount)
    note.qbo_status = "applied"
    note.qbo_sync_token = None  # QBO moved the memo when it applied its credit
    log.info("credit_applied", credit_note=note.credit_note_id, amount=str(amount))
    if invoice is ctx.invoice:
        # its balance as QBO has it now, its SyncToken kept (older reads known as older)
        before = invoice.qbo_status
        await balance_after_own_write(ctx, mapping.money(current["Balance"]) - amount)
        see_settled(ctx, before)


def _apply_marker(ctx: JobContext, note: CreditNote) -> str:
    return f"syncd:{ctx.job.tenant}:credit_apply:{note.credit_note_id}"


async def _remove(ctx: JobContext, note: CreditNote, invoice: Invoice | None) -> None:
    """Voided in the CRM: the link payment, then the memo, deleted (each at most once).

    What an earlier job may have written with its answer lost (the chaos run found a
    memo left in QBO: its create timed out, then the note was voided) is looked for by
    its marker first.
    """
    tenant = ctx.job.tenant
    applied = (
        mapping.money(note.data.get("total") or "0")
        - mapping.money(note.remaining_credit or note.data.get("total") or "0")
        if note.applied_payment is not None
        else Decimal(0)
    )
    if note.qbo_id is None or note.applied_payment is None:
        customer_id = await _customer(ctx, note, invoice)
        if note.qbo_id is None:
            memo = f"syncd:{tenant}:credit_note:{note.credit_note_id}"
            found = await already_written(ctx, "CreditMemo", customer_id, memo)
            note.qbo_id = str(found["Id"]) if found else None
        if note.qbo_id is not None and note.applied_payment is None:
            marker = _apply_marker(ctx, note)
            link = await already_written(ctx, "Payment", customer_id, marker)
            note.applied_payment = str(link["Id"]) if link else None
    if note.applied_payment is not None:
        await _delete(ctx, "Payment", note.applied_payment, "credit_unapply", note)
        note.applied_payment = None
        if invoice is ctx.invoice and invoice.qbo_id is not None:
            known = mapping.money(invoice.balance or "0")
            await balance_after_own_write(ctx, known + applied)
    if note.qbo_id is not None:
        await _delete(ctx, "CreditMemo", note.qbo_id, "credit_note_delete", note)
    note.qbo_status, note.remaining_credit, note.qbo_sync_token = "deleted", "0", None
    log.info("credit_note_removed", credit_note=note.credit_note_id, tenant=tenant)


async def _delete(
    ctx: JobContext, entity: str, qbo_id: str, what: str, note: CreditNote
) -> None:
    try:
        current = await ctx.client.read(entity, qbo_id)
    except QboNotFoundError:
        return  # gone already (an earlier try, or a person in QBO)
    key = {"Id": qbo_id, "SyncToken": str(current["SyncToken"])}
    rid = resolve.request_id(ctx.job.tenant, what, note.credit_note_id)
    await ctx.client.delete(entity, key, rid)
