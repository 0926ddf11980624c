"""The drift report over HTTP (issue 27): the latest check, and a check asked for now.

Any replica answers: the report is the store's, and a check asked for is a row the
replica holding the company sees within seconds (`syncd.drift.check`).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from syncd.web.keys import DAEMON


def routes(app: web.Application) -> None:
    """Add the drift routes (behind the admin token, as every /api route)."""
    base = "/api/tenants/{tenant}/drift"
    app.router.add_get(base, get_report)
    app.router.add_post(base + "/check", start_check)


async def report_of(request: web.Request, tenant: str) -> dict[str, Any]:
    """The tenant's latest report, and how far a check under way is."""
    daemon = request.app[DAEMON]
    raw = await daemon.store.drift_report(tenant)
    report: dict[str, Any] = (
        orjson.loads(raw)
        if raw
        else {
            "checked_at": None,
            "invoices_checked": 0,
            "qbo_reads": 0,
            "differences": [],
        }
    )
    report["running"] = await daemon.store.drift_progress(tenant)
    asked = (await daemon.store.drift_requests()).get(tenant)
    report["requested_at"] = asked[0].isoformat() if asked else None
    return report


async def get_report(request: web.Request) -> web.Response:
    """`GET /api/tenants/T/drift`: the latest check's differences.

    `?field=`, `?cause=`, `?invoice_id=` keep only the differences that match.
    """
    tenant = request.match_info["tenant"]
    if tenant not in request.app[DAEMON].config.tenants:
        return web.json_response({"error": f"unknown tenant {tenant!r}"}, status=404)
    report = await report_of(request, tenant)
    wanted = {
        k: v for k in ("field", "cause", "invoice_id") if (v := request.query.get(k))
    }
    report["differences"] = [
        d
        for d in report["differences"]
        if all(d.get(k) == v for k, v in wanted.items())
    ]
    return web.json_response(report)


async def start_check(request: web.Request) -> web.Response:
    """`POST /api/tenants/T/drift/check`: a check now (`?heal=0`: list, mend nothing)."""
    daemon = request.app[DAEMON]
    tenant = request.match_info["tenant"]
    if tenant not in daemon.config.tenants:
        return web.json_response({"error": f"unknown tenant {tenant!r}"}, status=404)
    conn = await daemon.store.connection(tenant)
    if conn is None or conn.status != "connected":
        reason = conn.error if conn and conn.error else "not connected to QuickBooks"
        return web.json_response({"error": f"{tenant}: {reason}"}, status=409)
    heal = request.query.get("heal", "1") not in ("0", "false")
    await daemon.store.request_drift_check(tenant, daemon.clock(), heal)
    daemon.drift.wake()
    return web.json_response({"tenant": tenant, "heal": heal}, status=202)
