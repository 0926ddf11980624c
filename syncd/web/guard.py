"""The HTTP side's defences: admin token guesses paced, slow bodies cut off.

The right admin token is never refused. Wrong ones are counted per client address; once
an address has made `LIMIT` wrong tries within `WINDOW` (or, while `GLOBAL_LIMIT` wrong
tries from anywhere are that recent, any wrong try), every token it sends is checked
only in turn, one check every `PACE` seconds for the whole process: a guesser gets a few
tries a second however many connections it opens, and an admin behind the same address
gets in, late. (The old lockout answered 429 to the right token too: five wrong tries a
minute through a shared proxy locked the admin out.) Behind a reverse proxy, name it in
`[http] trusted_proxies` so each client is counted by its own address.

A request body that does not arrive in full within `[http] body_timeout` seconds is
answered 408 and its connection closed, so a half-sent request cannot hold a connection
(and its memory) for minutes.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from aiohttp import web
from aiohttp.typedefs import Middleware

LIMIT = 5  # wrong tries an address makes freely within WINDOW
GLOBAL_LIMIT = (
    50  # wrong tries from everywhere within WINDOW: then any wrong address waits
)
WINDOW = timedelta(minutes=1)
PACE = 0.5  # seconds between two paced checks, process-wide
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Attempts:
    """Wrong admin tokens per client address, and the pace of the suspects' checks."""

    def __init__(
        self, pause: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self._wrong: dict[str, list[datetime]] = {}
        self._everywhere: deque[datetime] = (
            deque()
        )  # every recent wrong try, oldest first
        self._pacer = asyncio.Lock()
        self._pause = pause

    async def check(
        self, address: str, given: str, expected: str, now: datetime
    ) -> bool:
        """Whether `given` is the admin token; a suspect address waits its turn first."""
        if self._suspect(address, now):
            async with self._pacer:
                await self._pause(PACE)
        right = bool(expected) and hmac.compare_digest(
            given.encode(), expected.encode()
        )
        if right:
            self._wrong.pop(address, None)
        elif given:  # a wrong token, not a missing one
            self._wrong.setdefault(address, []).append(now)
            self._everywhere.append(now)
            if (
                len(self._wrong) > 10_000
            ):  # a flood from many addresses: keep it bounded
                self._wrong = dict(list(self._wrong.items())[-5_000:])
        return right

    def _suspect(self, address: str, now: datetime) -> bool:
        recent = [t for t in self._wrong.get(address, ()) if now - t < WINDOW]
        if recent:
            self._wrong[address] = recent
        else:
            self._wrong.pop(address, None)
            return False
        if len(recent) >= LIMIT:
            return True
        while self._everywhere and now - self._everywhere[0] >= WINDOW:
            self._everywhere.popleft()
        return len(self._everywhere) >= GLOBAL_LIMIT


def client_address(request: web.Request, trusted: frozenset[str]) -> str:
    """Who is asking: the peer, or, behind a trusted proxy, the client it forwards.

    IPv6 clients are counted by their /64 (one host has a whole /64 to rotate through).
    """
    address = request.remote or ""
    if address in trusted:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        address = hops[-1] if hops else address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def body_deadline(seconds: float) -> Middleware:
    """A middleware reading each request body within `seconds`, else 408."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.can_read_body:
            try:
                async with asyncio.timeout(seconds):
                    await request.read()  # kept: the handler's json()/post() reuse it
            except TimeoutError:
                response = web.json_response(
                    {"error": f"the request body did not arrive within {seconds:g} s"},
                    status=408,
                    headers={"Connection": "close"},
                )
                response.force_close()
                return response
        return await handler(request)

    return middleware
