"""Issue 9 §5: no log line ever holds a secret, whatever path an error takes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sys
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import structlog
from aiohttp import web

from syncd import logs
from syncd.config import Secrets
from tests.mosquitto import free_port
from tests.syncd_process import ADMIN, QBO_ENV, SyncdProcess, write_config

ENV = {**QBO_ENV, "SYNCD_MQTT_PASSWORD": "mqtt-password-for-tests"}


def _every_secret() -> list[str]:
    basic = f"{ENV['SYNCD_QBO_CLIENT_ID']}:{ENV['SYNCD_QBO_CLIENT_SECRET']}"
    return [
        ENV["SYNCD_QBO_CLIENT_SECRET"],
        ENV["SYNCD_QBO_VERIFIER_TOKEN"],
        ENV["SYNCD_ADMIN_TOKEN"],
        ENV["SYNCD_SECRET_KEY"],
        ENV["SYNCD_MQTT_PASSWORD"],
        base64.b64encode(basic.encode()).decode(),
    ]


@pytest.fixture
async def broken_intuit() -> AsyncIterator[str]:
    """An Intuit whose consent works and whose token endpoint answers an HTML page."""

    async def consent(request: web.Request) -> web.Response:
        q = request.query
        target = (
            q["redirect_uri"]
            + "?"
            + urlencode({"code": "c-1", "state": q["state"], "realmId": "4620816365"})
        )
        raise web.HTTPFound(target)

    async def token(request: web.Request) -> web.Response:
        return web.Response(
            status=502,
            text="<html><body>Bad Gateway</body></html>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/connect/oauth2", consent)
    app.router.add_post("/oauth2/v1/tokens/bearer", token)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_error_paths_log_no_secret(tmp_path, broker, broken_intuit, http):
    """Issue 9 §5: a deep signed webhook and an HTML token answer: 400/502, no secret."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(workdir, broker.port, qbo_base_url=broken_intuit)
    syncd = SyncdProcess(config, env=ENV)
    syncd.start()
    base = f"http://127.0.0.1:{syncd.http_port}"
    try:
        # 1. a validly signed webhook nested 100,000 deep (was a 500 and the verifier)
        body = b"[" * 100_000 + b"]" * 100_000
        signature = base64.b64encode(
            hmac.new(
                ENV["SYNCD_QBO_VERIFIER_TOKEN"].encode(), body, hashlib.sha256
            ).digest()
        ).decode()
        async with http.post(
            f"{base}/webhooks/qbo", data=body, headers={"intuit-signature": signature}
        ) as r:
            assert r.status == 400
            assert "not a QBO notification" in (await r.json())["error"]
        # 2. a forged signature, and signed garbage
        async with http.post(
            f"{base}/webhooks/qbo", data=b"{}", headers={"intuit-signature": "Zm9v"}
        ) as r:
            assert r.status == 401
        # 3. Intuit's token endpoint answers HTML (was a 500 and the client secret)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(
            f"{base}/oauth/connect?tenant=acme", headers=headers, allow_redirects=False
        ) as r:
            consent = r.headers["Location"]
        async with http.get(consent, allow_redirects=False) as r:
            callback = r.headers["Location"]
        assert urlparse(callback).path == "/oauth/callback"
        assert parse_qs(urlparse(callback).query)["code"] == ["c-1"]
        async with http.get(callback) as r:
            assert r.status == 502
            error = (await r.json())["error"]
        assert "answered HTTP 502 with text/html, not JSON" in error
        # 4. the admin API with a wrong token
        async with http.get(
            f"{base}/api/tenants/acme/failures", headers={"Authorization": "Bearer x"}
        ) as r:
            assert r.status == 401
    finally:
        syncd.stop()
    log = syncd.log()
    assert '"webhook_unreadable"' in log  # the paths were taken and logged
    assert "Traceback" not in log and '"locals"' not in log
    for secret in _every_secret():
        assert secret not in log


def _capture(monkeypatch, secrets: list[str], fmt: str) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logs.setup("info", fmt, secrets)
    return out


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_carry_no_locals(monkeypatch, fmt):
    """Issue 9 §5: structlog's default showed every frame's locals; not any more."""
    out = _capture(monkeypatch, [], fmt)  # no scrubbing: the fix itself is tested

    held = "-".join(["verifier", "held", "in", "a", "local"])  # not in any source line

    def handler(verifier: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    try:
        handler(held)
    except RecursionError:
        structlog.get_logger("t").exception("webhook_failed")
    structlog.reset_defaults()
    text = out.getvalue()
    assert "webhook_failed" in text and "RecursionError" in text
    assert held not in text


def test_secret_values_are_scrubbed_from_any_line(monkeypatch):
    """Issue 9 §5: a secret logged by mistake, even inside a message, is blanked."""
    secrets = Secrets(values=ENV).redactions()
    out = _capture(monkeypatch, secrets, "json")
    log = structlog.get_logger("t")
    log.info(
        "oops",
        header=f"Basic {secrets[-1]}",
        detail=f"token={ENV['SYNCD_ADMIN_TOKEN']}!",
    )
    structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line["header"] == "Basic [secret]"
    assert line["detail"] == "token=[secret]!"
