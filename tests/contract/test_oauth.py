"""qbo.md §8: Intuit's OAuth 2.0 paths, rotation, revocation, discovery."""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp

from tests.sandbox_process import CLIENT_ID, REDIRECT, Connection, SandboxProcess, basic


async def test_discovery_document_names_this_origin(
    sandbox: SandboxProcess, http: aiohttp.ClientSession
):
    """§8: the discovery document's endpoints are Intuit's paths on the sandbox's origin."""
    async with http.get(sandbox.origin + "/.well-known/openid_configuration") as r:
        doc = await r.json()
    assert doc["authorization_endpoint"] == sandbox.origin + "/connect/oauth2"
    assert doc["token_endpoint"] == sandbox.origin + "/oauth2/v1/tokens/bearer"
    assert doc["revocation_endpoint"] == sandbox.origin + "/v2/oauth2/tokens/revoke"
    assert "com.intuit.quickbooks.accounting" in doc["scopes_supported"]


async def test_code_flow_tokens_and_a_new_company_per_consent(
    qbo: Connection, sandbox, http
):
    """§8: consent redirects with code, state, realmId; tokens as Intuit's; new realm each time."""
    assert qbo.tokens["token_type"] == "bearer"
    assert qbo.tokens["expires_in"] == 3600
    assert qbo.tokens["x_refresh_token_expires_in"] > 8_000_000
    other = await Connection(http, sandbox.origin).connect()
    assert other.realm != qbo.realm
    same = await Connection(http, sandbox.origin).connect(realm=qbo.realm)
    assert same.realm == qbo.realm
    await same.call("GET", "preferences")


async def test_codes_are_single_use_and_bound_to_the_redirect(
    sandbox: SandboxProcess, http
):
    """§8: a used code or a different redirect_uri gives invalid_grant."""
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "com.intuit.quickbooks.accounting",
        "state": "x",
    }
    async with http.get(
        f"{sandbox.origin}/connect/oauth2?{urlencode(params)}", allow_redirects=False
    ) as r:
        code = parse_qs(urlparse(r.headers["Location"]).query)["code"][0]
    conn = Connection(http, sandbox.origin)
    wrong = await conn.token_call(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://evil/cb",
        },
        expect=400,
    )
    assert wrong["error"] == "invalid_grant"
    used = await conn.token_call(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        expect=400,
    )
    assert used["error"] == "invalid_grant"


async def test_client_authentication_is_required(sandbox: SandboxProcess, http):
    """§8: the token endpoint wants Basic client_id:client_secret."""
    bad = "Basic " + base64.b64encode(b"test-client:wrong").decode()
    async with http.post(
        f"{sandbox.origin}/oauth2/v1/tokens/bearer",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        headers={"Authorization": bad},
    ) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"


async def test_refresh_rotates_and_the_superseded_token_is_refused(qbo: Connection):
    """§8: each refresh returns a new refresh token; the old one answers invalid_grant."""
    old = qbo.tokens["refresh_token"]
    fresh = await qbo.token_call({"grant_type": "refresh_token", "refresh_token": old})
    assert fresh["refresh_token"] != old
    assert fresh["access_token"] != qbo.tokens["access_token"]
    stale = await qbo.token_call(
        {"grant_type": "refresh_token", "refresh_token": old}, expect=400
    )
    assert stale["error"] == "invalid_grant"
    qbo.tokens = fresh
    await qbo.call("GET", "preferences")


async def test_revoke_ends_api_access_and_refresh(qbo: Connection):
    """§8: after revoke, API calls get 401 and the refresh token invalid_grant."""
    url = f"{qbo.origin}/v2/oauth2/tokens/revoke"
    async with qbo.session.post(
        url,
        json={"token": qbo.tokens["refresh_token"]},
        headers={"Authorization": basic()},
    ) as r:
        assert r.status == 200
    fault = await qbo.call("GET", "preferences", expect=401)
    assert fault["fault"]["error"][0]["code"] == "3200"
    refused = await qbo.token_call(
        {"grant_type": "refresh_token", "refresh_token": qbo.tokens["refresh_token"]},
        expect=400,
    )
    assert refused["error"] == "invalid_grant"


async def test_state_file_keeps_companies_and_tokens_across_restarts(tmp_path, http):
    """With --state, a company and its tokens survive a sandbox restart (SQLite file)."""
    state = tmp_path / "sandbox.db"
    process = SandboxProcess(tmp_path, "--state", str(state))
    await asyncio.to_thread(process.start)
    try:
        qbo = await Connection(http, process.origin).connect()
        customer = await qbo.customer("Survivor Co")
        # no wait for the second's save: a stop saves too (SIGTERM, as a container's)
    finally:
        process.stop()
    port = process.port
    again = SandboxProcess(tmp_path, "--state", str(state))
    again.port, again.origin = port, f"http://127.0.0.1:{port}"
    await asyncio.to_thread(again.start)
    try:
        found = (await qbo.call("GET", f"customer/{customer['Id']}"))["Customer"]
        assert found["DisplayName"] == "Survivor Co"
        fresh = await qbo.token_call(
            {
                "grant_type": "refresh_token",
                "refresh_token": qbo.tokens["refresh_token"],
            }
        )
        assert fresh["access_token"]
    finally:
        again.stop()
