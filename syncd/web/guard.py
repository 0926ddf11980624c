"""The HTTP side's defences: wrong admin tokens slowed down, slow bodies cut off.

After `LIMIT` wrong admin tokens from one address within `WINDOW`, that address is
refused (429, with Retry-After) until the window has passed since its last wrong try; a
right token clears its count. A request body that does not arrive in full within
`[http] body_timeout` seconds is answered 408 and its connection closed, so a half-sent
request cannot hold a connection (and its memory) for minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from aiohttp import web
from aiohttp.typedefs import Middleware

LIMIT = 5
WINDOW = timedelta(minutes=1)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Attempts:
    """Wrong admin tokens per client address."""

    def __init__(self) -> None:
        self._wrong: dict[str, list[datetime]] = {}

    def wait(self, address: str, now: datetime) -> float:
        """Seconds `address` must wait before trying again (0: it may try now)."""
        recent = [t for t in self._wrong.get(address, []) if now - t < WINDOW]
        self._wrong[address] = recent
        if len(recent) < LIMIT:
            return 0.0
        return max(1.0, (recent[-1] + WINDOW - now).total_seconds())

    def wrong(self, address: str, now: datetime) -> None:
        """A wrong token from `address`."""
        self._wrong.setdefault(address, []).append(now)
        if len(self._wrong) > 10_000:  # a flood from many addresses: keep it bounded
            self._wrong = dict(list(self._wrong.items())[-5_000:])

    def right(self, address: str) -> None:
        """The right token from `address`: forget its wrong ones."""
        self._wrong.pop(address, None)


def too_many(seconds: float) -> web.Response:
    """The answer to an address that tried too many wrong tokens."""
    return web.json_response(
        {"error": f"too many wrong admin tokens: try again in {int(seconds) + 1} s"},
        status=429,
        headers={"Retry-After": str(int(seconds) + 1)},
    )


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
