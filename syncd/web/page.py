"""The admin page at `/`: rendered on the server, readable without JavaScript.

Per tenant: the QBO connection (company, since when, when the authorization ends, the
last reconciliation) with Connect / Reconnect / Disconnect; a banner while failures wait
(HS2); the invoices with their sync state, filtered and paged; an invoice's history with
its QBO link and PDF; the failures with Retry (one or all) and Dismiss; the rules' state
machine drawn. Log in once with the admin token; then a session cookie, and a CSRF token
in every form.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web

from syncd.daemon import Daemon
from syncd.drift.compare import CAUSES, GROUP
from syncd.engine import rules_try
from syncd.exceptions import ConfigError, ConnectError, StoreError
from syncd.models import SyncState
from syncd.outbound.retry import NotRetried, can_retry
from syncd.rules.model import Rules, parse_rules
from syncd.rules.tables import parse_toml, shown
from syncd.web import admin, diagram, guard
from syncd.web import drift as drift_api
from syncd.web.keys import DAEMON
from syncd.web.oauth import ADMIN_TOKEN, ATTEMPTS, TRUSTED_PROXIES
from syncd.web.session import Session, Sessions, csrf_ok

PAGE_SIZE = 50
_DIGITS = re.compile(r"[0-9]+")
PAGE_LAST = 2000  # pages offered: the API's cursors reach further
# rules pasted to try: 2,500 statuses make 80 KB; the check runs in a thread, this long
MAX_PASTED_RULES, PASTED_RULES_SECONDS = 256 * 1024, 20.0
SESSIONS = web.AppKey("sessions", Sessions)
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("syncd.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def routes(app: web.Application) -> None:
    """Add the page's routes."""
    app[SESSIONS] = Sessions(app[DAEMON].store)
    r = app.router
    r.add_get("/", home)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/tenants/{tenant}/invoices", invoices)
    r.add_get("/tenants/{tenant}/invoices/{invoice}", invoice)
    r.add_get("/tenants/{tenant}/failures", failures)
    r.add_get("/tenants/{tenant}/drift", drift)
    r.add_post("/tenants/{tenant}/drift/check", check_drift)
    r.add_post("/tenants/{tenant}/failures/retry-all", retry_all)
    r.add_post("/tenants/{tenant}/failures/{failure}/{action}", act_on_failure)
    r.add_get("/tenants/{tenant}/rules", rules)
    r.add_post("/tenants/{tenant}/rules/try", try_rules)
    r.add_post("/tenants/{tenant}/connect", connect)
    r.add_post("/tenants/{tenant}/disconnect", disconnect)


async def session_of(request: web.Request) -> Session | None:
    """The request's admin session (the page's routes and the API accept it)."""
    return await request.app[SESSIONS].of(request, request.app[DAEMON].clock())


def _render(name: str, session: Session | None, **values: Any) -> web.Response:
    html = _TEMPLATES.get_template(name).render(
        logged_in=session is not None,
        csrf=session.csrf if session else "",
        **values,
    )
    headers = {
        "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }
    return web.Response(text=html, content_type="text/html", headers=headers)


async def _required(request: web.Request) -> Session:
    session = await session_of(request)
    if session is None:
        raise web.HTTPSeeOther("/login")
    return session


async def _posted(request: web.Request) -> tuple[Session, dict[str, str]]:
    """A form POST of a logged-in session with the right CSRF token, or 403."""
    session = await session_of(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    if session is None or not csrf_ok(session, form.get("csrf", "")):
        raise web.HTTPForbidden(text="log in again: the form's session has expired")
    return session, form


def _tenant(request: web.Request) -> str:
    tenant = request.match_info["tenant"]
    if request.app[DAEMON].rulebook.machine(tenant) is None:
        raise web.HTTPNotFound(text=f"no tenant {tenant!r}")
    return tenant


async def login_form(request: web.Request) -> web.Response:
    """The log-in form."""
    return _render("login.html", None, error=None)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the admin token (wrong ones slowed down); start a session."""
    form = await request.post()
    right = await request.app[ATTEMPTS].check(
        guard.client_address(request, request.app[TRUSTED_PROXIES]),
        str(form.get("token", "")),
        request.app.get(ADMIN_TOKEN, ""),
        request.app[DAEMON].clock(),
    )
    if not right:
        response = _render("login.html", None, error="That is not the admin token.")
        response.set_status(401)
        return response
    if plain := _plain_http_elsewhere(request.headers.get("Origin", "")):
        # the session cookie is Secure: the browser would drop it and come back here
        response = _render("login.html", None, error=plain)
        response.set_status(400)
        return response
    response = web.HTTPSeeOther("/")
    await request.app[SESSIONS].start(response, request.app[DAEMON].clock())
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session."""
    await _posted(request)
    response = web.HTTPSeeOther("/login")
    await request.app[SESSIONS].end(request, response)
    return response


async def home(request: web.Request) -> web.Response:
    """Every tenant: connection, failures banner, invoice counts."""
    session = await _required(request)
    daemon = request.app[DAEMON]
    try:
        tenants = [await _card(daemon, t) for t in daemon.config.tenants]
    except StoreError:  # said in the banner below: the store's problem
        tenants = []
    return _render(
        "home.html",
        session,
        tenants=tenants,
        store_problem=daemon.store.problem,
        reads_budget=daemon.meter.budget,
    )


async def _card(daemon: Daemon, tenant: str) -> dict[str, Any]:
    conn = await daemon.store.connection(tenant)
    counts = await daemon.store.tenant_counts(tenant)
    expires = daemon.connections.refresh_expiries().get(tenant)
    now = daemon.clock()
    reconciled = daemon.reconciler.passed.get(tenant)
    webhook = conn.last_webhook_at if conn else None  # by whichever replica
    throttled = daemon.connections.throttled.get(conn.realm_id) if conn else None
    reads = (await daemon.meter.used()).get(conn.realm_id, 0) if conn else None
    return {
        "id": tenant,
        "connection": conn,
        "since": _when(conn.since or conn.connected_at) if conn else None,
        "expires": _when(datetime.fromtimestamp(expires, UTC)) if expires else None,
        "days_left": int((expires - now.timestamp()) // 86400) if expires else None,
        "reconciled": _when(reconciled) if reconciled else None,
        "webhook": _when(webhook) if webhook else None,
        "throttled": _when(throttled) if throttled else None,
        "reads": reads,
        "jobs_waiting": counts.jobs_waiting,
        "counts": sorted(counts.sync_states.items()),
        "open_failures": counts.open_failures,
        "drift": await _drift_count(daemon, tenant),
    }


async def _drift_count(daemon: Daemon, tenant: str) -> int | None:
    """Differences the latest drift check found (None: no check yet)."""
    return (await daemon.store.drift_open()).get(tenant)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def invoices(request: web.Request) -> web.Response:
    """A tenant's invoices, filtered by sync state and status, a page at a time."""
    session = await _required(request)
    tenant = _tenant(request)
    daemon = request.app[DAEMON]
    sync_state = request.query.get("sync_state", "")
    status = request.query.get("status", "")
    page = min(max(1, _int(request.query.get("page"), 1)), PAGE_LAST)
    found = await daemon.store.invoice_page(
        tenant,
        limit=PAGE_SIZE + 1,  # one more tells whether an older page exists
        sync_state=sync_state or None,
        status=status or None,
        offset=(page - 1) * PAGE_SIZE,
    )

    def query(number: int) -> str:
        return urlencode({"sync_state": sync_state, "status": status, "page": number})

    machine = daemon.rulebook.machine(tenant)
    return _render(
        "invoices.html",
        session,
        tenant=tenant,
        invoices=found[:PAGE_SIZE],
        page=page,
        older=len(found) > PAGE_SIZE,
        query=query,
        sync_state=sync_state,
        status=status,
        sync_states=[s.value for s in SyncState],
        statuses=list(machine.rules.statuses) if machine else [],
    )


def _plain_http_elsewhere(origin: str) -> str | None:
    """Why a log-in over plain HTTP off this machine cannot work, or None when it can."""
    parts = urlsplit(origin)
    if parts.scheme != "http" or not parts.hostname:
        return None
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return (
        f"The admin page needs HTTPS at {origin}: its session cookie is Secure, so a "
        "browser drops it over plain HTTP anywhere but on this machine (localhost). "
        "Put a TLS reverse proxy in front of syncd (README, 'In a container'), or "
        "open it on this machine."
    )


def _int(value: str | None, default: int) -> int:
    # ASCII digits only: "²".isdigit() is True and int("²") raises (a 500)
    ok = value is not None and len(value) <= 9 and _DIGITS.fullmatch(value)
    return int(value) if ok and value else default


async def invoice(request: web.Request) -> web.Response:
    """One invoice: its state, QBO link and PDF, and every move."""
    session = await _required(request)
    tenant = _tenant(request)
    store = request.app[DAEMON].store
    inv = await store.invoice(tenant, request.match_info["invoice"])
    if inv is None:
        raise web.HTTPNotFound(text="no such invoice")
    history = await store.history(tenant, inv.invoice_id)
    payments, notes = await store.money_of_invoice(tenant, inv.invoice_id)
    return _render(
        "invoice.html",
        session,
        tenant=tenant,
        invoice=inv,
        history=history,
        payments=payments,
        credit_notes=notes,
    )


async def failures(request: web.Request, message: str | None = None) -> web.Response:
    """A tenant's failures: the open ones with Retry and Dismiss, then the handled."""
    session = await _required(request)
    tenant = _tenant(request)
    found = await request.app[DAEMON].store.failures(tenant)
    found.sort(key=lambda f: -(f.id or 0))
    return _render(
        "failures.html",
        session,
        tenant=tenant,
        message=message or request.query.get("message"),
        open=[f for f in found if f.resolved_at is None],
        can_retry=can_retry,
        resolved=[f for f in found if f.resolved_at is not None][:50],
    )


async def drift(request: web.Request, message: str | None = None) -> web.Response:
    """A tenant's latest drift report (issue 27), filtered by field and cause."""
    session = await _required(request)
    tenant = _tenant(request)
    report = await drift_api.report_of(request, tenant)
    wanted = {k: request.query.get(k, "") for k in ("field", "cause")}
    shown = [
        d
        for d in report["differences"]
        if all(not v or d.get(k) == v for k, v in wanted.items())
    ]
    return _render(
        "drift.html",
        session,
        tenant=tenant,
        message=message or request.query.get("message"),
        report=report,
        differences=shown,
        wanted=wanted,
        fields=sorted(GROUP),
        causes=CAUSES,
    )


async def check_drift(request: web.Request) -> web.StreamResponse:
    """The page's "Check now": a check asked for (mending per the owners)."""
    await _posted(request)
    tenant = _tenant(request)
    daemon = request.app[DAEMON]
    await daemon.store.request_drift_check(tenant, daemon.clock(), heal=True)
    daemon.drift.wake()
    raise web.HTTPSeeOther(
        f"/tenants/{tenant}/drift?message=Check+asked+for:+this+page+shows+it+when+done"
    )


async def act_on_failure(request: web.Request) -> web.StreamResponse:
    """Retry or dismiss one failure."""
    await _posted(request)
    tenant = _tenant(request)
    daemon = request.app[DAEMON]
    action = request.match_info["action"]
    if action not in ("retry", "dismiss"):
        raise web.HTTPNotFound
    try:
        failure = await admin.open_failure(
            daemon, tenant, request.match_info["failure"]
        )
        if action == "retry":
            await admin.retry(daemon, failure)
            said = "Queued again: the invoice shows pending until QuickBooks answers."
        else:
            await admin.dismiss(daemon, failure)
            said = "Dismissed."
    except NotRetried as exc:
        said = f"Not done: {exc.reason}"
    raise web.HTTPSeeOther(f"/tenants/{tenant}/failures?{urlencode({'message': said})}")


async def retry_all(request: web.Request) -> web.StreamResponse:
    """Retry every open failure that a retry can help."""
    await _posted(request)
    tenant = _tenant(request)
    daemon = request.app[DAEMON]
    done = skipped = 0
    for failure in await daemon.store.failures(tenant):
        if failure.resolved_at is not None:
            continue
        try:
            await admin.retry(daemon, failure)
            done += 1
        except NotRetried:
            skipped += 1
    said = f"Queued {done} again" + (
        f"; {skipped} cannot be retried" if skipped else ""
    )
    raise web.HTTPSeeOther(f"/tenants/{tenant}/failures?{urlencode({'message': said})}")


async def rules(
    request: web.Request,
    tried: list[str] | None = None,
    text: str = "",
    session: Session | None = None,
) -> web.Response:
    """The tenant's state machine, drawn; a form to try other rules first."""
    session = session or await _required(request)
    tenant = _tenant(request)
    machine = request.app[DAEMON].rulebook.machine(tenant)
    assert machine is not None  # noqa: S101 -- _tenant checked it
    return _render(
        "rules.html",
        session,
        tenant=tenant,
        source=machine.rules.source,
        drawing=diagram.svg(machine.rules),
        tried=tried,
        text=text,
    )


async def try_rules(request: web.Request) -> web.Response:
    """What pasted rules would change, against the tenant's recorded history."""
    session, form = await _posted(request)
    tenant = _tenant(request)
    daemon = request.app[DAEMON]
    text = form.get("rules", "")
    machine = daemon.rulebook.machine(tenant)
    assert machine is not None  # noqa: S101 -- _tenant checked it
    size = len(text.encode())
    if size > MAX_PASTED_RULES:
        too_big = (
            f"the rules pasted are {size} bytes, over the {MAX_PASTED_RULES} this "
            "page checks (try a file that big with `syncd rules try`)"
        )
        return await rules(request, [too_big], "", session)
    try:
        # off the event loop: every tenant's intake, webhooks and jobs go on meanwhile
        new = await asyncio.wait_for(
            asyncio.to_thread(_parse_pasted, text), PASTED_RULES_SECONDS
        )
    except ConfigError as exc:
        return await rules(request, shown(exc.problems), text, session)
    except TimeoutError:
        late = f"checking the rules pasted took over {PASTED_RULES_SECONDS:.0f} s"
        return await rules(request, [late], text, session)
    _, report = await rules_try.replay(daemon.store, tenant, machine.rules, new)
    return await rules(request, rules_try.render(report), text, session)


def _parse_pasted(text: str) -> Rules:
    return parse_rules(parse_toml(text, "the rules pasted"), "the rules pasted")


async def connect(request: web.Request) -> web.StreamResponse:
    """Connect Connect or Reconnect: off to Intuit's consent page."""
    await _posted(request)
    tenant = _tenant(request)
    try:
        url = await request.app[DAEMON].connections.start(tenant, force=False)
    except (ConnectError, ConfigError) as exc:
        raise web.HTTPConflict(text=str(exc)) from exc
    raise web.HTTPSeeOther(url)


async def disconnect(request: web.Request) -> web.StreamResponse:
    """Revoke and forget the tenant's QuickBooks connection."""
    await _posted(request)
    tenant = _tenant(request)
    await request.app[DAEMON].connections.disconnect(tenant)
    raise web.HTTPSeeOther("/")
