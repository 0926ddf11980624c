"""HTTP routes for connecting QBO: /oauth/connect, /oauth/callback, disconnect; admin auth."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

from syncd.exceptions import ConfigError, ConnectError, QboError
from syncd.realms.connections import Connections
from syncd.web import guard

CONNECTIONS = web.AppKey("connections", Connections)
AUTHENTICATED: web.AppKey[Callable[[web.Request], Awaitable[bool]]] = web.AppKey(
    "authenticated"
)
TENANTS: web.AppKey[frozenset[str]] = web.AppKey("tenants")
ATTEMPTS = web.AppKey("attempts", guard.Attempts)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", frozenset[str])
NOW: web.AppKey[Callable[[], datetime]] = web.AppKey("now")
ADMIN_TOKEN = web.AppKey("admin_token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(app: web.Application) -> None:
    """Add the OAuth and connection routes."""
    app.router.add_get("/oauth/connect", connect)
    app.router.add_get("/oauth/callback", callback)
    app.router.add_post("/api/tenants/{tenant}/disconnect", disconnect)
    app.router.add_get("/api/tenants/{tenant}/connection", connection)


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/api/*` and `/oauth/connect` need `Authorization: Bearer <SYNCD_ADMIN_TOKEN>`.

    A browser logged in on the admin page may read them too (its session cookie is
    SameSite=Strict, so another site cannot ride on it); the page guards its own routes.
    """
    guarded = request.path.startswith("/api/") or request.path == "/oauth/connect"
    if (
        guarded
        and request.method == "GET"
        and await request.app[AUTHENTICATED](request)
    ):
        return await _known_tenant(request, handler)
    if guarded:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query.get("access_token", "")
        right = await request.app[ATTEMPTS].check(
            guard.client_address(request, request.app[TRUSTED_PROXIES]),
            given,
            request.app.get(ADMIN_TOKEN, ""),
            request.app[NOW](),
        )
        if not right:
            return web.json_response({"error": "admin token required"}, status=401)
        return await _known_tenant(request, handler)
    return await handler(request)


async def _known_tenant(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/api/tenants/T/…` of a tenant this syncd does not serve: 404, said once here."""
    # the value the handler will use (`acme%2F..%2Fglobex` is one segment of the path)
    tenant = request.match_info.get("tenant")
    if tenant is not None and tenant not in request.app[TENANTS]:
        return web.json_response({"error": "no such tenant"}, status=404)
    return await handler(request)


async def connect(request: web.Request) -> web.StreamResponse:
    """Send the admin's browser to Intuit's consent page (one-time `state`)."""
    tenant = request.query.get("tenant", "")
    try:
        url = await request.app[CONNECTIONS].start(
            tenant, request.query.get("force") == "1"
        )
    except ConnectError as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)
    except ConfigError as exc:
        return web.json_response({"error": "; ".join(exc.problems)}, status=503)
    raise web.HTTPFound(url)


async def callback(request: web.Request) -> web.StreamResponse:
    """Intuit redirects here: trade the code, connect the tenant to `realmId`."""
    try:
        conn = await request.app[CONNECTIONS].finish(dict(request.query))
    except ConnectError as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)
    except QboError as exc:
        return web.json_response(
            {"error": f"QuickBooks refused the connection: {exc}"}, status=502
        )
    body = {
        "tenant": conn.tenant,
        "realm_id": conn.realm_id,
        "status": conn.status,
        "preferences": conn.preferences,
        "error": conn.error,
    }
    # 202: connected, but QBO's settings are still to be read (it was throttling)
    return web.json_response(body, status=202 if conn.error else 200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    """Revoke and forget the tenant's QBO connection."""
    done = await request.app[CONNECTIONS].disconnect(request.match_info["tenant"])
    return web.json_response({"disconnected": done}, status=200 if done else 404)


async def connection(request: web.Request) -> web.StreamResponse:
    """The tenant's connection status (never its tokens)."""
    conn = await request.app[CONNECTIONS].status(request.match_info["tenant"])
    if conn is None:
        return web.json_response(
            {"connected": False, "error": "not connected to QuickBooks"}, status=404
        )
    return web.json_response(
        {
            "connected": conn.status == "connected",
            "realm_id": conn.realm_id,
            "status": conn.status,
            "error": conn.error,
            "preferences": conn.preferences,
        }
    )
