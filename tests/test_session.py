"""The admin page's sessions, kept by the store (issue 25: any replica, any restart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from syncd.web.session import COOKIE, LIFETIME, Sessions, csrf_ok

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _with_cookie(response: web.StreamResponse) -> web.Request:
    sid = response.cookies[COOKIE].value
    return make_mocked_request("GET", "/", headers={"Cookie": f"{COOKIE}={sid}"})


async def test_a_session_started_in_one_process_is_known_in_another(store):
    """Two Sessions on one store (two replicas, or one restarted) share the login."""
    response = web.Response()
    started = await Sessions(store).start(response, NOW)
    request = _with_cookie(response)
    other = await Sessions(store).of(request, NOW + timedelta(hours=1))
    assert other is not None and csrf_ok(other, started.csrf)
    assert await Sessions(store).of(request, NOW + LIFETIME) is None  # expired


async def test_the_store_never_holds_the_cookie(store):
    """Only the id's SHA-256 is kept: a copy of the store logs nobody in."""
    response = web.Response()
    await Sessions(store).start(response, NOW)
    sid = response.cookies[COOKIE].value
    assert await store.session(sid, NOW) is None


async def test_logging_out_ends_it_everywhere(store):
    response = web.Response()
    await Sessions(store).start(response, NOW)
    request = _with_cookie(response)
    await Sessions(store).end(request, web.Response())
    assert await Sessions(store).of(request, NOW) is None


async def test_no_cookie_no_session(store):
    assert await Sessions(store).of(make_mocked_request("GET", "/"), NOW) is None


async def test_the_page_still_logs_in_while_the_store_cannot_be_used(store):
    """The admin page is where an admin reads why the store fails: it must open then."""
    await store.close()  # every call now raises StoreError
    sessions = Sessions(store)
    response = web.Response()
    started = await sessions.start(response, NOW)
    request = _with_cookie(response)
    assert await sessions.of(request, NOW) == started
    await sessions.end(request, web.Response())
    assert await sessions.of(request, NOW) is None
