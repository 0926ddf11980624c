"""QBO job handlers for invoices: push (create or sparse update), send, void, delete.

No duplicates, provably (HS11, OD5): a create carries a requestid stable for the
invoice, and a job whose outcome is unclear (it was in flight when syncd stopped) first
looks for its own earlier write in QBO by the marker syncd leaves in PrivateNote.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import structlog

from syncd.engine import qbo_events
from syncd.engine.qbo_events import exact_token, qbo_status
from syncd.exceptions import QboStaleError
from syncd.models import ChangeSet, Connection, Invoice, Job, SyncState
from syncd.outbound import mapping, resolve
from syncd.qbo import QboClient, queries
from syncd.rules.model import Rules
from syncd.store import References

log = structlog.get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class JobContext:
    """Everything one job runs with; handlers fill `changes`."""

    job: Job
    invoice: Invoice
    client: QboClient
    connection: Connection
    rules: Rules
    store: References
    now: datetime
    unclear: bool  # the job was in flight before: its write may have happened
    changes: ChangeSet
    # said to the CRM when nothing failed but something is worth saying
    note: str | None = None
    # (code, message): the write happened but is wrong; the invoice is marked failed
    problem: tuple[str, str] | None = None
    # why `[sync] since` / `[sync.filters]` keep the invoice out of QBO
    skipped: str | None = None
    # QBO events the job saw (`[qbo_events]` keys): a change someone made under its
    # write, or what the write itself did to the balance; they move the CRM status
    seen: list[str] = field(default_factory=list)
    # customers and items settled ahead with the rest of a batch
    known: resolve.Known | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """Write a new QBO invoice; the requestid is stable for the CRM invoice."""

    body: dict[str, Any]
    request_id: str


@dataclass(frozen=True, slots=True)
class Update:
    """Write only the fields that changed since the last body written (sparse)."""

    changed: dict[str, Any]


def plan_write(
    tenant: str, inv: Invoice, body: dict[str, Any], unclear: bool = False
) -> Create | Update | None:
    """What to write for `body` (OD4, OD5): create, a sparse update, or nothing.

    `unclear`: an earlier try of this job may have written without its answer being
    kept (a crash, or a replica whose lease was taken over): what QBO holds is unknown,
    so every field is written, never only those that differ from the last body kept.
    """
    if inv.qbo_id is None:
        return Create(body, resolve.request_id(tenant, inv.invoice_id, "create"))
    changed = mapping.changed_fields(body, None if unclear else inv.pushed_body)
    return Update(changed) if changed else None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A push decided: what to write, the whole body it comes from, QBO's view before."""

    plan: Create | Update
    body: dict[str, Any]
    before: str | None


async def push_invoice(ctx: JobContext) -> None:
    """Create the QBO invoice, or update it with only what changed (OD4, OD5, HL5).

    Resolve what the body names (customer, items, accounts, rate), build the body
    purely, write, then record QBO's answer.
    """
    prepared = await prepare_push(ctx)
    if prepared is not None:
        await write_alone(ctx, prepared)


async def write_alone(ctx: JobContext, prepared: Prepared) -> None:
    """A prepared push written as a request of its own, and QBO's answer taken."""
    if isinstance(prepared.plan, Create):
        plan = prepared.plan
        answer = await ctx.client.create("Invoice", plan.body, plan.request_id)
        finish_push(ctx, prepared, answer)
    else:
        await update_alone(ctx, prepared)


async def prepare_push(ctx: JobContext) -> Prepared | None:
    """Everything before the write: None when nothing is to be written."""
    inv, tenant = ctx.invoice, ctx.job.tenant
    if inv.qbo_id is not None and inv.qbo_status in ("voided", "deleted"):
        # final in QBO (PD7): a push queued before QBO's void or delete was seen must not
        # write over it (the sandbox, as QBO's UI, would bring a voided invoice's amounts
        # back: issue 27's CI chaos run, a CRM edit's push after a bookkeeper's void)
        ctx.note = f"not updated: the invoice is {inv.qbo_status} in QBO"
        return None
    reason = ineligible(inv, ctx.rules, ctx.connection) if inv.qbo_id is None else None
    if reason:
        ctx.skipped = reason  # filters decide what enters QBO, not what stays current
        return None
    resolved = await _resolve(ctx)
    body = mapping.invoice_body(tenant, inv.data, ctx.rules, resolved)
    if inv.qbo_id is None and ctx.unclear:
        await _adopt_earlier_write(ctx, resolved.customer_id)
    plan = plan_write(tenant, inv, body, ctx.unclear)
    # a payment syncd wrote (or removed) moved it, and its SyncToken with it: read it,
    # or the update goes out without a true one (QBO 2020: found by the long chaos run)
    stale = isinstance(plan, Update) and exact_token(inv.qbo_sync_token) is None
    if stale and not await current_token(ctx):
        return None
    if plan is None:
        # an unchanged snapshot makes no call: QBO holds this very body, so a push that
        # was waiting is done (a snapshot that only moved the status, e.g. to `paid`,
        # left it `pending` for good: found by the three-replica 30-minute run); a
        # failure stays said
        if inv.sync_state is SyncState.PENDING:
            inv.sync_state, inv.error = SyncState.SYNCED, None
            inv.last_synced_at = ctx.now
        return None
    return Prepared(plan, body, inv.qbo_status)


async def resolve_ahead(contexts: list[JobContext]) -> None:
    """The new customers and items of a batch's pushes, settled together.

    Only invoices that will be written count: one the filters keep out of QBO must not
    bring its customer in.
    """
    if not contexts:
        return
    first = contexts[0]
    wanted = [c.invoice.data for c in contexts if _will_write(c)]
    try:
        known = await resolve.ahead(
            first.client,
            first.store,
            first.job.tenant,
            first.rules,
            wanted,
            first.connection.preferences.get("accounts", {}),
        )
    except Exception:  # a shortcut only: each push resolves on its own
        log.exception("resolve_ahead_failed", invoices=len(wanted))
        return
    for ctx in contexts:
        ctx.known = known


def _will_write(ctx: JobContext) -> bool:
    """Whether a batch's push will reach QBO; one that cannot tell fails on its own."""
    try:
        return (
            ctx.invoice.qbo_id is not None
            or ineligible(ctx.invoice, ctx.rules, ctx.connection) is None
        )
    except Exception:  # noqa: BLE001 -- its own job meets the same fault and records it
        return False


def batch_body(inv: Invoice, prepared: Prepared) -> tuple[str, dict[str, Any]]:
    """The operation and body of this push as one item of a batch request."""
    plan = prepared.plan
    if isinstance(plan, Create):
        return "create", plan.body
    key = {"Id": inv.qbo_id, "SyncToken": inv.qbo_sync_token, "sparse": True}
    return "update", {**key, **plan.changed}


async def update_alone(ctx: JobContext, prepared: Prepared) -> None:
    """The sparse update as a single request (a stale SyncToken read and written again)."""
    assert isinstance(prepared.plan, Update)  # noqa: S101 -- callers pass updates only
    updated = await _sparse_update(ctx, prepared.plan.changed)
    if updated is not None:
        answer, before = updated
        finish_push(ctx, dataclasses.replace(prepared, before=before), answer)


def finish_push(ctx: JobContext, prepared: Prepared, answer: dict[str, Any]) -> None:
    """QBO's answer to the write recorded; a move it made to QBO's view is seen."""
    inv = ctx.invoice
    ctx.problem = record(inv, answer, prepared.body, ctx.now)
    if isinstance(prepared.plan, Update) and (
        moved := qbo_events.view_changed(prepared.before, inv.qbo_status)
    ):
        ctx.seen.append(moved)


async def _resolve(ctx: JobContext) -> mapping.Resolved:
    """The QBO ids the invoice names, found or made (as the rules say)."""
    tenant, prefs, changes = ctx.job.tenant, ctx.connection.preferences, ctx.changes
    client, store, rules = ctx.client, ctx.store, ctx.rules
    crm_customer = ctx.invoice.data.get("customer") or {}
    names = mapping.item_names(ctx.invoice.data)
    return mapping.Resolved(
        customer_id=await resolve.customer(
            client, store, tenant, rules, crm_customer, changes, ctx.known
        ),
        items=await resolve.items(
            client,
            store,
            tenant,
            rules,
            names,
            changes,
            prefs.get("accounts", {}),
            ctx.known,
        ),
        custom_fields=prefs.get("custom_fields", {}),
        tax_codes=prefs.get("tax_codes", {}),
        automated_tax=bool(prefs.get("automated_sales_tax")),
        exchange_rate=await _exchange_rate(ctx),
    )


_RATES: dict[tuple[str, str, str], Decimal] = {}  # (realm, currency, day) → QBO's rate


async def _exchange_rate(ctx: JobContext) -> Decimal | None:
    """A foreign-currency invoice's rate (qbo.md §10: without one QBO books it at 1).

    The CRM's `exchange_rate` when it gives one, else QBO's own for the issue date, read
    once per company, currency and day.
    """
    data, prefs = ctx.invoice.data, ctx.connection.preferences
    currency = data.get("currency")
    if not currency or currency == prefs.get("home_currency", "USD"):
        return None
    if data.get("exchange_rate"):
        return Decimal(str(data["exchange_rate"]))
    if not prefs.get("multicurrency"):
        return None  # QBO refuses the currency itself, with its own clear fault
    day = data.get("issue_date") or ctx.now.date().isoformat()
    key = (ctx.connection.realm_id, str(currency), str(day))
    if key not in _RATES:
        _RATES[key] = await ctx.client.exchange_rate(str(currency), str(day))
    return _RATES[key]


async def _adopt_earlier_write(ctx: JobContext, customer_id: str) -> None:
    """After an unclear outcome, find the invoice this job may already have created."""
    marker = mapping.marker(ctx.job.tenant, ctx.invoice.invoice_id)
    rows = await ctx.client.query_all(
        queries.of_customer("Invoice", customer_id),
        "Invoice",
    )  # every page: a customer with more than 1,000 invoices must not hide ours
    for found in rows:
        if found.get("PrivateNote") == marker:
            ctx.invoice.qbo_id = str(found["Id"])
            ctx.invoice.qbo_sync_token = str(found["SyncToken"])
            return


async def _sparse_update(
    ctx: JobContext, diff: dict[str, Any]
) -> tuple[dict[str, Any], str | None] | None:
    """QBO's answer and its view just before the write; None when not written."""
    inv = ctx.invoice
    for attempt in range(2):
        before = inv.qbo_status
        body = {
            "Id": inv.qbo_id,
            "SyncToken": inv.qbo_sync_token,
            "sparse": True,
            **diff,
        }
        rid = resolve.request_id(
            ctx.job.tenant, inv.invoice_id, "update", str(inv.version), str(attempt)
        )
        try:
            return await ctx.client.update("Invoice", body, rid), before
        except QboStaleError:
            if attempt:
                raise
            # someone changed it in QBO since our last write: what they did is a QBO
            # event of its own (a payment, a void), then ours goes on top
            if not await current_token(ctx):
                return None
    raise AssertionError("unreachable")  # pragma: no cover


async def current_token(ctx: JobContext) -> bool:
    """QBO's invoice read for its SyncToken: False when it was voided meanwhile.

    What changed since syncd's last write is a QBO event of its own (seen).
    """
    inv = ctx.invoice
    current = await ctx.client.read("Invoice", str(inv.qbo_id))
    if (seen := qbo_events.classify(inv, current, ctx.now)) is not None:
        ctx.seen.append(seen)
    apply_answer(inv, current, ctx.now)
    if inv.qbo_status == "voided":
        ctx.note = "not updated: the invoice was voided in QBO meanwhile"
        return False
    return True


def record(
    inv: Invoice, answer: dict[str, Any], body: dict[str, Any], now: datetime
) -> tuple[str, str] | None:
    """Keep Id/SyncToken from the write's answer (no read after write), check totals.

    Returns (code, message) when QBO's books differ from the CRM's (HL6), else None.
    """
    apply_answer(inv, answer, now)
    inv.pushed_body = mapping.canonical(body)
    crm_total, qbo_total = inv.data.get("total"), Decimal(str(answer.get("TotalAmt")))
    if crm_total is None or mapping.money(crm_total) == qbo_total:
        return None
    # never silently different books: both figures, and what to look at
    return (
        "total_mismatch",
        f"QBO computed a total of {qbo_total} but the CRM total is {crm_total}: "
        "check the tax codes and discounts mapped for this invoice",
    )


def apply_answer(inv: Invoice, answer: dict[str, Any], now: datetime) -> None:
    """QBO's answer onto the invoice: ids, doc number, QBO status, balance."""
    inv.qbo_id = str(answer["Id"])
    inv.qbo_sync_token = str(answer["SyncToken"])
    inv.qbo_doc_number = answer.get("DocNumber")
    inv.balance = (
        str(answer.get("Balance")) if answer.get("Balance") is not None else None
    )
    inv.qbo_status = qbo_status(answer, now.date())
    inv.sync_state, inv.error, inv.last_synced_at = SyncState.SYNCED, None, now


def ineligible(inv: Invoice, rules: Rules, conn: Connection) -> str | None:
    """Why the filters keep this invoice out of QBO (HS1, HL8), or None."""
    sync, data = rules.sync, inv.data
    total = data.get("total")
    if (
        sync.min_total is not None
        and total is not None
        and mapping.money(total) < sync.min_total
    ):
        return f"not synced: total {total} is below [sync.filters] min_total {sync.min_total}"
    if (
        sync.currencies
        and data.get("currency")
        and data["currency"] not in sync.currencies
    ):
        return f"not synced: currency {data['currency']} is not in [sync.filters] currencies"
    if sync.since == "all" or data.get("backfill") is True:
        return None  # a backfill hands over what came before `since` on purpose
    created, told = _created(inv)
    if sync.since == "connection":
        since = conn.since or conn.connected_at
        if created < since:
            return (
                f"not synced: {told} {_moment(created)}, before the QBO connection "
                f'({_moment(since)}; [sync] since = "connection")'
            )
    elif created.date() < date.fromisoformat(sync.since):
        return (
            f"not synced: {told} {_moment(created)}, before [sync] since ({sync.since})"
        )
    return None


def _created(inv: Invoice) -> tuple[datetime, str]:
    """When the invoice was created (HL8): the CRM's `created_at`, else first heard of."""
    given = inv.data.get("created_at")
    if isinstance(given, str) and given:
        moment = datetime.fromisoformat(given)
        if moment.tzinfo is None:  # a plain date: its start, in UTC
            moment = moment.replace(tzinfo=UTC)
        return moment, "created"
    return inv.first_seen_at or inv.updated_at, "first heard of"


def _moment(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def send_invoice(ctx: JobContext) -> None:
    """Have QBO e-mail the invoice (OD6); without a billing e-mail, copy only (OD9)."""
    inv = ctx.invoice
    email = (inv.data.get("customer") or {}).get("billing_email")
    if inv.qbo_id is None:
        ctx.note = (
            "not e-mailed: the invoice is not in QBO (not eligible, or its copy failed)"
        )
        return
    if not email:
        ctx.note = "copied to QBO but not e-mailed: the CRM invoice has no billing e-mail (OD9)"
        return
    sent = await ctx.client.send("Invoice", inv.qbo_id, email)
    adopt_send(inv, sent, ctx.now)


def adopt_send(inv: Invoice, sent: dict[str, Any], now: datetime) -> None:
    """Take the send's answer as syncd's own view only if the send alone changed it.

    The send names no SyncToken, so QBO e-mails whatever the invoice is by then. When
    someone changed it in between (a void, a payment: SyncToken moved by more than the
    send's one), the answer is not adopted: syncd's last view stays, and that change is
    classified when its webhook or the reconciliation brings it (RO6).
    """
    known = inv.qbo_sync_token
    if (
        known is not None
        and known.isdigit()
        and str(int(known) + 1) == str(sent.get("SyncToken"))
    ):
        apply_answer(inv, sent, now)
    else:
        inv.sync_state, inv.error, inv.last_synced_at = SyncState.SYNCED, None, now


async def _token(ctx: JobContext) -> str:
    """The invoice's SyncToken, read from QBO when syncd no longer knows it."""
    inv = ctx.invoice
    if (token := exact_token(inv.qbo_sync_token)) is None:
        current = await ctx.client.read("Invoice", str(inv.qbo_id))
        return str(current["SyncToken"])
    return token


async def void_invoice(ctx: JobContext) -> None:
    """Void the QBO invoice (final, PD7)."""
    inv = ctx.invoice
    if inv.qbo_id is None:
        return
    if inv.qbo_status == "voided":  # QBO's view says it is (its webhook came first)
        inv.sync_state, inv.error, inv.last_synced_at = SyncState.SYNCED, None, ctx.now
        return
    key = {"Id": inv.qbo_id, "SyncToken": await _token(ctx)}
    voided = await ctx.client.void(
        "Invoice", key, resolve.request_id(ctx.job.tenant, inv.invoice_id, "void")
    )
    apply_answer(inv, voided, ctx.now)


async def delete_invoice(ctx: JobContext) -> None:
    """Delete the QBO invoice (PD7); the link is forgotten with it."""
    inv = ctx.invoice
    if inv.qbo_id is None:
        return
    key = {"Id": inv.qbo_id, "SyncToken": await _token(ctx)}
    await ctx.client.delete(
        "Invoice", key, resolve.request_id(ctx.job.tenant, inv.invoice_id, "delete")
    )
    inv.qbo_status, inv.sync_state, inv.last_synced_at = (
        "deleted",
        SyncState.SYNCED,
        ctx.now,
    )
