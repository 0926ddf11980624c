"""The aiohttp application: health, readiness and metrics; webhooks, OAuth, admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncd import metrics
from syncd.config import Config
from syncd.daemon import Daemon
from syncd.web import admin, drift, guard, oauth, openapi, page, webhook
from syncd.web.keys import CONFIG, DAEMON


def build_app(config: Config) -> web.Application:
    """Return the application; the daemon starts and stops with it."""
    app = web.Application(
        middlewares=[guard.body_deadline(config.http.body_timeout), oauth.admin_auth]
    )
    app[CONFIG] = config
    app[DAEMON] = daemon = Daemon(config)
    app[oauth.CONNECTIONS] = daemon.connections
    app[oauth.ADMIN_TOKEN] = config.secrets.get("ADMIN_TOKEN") or ""
    app[oauth.AUTHENTICATED] = _logged_in
    app[oauth.TENANTS] = frozenset(config.tenants)
    app[oauth.ATTEMPTS] = guard.Attempts()
    app[oauth.TRUSTED_PROXIES] = frozenset(config.http.trusted_proxies)
    app[oauth.NOW] = daemon.clock
    oauth.routes(app)
    admin.routes(app)
    drift.routes(app)
    webhook.routes(app)
    page.routes(app)
    app.cleanup_ctx.append(_daemon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/openapi.json", openapi.openapi)
    return app


async def _logged_in(request: web.Request) -> bool:
    return await page.session_of(request) is not None


async def _daemon(app: web.Application) -> AsyncIterator[None]:
    daemon = app[DAEMON]
    await daemon.start()
    yield
    await daemon.stop()


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


async def metrics_route(request: web.Request) -> web.Response:
    """Prometheus text format: counters as they are, the store's gauges read now.

    With `[http] metrics_token = true`, only with the admin token (the labels name every
    tenant and QBO company).
    """
    if request.app[CONFIG].http.metrics_token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        right = await request.app[oauth.ATTEMPTS].check(
            guard.client_address(request, request.app[oauth.TRUSTED_PROXIES]),
            given,
            request.app[oauth.ADMIN_TOKEN],
            request.app[oauth.NOW](),
        )
        if not right:
            return web.json_response({"error": "admin token required"}, status=401)
    daemon = request.app[DAEMON]
    if daemon.store.is_open:
        await daemon.refresh_metrics()
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz(request: web.Request) -> web.Response:
    """Ready: store open, broker connected, rules loaded (503 naming what is not)."""
    daemon = request.app[DAEMON]
    checks = daemon.ready
    ready = all(checks.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
    }
    if daemon.store.problem:
        body["reason"] = daemon.store.problem
    return web.json_response(body, status=200 if ready else 503)
