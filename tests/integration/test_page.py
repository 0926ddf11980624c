"""Issue 12: the admin page over HTTP: log in, the failure banner, retry, the rules drawn.

(tests/integration/test_browser.py drives the same page in a real browser.)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from syncd.rules.model import load_rules
from tests.integration.test_outbound import Setup, _invoice
from tests.integration.test_outbound import setup as setup  # the fixture
from tests.syncd_process import ADMIN, RULES


@pytest.fixture
async def browser(setup: Setup) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps the page's cookies (Secure ones too, on this loopback origin)."""
    origin = f"http://127.0.0.1:{setup.syncd.http_port}"
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=origin)
    async with aiohttp.ClientSession(base_url=origin, cookie_jar=jar) as session:
        yield session


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def _log_in(browser: aiohttp.ClientSession) -> None:
    async with browser.post(
        "/login", data={"token": ADMIN}, allow_redirects=False
    ) as r:
        assert r.status == 303
        cookie = r.headers["Set-Cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict"):
        assert flag in cookie, cookie


@pytest.mark.rules('on_missing = "create"', 'on_missing = "fail"')
async def test_log_in_see_the_banner_retry_and_watch_it_sync(setup: Setup, browser):
    """HS2: a failure shows as a banner; Retry (with its CSRF token) syncs it once fixed."""
    async with browser.get("/", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (303, "/login")
    async with browser.post("/login", data={"token": "wrong"}) as r:
        assert r.status == 401
        assert "not the admin token" in await r.text()
    await _log_in(browser)
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "failed")
    async with browser.get("/") as r:
        home = await r.text()
    assert "acme: 1 failed sync needs a look" in home
    assert setup.realm in home and "connected" in home
    assert "Last webhook" in home and "QuickBooks throttling" in home
    async with browser.get("/tenants/acme/failures") as r:
        page = await r.text()
    assert "no item named &#39;Consulting&#39;" in page
    failure_id = re.search(r'data-failure="(\d+)"', page).group(1)  # type: ignore[union-attr]
    retry = f"/tenants/acme/failures/{failure_id}/retry"
    async with browser.post(retry, data={"csrf": "forged"}) as r:
        assert r.status == 403  # no form from elsewhere is obeyed
    await setup.qbo.create(
        "Item", {"Name": "Consulting", "IncomeAccountRef": {"value": "1"}}
    )
    async with browser.post(retry, data={"csrf": _csrf(page)}) as r:
        assert "Queued again" in await r.text()
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    async with browser.get("/tenants/acme/invoices?sync_state=synced") as r:
        listed = await r.text()
    assert 'data-invoice="INV-1"' in listed and "1001" in listed
    async with browser.get("/tenants/acme/invoices/INV-1") as r:
        detail = await r.text()
    assert "app.qbo.intuit.com/app/invoice?txnId=" in detail and "/pdf" in detail
    async with browser.get("/") as r:
        assert "failed sync" not in await r.text()  # the banner is gone


async def test_the_rules_are_drawn_and_the_api_answers_a_logged_in_browser(
    setup: Setup, browser
):
    """The state machine as SVG (a box per status, an arrow per move); the API reads."""
    await _log_in(browser)
    async with browser.get("/tenants/acme/rules") as r:
        drawing = await r.text()
    boxes = re.findall(r"data-status='([a-z_]+)'", drawing)
    assert set(boxes) >= {"draft", "open", "sent", "paid", "voided"}
    moves = sum(len(to) for to in load_rules(RULES).moves.values())
    assert drawing.count("class='move'") == moves  # an arrow for every allowed move
    changed = RULES.read_text().replace(
        'invoice_voided = "voided"', 'invoice_voided = ""'
    )
    form = {"csrf": _csrf(drawing), "rules": changed}
    async with browser.post("/tenants/acme/rules/try", data=form) as r:
        tried = await r.text()
    assert "QBO invoice_voided: voided → (nothing)" in tried
    async with browser.post(
        "/tenants/acme/rules/try", data={**form, "rules": "[statuses\n"}
    ) as r:
        assert "not valid TOML" in await r.text()
    async with browser.get("/api/tenants/acme/invoices") as r:
        assert r.status == 200  # reads with the session
    async with browser.post("/api/tenants/acme/failures/1/retry") as r:
        assert r.status == 401  # writes need the token (or a form with its CSRF token)
    async with browser.get(
        "/api/tenants/acme/invoices", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as r:
        assert r.status == 200
    async with browser.get("/tenants/nobody/invoices") as r:
        assert r.status == 404


async def test_hostile_rules_pasted_are_answered_not_hung_or_crashed(
    setup: Setup, browser
):
    """Issue 22 §5, §9: too big, nested too deeply, or 60,000 problems: each answered.

    An 80 KB paste froze every tenant for 7 s (a quadratic check on the event loop), a
    2,000-deep one was a 500, and 60,000 unknown keys made a 9.5 MB page.
    """
    await _log_in(browser)
    async with browser.get("/tenants/acme/rules") as r:
        form = {"csrf": _csrf(await r.text())}

    async def tried(text: str):
        async with browser.post(
            "/tenants/acme/rules/try", data={**form, "rules": text}
        ) as r:
            assert r.status == 200
            return await r.text()

    page = await tried(RULES.read_text() + "\n#" + "x" * 300_000 + "\n")
    assert "over the 262144 this page checks" in page
    deep = await tried("a = " + "[" * 2000 + "]" * 2000 + "\n")
    assert "nested too deeply" in deep
    unknown = "".join(f"k{n} = 1\n" for n in range(20_000))  # 208 KB
    many = await tried(unknown)
    assert "unknown key" in many
    assert re.search(r"… and \d+ more problems", many)
    assert len(many) < len(unknown) + 50_000  # the paste comes back, the list does not
    dup = await tried(
        RULES.read_text().replace(
            'on = ["open", "sent"]', 'on = ["open", "sent"' + ', "open"' * 5000 + "]"
        )
    )
    assert "sync.on: lists &#39;open&#39; more than once" in dup


async def test_small_edges_answer_as_documented(setup: Setup, browser, http):
    """Issue 22 §9 over HTTP: each small edge answered as documented.

    `?page=²`, `limit=²`, a log-in over plain HTTP off this machine, and a tenant spelt
    with an encoded slash.
    """
    await _log_in(browser)
    async with browser.get("/tenants/acme/invoices?page=%C2%B2") as r:
        assert r.status == 200  # was a 500
    api = f"http://127.0.0.1:{setup.syncd.http_port}/api/tenants"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(f"{api}/acme/invoices?limit=%C2%B2", headers=headers) as r:
        assert r.status == 400
        assert "a whole number from 1 to 1000" in (await r.json())["error"]
    async with http.get(f"{api}/acme%2F..%2Fglobex/failures", headers=headers) as r:
        assert r.status == 404
    login = f"http://127.0.0.1:{setup.syncd.http_port}/login"
    elsewhere = {"Origin": "http://syncd.test:8080"}
    async with http.post(
        login, data={"token": ADMIN}, headers=elsewhere, allow_redirects=False
    ) as r:
        assert r.status == 400
        assert "needs HTTPS" in await r.text()
        assert "Set-Cookie" not in r.headers


async def test_an_invoices_payments_and_credit_notes_show_beside_it(
    setup: Setup, browser, http
):
    """Issue 26: the admin page and API list an invoice's payments, refunds and credits."""
    from tests.integration.test_money import _credit_note, _note, _refund
    from tests.integration.test_outbound import _payment

    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.crm.send("acme", "payment.recorded", _payment())
    await setup.crm.send("acme", "payment.refunded", _refund(amount="10.00"))
    await setup.crm.send("acme", "credit_note.upserted", _credit_note(1, "open"))
    await _note(setup, lambda d: d.get("qbo_status") == "applied")
    await setup.settled()
    url = f"http://127.0.0.1:{setup.syncd.http_port}/api/tenants/acme/invoices/INV-1"
    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        body = await r.json()
    assert [(p["kind"], p["payment_id"], p["amount"]) for p in body["payments"]] == [
        ("payment", "P-1", "50.00"),
        ("refund", "R-1", "10.00"),
    ]
    [note] = body["credit_notes"]
    assert (note["credit_note_id"], note["qbo_status"], note["remaining_credit"]) == (
        "CN-1",
        "applied",
        "0.00",
    )
    await _log_in(browser)
    async with browser.get("/tenants/acme/invoices/INV-1") as r:
        page = await r.text()
    assert "Payments and credits" in page
    assert "refund</td>" not in page and "refund of P-1" in page
    assert "credit note (open)" in page and "0.00 credit left" in page
