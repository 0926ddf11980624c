"""The sandbox's aiohttp application: QBO's API, Intuit's OAuth paths, the admin API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from syncd.sandbox import admin, api, faults
from syncd.sandbox.api import SANDBOX, json_response
from syncd.sandbox.oauth import OAuthError, discovery
from syncd.sandbox.state import Sandbox, SandboxConfig


def build_app(config: SandboxConfig) -> web.Application:
    """The whole sandbox on one origin."""
    app = web.Application(
        middlewares=[_log_requests, _qbo_errors, _api_gate], client_max_size=4 * 1024**2
    )
    app[SANDBOX] = Sandbox(config)
    app.cleanup_ctx.append(_background)
    app.router.add_get("/.well-known/openid_configuration", _discovery)
    app.router.add_get("/.well-known/openid_configuration/", _discovery)
    app.router.add_get("/.well-known/openid_sandbox_configuration/", _discovery)
    app.router.add_get("/connect/oauth2", _authorize)
    app.router.add_post("/oauth2/v1/tokens/bearer", _token)
    app.router.add_post("/v2/oauth2/tokens/revoke", _revoke)
    api.routes(app)
    admin.routes(app)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    sandbox = app[SANDBOX]
    session = aiohttp.ClientSession()
    notifier = asyncio.create_task(
        sandbox.notifier.run(session), name="sandbox.webhooks"
    )
    saver = asyncio.create_task(_save_every_second(sandbox), name="sandbox.state")
    yield
    for task in (notifier, saver):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await sandbox.notifier.close()
    await session.close()
    sandbox.save()


async def _save_every_second(sandbox: Sandbox) -> None:
    while True:
        await asyncio.sleep(1)
        sandbox.save()


@web.middleware
async def _log_requests(
    request: web.Request, handler: api.Handler
) -> web.StreamResponse:
    """Remember every request for the admin API (not the admin API's own)."""
    response = await handler(request)
    if not request.path.startswith(admin.PREFIX):
        request.app[SANDBOX].log(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "realm": request.match_info.get("realm"),
                "status": response.status,
            }
        )
    return response


@web.middleware
async def _qbo_errors(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    """QBO faults become their JSON bodies; OAuth errors their `{"error": …}`."""
    try:
        return await handler(request)
    except faults.QboFault as fault:
        return json_response(fault.body, fault.status)
    except OAuthError as exc:
        body = {"error": exc.error}
        if exc.description:
            body["error_description"] = exc.description
        return web.json_response(body, status=exc.status)


@web.middleware
async def _api_gate(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    """For /v3: injected faults, then the bearer token, then the per-realm limits."""
    realm = request.match_info.get("realm")
    if realm is None or not request.path.startswith("/v3/"):
        return await handler(request)
    sandbox = request.app[SANDBOX]
    sandbox.oauth.check(request.headers.get("Authorization"), realm)
    with sandbox.throttle.request(realm, batch=request.path.endswith("/batch")):
        await _inject(sandbox)  # inside: a slow request holds its concurrency slot
        return await handler(request)


async def _inject(sandbox: Sandbox) -> None:
    plan, roll = sandbox.faults, sandbox.rng.random()
    if roll < plan.rate_429:
        raise faults.throttled()
    if roll < plan.rate_429 + plan.rate_5xx:
        raise faults.system_error()
    if roll < plan.rate_429 + plan.rate_5xx + plan.slow:
        await asyncio.sleep(plan.slow_seconds)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _discovery(request: web.Request) -> web.Response:
    return web.json_response(discovery(_origin(request)))


async def _authorize(request: web.Request) -> web.Response:
    """Consent at once; a new company per consent unless `realmId` names one."""
    sandbox = request.app[SANDBOX]
    params: dict[str, Any] = dict(request.query)
    wanted = params.get("realmId")
    company = sandbox.companies.get(wanted) if wanted else None
    if wanted and company is None:
        company = sandbox.new_company(wanted)
    company = company or sandbox.new_company()
    raise web.HTTPFound(sandbox.oauth.authorize(params, company.realm_id))


async def _token(request: web.Request) -> web.Response:
    form = {k: str(v) for k, v in (await request.post()).items()}
    hard = request.headers.get("x-include-refresh-token-hard-expires-in", "") == "true"
    tokens = request.app[SANDBOX].oauth.token(
        request.headers.get("Authorization"), form, hard
    )
    return web.json_response(tokens)


async def _revoke(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = {}
    request.app[SANDBOX].oauth.revoke(
        request.headers.get("Authorization"), str(body.get("token", ""))
    )
    return web.Response(status=200)
