"""Issue 22 §7: admin token guesses are paced, and the right token is never refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import make_mocked_request

from syncd.web import guard
from syncd.web.guard import GLOBAL_LIMIT, LIMIT, PACE, Attempts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TOKEN = "the-right-admin-token-0123456789"


class Pauses:
    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


async def test_an_address_past_the_limit_waits_its_turn_but_gets_in():
    """LIMIT wrong tries free; then each check waits PACE; the right token is let in."""
    pauses = Pauses()
    attempts = Attempts(pause=pauses)
    for _ in range(LIMIT):
        assert not await attempts.check("10.0.0.1", "guess", TOKEN, NOW)
    assert pauses.taken == []
    assert not await attempts.check("10.0.0.1", "guess", TOKEN, NOW)
    assert await attempts.check("10.0.0.1", TOKEN, TOKEN, NOW)
    assert pauses.taken == [PACE, PACE]
    # the right token cleared the count; another address never waited
    assert await attempts.check("10.0.0.1", TOKEN, TOKEN, NOW)
    assert await attempts.check("10.0.0.2", TOKEN, TOKEN, NOW)
    assert pauses.taken == [PACE, PACE]
    # the window passes: free again
    for _ in range(LIMIT):
        await attempts.check("10.0.0.3", "guess", TOKEN, NOW)
    assert await attempts.check("10.0.0.3", TOKEN, TOKEN, NOW + timedelta(minutes=2))
    assert pauses.taken == [PACE, PACE]


async def test_many_addresses_guessing_at_once_are_each_paced_after_one_try():
    """Past GLOBAL_LIMIT wrong tries anywhere, an address with one wrong try waits."""
    pauses = Pauses()
    attempts = Attempts(pause=pauses)
    for n in range(GLOBAL_LIMIT):
        await attempts.check(f"10.1.{n // 250}.{n % 250}", "guess", TOKEN, NOW)
    assert pauses.taken == []
    await attempts.check("10.9.9.9", "guess", TOKEN, NOW)
    assert pauses.taken == []  # its first try: nothing known against it
    await attempts.check("10.9.9.9", "guess", TOKEN, NOW)
    assert pauses.taken == [PACE]
    assert await attempts.check("10.8.8.8", TOKEN, TOKEN, NOW)  # a clean address
    assert pauses.taken == [PACE]


def test_the_client_is_the_one_a_trusted_proxy_forwards():
    """Behind a named reverse proxy each client counts alone; IPv6 by its /64."""
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    request = make_mocked_request("GET", "/login", headers=forwarded)
    peer = request.remote or ""
    assert guard.client_address(request, frozenset()) == peer
    assert guard.client_address(request, frozenset({peer})) == "203.0.113.9"
    six = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "2001:db8::1:2"})
    assert guard.client_address(six, frozenset({peer})) == "2001:db8::/64"
