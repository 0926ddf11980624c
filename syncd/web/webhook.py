"""POST /webhooks/qbo: signature checked, body stored durably, 200 well under QBO's 3 s."""

from __future__ import annotations

import structlog
from aiohttp import web

from syncd.qbo import webhooks
from syncd.web.keys import DAEMON

log = structlog.get_logger(__name__)


def routes(app: web.Application) -> None:
    """Add the webhook route."""
    app.router.add_post("/webhooks/qbo", receive)


async def receive(request: web.Request) -> web.Response:
    """Check `intuit-signature`, keep the raw body, answer; processing happens later."""
    daemon = request.app[DAEMON]
    body = await request.read()
    verifier = daemon.config.secrets.get("QBO_VERIFIER_TOKEN") or ""
    if not webhooks.verify(body, request.headers.get("intuit-signature"), verifier):
        log.warning("webhook_bad_signature", remote=request.remote, size=len(body))
        return web.json_response(
            {"error": "bad or missing intuit-signature"}, status=401
        )
    try:
        notes = webhooks.parse(body)
        parts = webhooks.by_realm(body)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        reason = f"not a QBO notification ({type(exc).__name__})"
        log.warning("webhook_unreadable", reason=reason, size=len(body))
        return web.json_response({"error": reason}, status=400)
    # each company's changes stored apart: the replica running the company applies them
    for realm, part in parts.items():
        await daemon.store.store_inbound(part, daemon.clock(), realm)
    daemon.inbound.wake()
    log.info("webhook_received", notifications=len(notes))
    return web.Response(status=200)
