"""The admin API (contract: HTTP): invoices, the QBO PDF, failures and their retry.

Invoices come with their transition history; failures are the failed-syncs panel (HS2);
the PDF is QBO's own (HS8). Every route needs the admin token (web_oauth.admin_auth).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from syncd.daemon import Daemon
from syncd.exceptions import QboError
from syncd.messages import CreditNoteState, invoice_view
from syncd.models import (
    ChangeSet,
    Failure,
    Invoice,
    MoneyKind,
    PaymentRecord,
)
from syncd.outbound import retry as retrying
from syncd.outbound.retry import NotRetried
from syncd.realms.reads import month_of
from syncd.web import cursor
from syncd.web.keys import DAEMON

PAGE_MAX = 1000  # invoices per answer of GET /api/tenants/T/invoices
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only: "²" and "٣" are str.isdigit()


def routes(app: web.Application) -> None:
    """Add the admin API routes."""
    base = "/api/tenants/{tenant}"
    app.router.add_get(base + "/invoices", list_invoices)
    app.router.add_get(base + "/invoices/{invoice}", get_invoice)
    app.router.add_get(base + "/invoices/{invoice}/pdf", invoice_pdf)
    app.router.add_get(base + "/reads", qbo_reads)
    app.router.add_get(base + "/failures", list_failures)
    app.router.add_post(base + "/failures/{failure}/retry", retry_failure)


def _state(inv: Invoice) -> dict[str, Any]:
    return {**invoice_view(inv), "updated_at": inv.updated_at.isoformat()}


def _failure(f: Failure) -> dict[str, Any]:
    return {
        "id": f.id,
        "invoice_id": f.invoice_id,
        "operation": f.operation,
        "code": f.code,
        "message": f.message,
        "attempts": f.attempts,
        "retryable": f.retryable,
        "at": f.at.isoformat(),
        "resolved_at": f.resolved_at.isoformat() if f.resolved_at else None,
    }


async def qbo_reads(request: web.Request) -> web.Response:
    """QBO reads of the tenant's company by month, beside the app's this month.

    Intuit meters reads per app across every company it serves (qbo.md §10); the
    budget is `[qbo] monthly_reads_budget`. 404 when the tenant never connected.
    """
    daemon = request.app[DAEMON]
    tenant = request.match_info["tenant"]
    conn = await daemon.store.connection(tenant)
    books = await daemon.store.books(tenant)
    realm = conn.realm_id if conn else (books[0] if books else None)
    if realm is None:
        return web.json_response({"error": "never connected to QuickBooks"}, status=404)
    month = month_of(daemon.clock())
    this_month = await daemon.meter.used(month)
    months = {m: n for r, m, n in await daemon.store.reads() if r == realm}
    months[month] = this_month.get(realm, 0)
    total, budget = sum(this_month.values()), daemon.meter.budget
    return web.json_response(
        {
            "realm_id": realm,
            "month": month,
            "reads": months[month],
            "months": [
                {"month": m, "reads": months[m]} for m in sorted(months, reverse=True)
            ],
            "app": {
                "month": month,
                "reads": total,
                "budget": budget,
                "share": round(total / budget, 4) if budget else None,
            },
        }
    )


async def list_invoices(request: web.Request) -> web.Response:
    """Invoices with their sync state, newest change first, a page at a time.

    `?sync_state=failed` for the failed ones; `?limit=` (at most PAGE_MAX); the next
    page's address is in the `Link` header (rel="next"), its `after` an opaque cursor.
    """
    store = request.app[DAEMON].store
    query = request.query
    try:
        limit = _limit(query.get("limit"))
        before = cursor.decode(query["after"]) if "after" in query else None
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    found = await store.invoice_page(
        request.match_info["tenant"],
        limit=limit,
        sync_state=query.get("sync_state") or None,
        before=before,
    )
    response = web.json_response([_state(i) for i in found])
    if len(found) == limit:
        last = found[-1]
        after = cursor.encode(last.updated_at.isoformat(), last.invoice_id)
        following = request.rel_url.update_query(after=after, limit=limit)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


def _limit(value: str | None) -> int:
    if value is None:
        return PAGE_MAX
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= PAGE_MAX:
        raise ValueError(f"limit: a whole number from 1 to {PAGE_MAX}")
    return int(value)


async def get_invoice(request: web.Request) -> web.Response:
    """One invoice: its state and its transition history."""
    store = request.app[DAEMON].store
    tenant, invoice_id = request.match_info["tenant"], request.match_info["invoice"]
    inv = await store.invoice(tenant, invoice_id)
    if inv is None:
        return web.json_response({"error": "no such invoice"}, status=404)
    history = [
        {
            "from": h.from_status,
            "to": h.to_status,
            "cause": h.cause,
            "event_id": h.event_id,
            "at": h.at.isoformat(),
        }
        for h in await store.history(tenant, invoice_id)
    ]
    paid, notes = await store.money_of_invoice(tenant, invoice_id)
    money = {
        "payments": [payment_view(p) for p in paid],
        "credit_notes": [CreditNoteState.of(n, n.updated_at).data for n in notes],
    }
    return web.json_response({**_state(inv), "history": history, **money})


def payment_view(p: PaymentRecord) -> dict[str, Any]:
    """A payment, receipt or refund as the admin API and page show it (issue 26)."""
    return {
        "kind": p.kind.value,
        "payment_id": p.payment_id if p.kind is not MoneyKind.QBO_PAYMENT else None,
        "refunds": p.refunds,
        "amount": str(p.amount),
        "state": p.state.value,
        "qbo_id": p.qbo_id,
        "at": p.at.isoformat(),
    }


async def invoice_pdf(request: web.Request) -> web.StreamResponse:
    """The QBO PDF of a synced invoice, streamed from QBO (HS8, PD7)."""
    daemon = request.app[DAEMON]
    tenant, invoice_id = request.match_info["tenant"], request.match_info["invoice"]
    inv = await daemon.store.invoice(tenant, invoice_id)
    client = await daemon.connections.client(tenant)
    if inv is None or inv.qbo_id is None:
        return web.json_response({"error": "the invoice is not in QBO"}, status=404)
    if client is None:
        return web.json_response(
            {"error": "the tenant is not connected to QBO"}, status=409
        )
    try:
        pdf = await client.pdf("Invoice", inv.qbo_id)
    except QboError as exc:
        return web.json_response({"error": exc.message}, status=502)
    name = pdf_filename(inv.qbo_doc_number or inv.qbo_id)
    headers = {"Content-Disposition": f'inline; filename="{name}"'}
    return web.Response(body=pdf, content_type="application/pdf", headers=headers)


def pdf_filename(number: str) -> str:
    """`invoice-<number>.pdf`, keeping only [A-Za-z0-9._-] of the number.

    The number is the CRM's: a quote or CR/LF in it broke the header, or added
    parameters to it.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", number)[:64].strip(".") or "copy"
    return f"invoice-{safe}.pdf"


async def list_failures(request: web.Request) -> web.Response:
    """The failed-syncs panel (HS2): every failure, unresolved ones first."""
    found = await request.app[DAEMON].store.failures(request.match_info["tenant"])
    found.sort(key=lambda f: (f.resolved_at is not None, -(f.id or 0)))
    return web.json_response([_failure(f) for f in found])


async def open_failure(daemon: Daemon, tenant: str, wanted: str) -> Failure:
    """The tenant's open failure whose id is `wanted`, or NotRetried (404)."""
    for failure in await daemon.store.failures(tenant):
        if str(failure.id) == wanted and failure.resolved_at is None:
            return failure
    raise NotRetried(404, "no such failure")


async def retry(daemon: Daemon, failure: Failure) -> None:
    """Queue the failed job again and mark the failure handled (outbound/retry.py)."""
    await retrying.retry(
        daemon.store,
        failure,
        now=daemon.clock(),
    )
    daemon.jobs.wake()
    daemon.publisher.wake()


async def dismiss(daemon: Daemon, failure: Failure) -> None:
    """Mark a failure handled without retrying it (the admin dealt with it elsewhere)."""
    if failure.id is None:
        raise NotRetried(404, "no such failure")
    await daemon.store.commit(
        ChangeSet(resolved=[(failure.tenant, failure.id, daemon.clock())])
    )


async def retry_failure(request: web.Request) -> web.Response:
    """Queue the failed operation again (after the admin fixed its cause)."""
    daemon = request.app[DAEMON]
    try:
        failure = await open_failure(
            daemon, request.match_info["tenant"], request.match_info["failure"]
        )
        await retry(daemon, failure)
    except NotRetried as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)
    return web.json_response(
        {"queued": failure.operation, "invoice_id": failure.invoice_id}, status=202
    )
