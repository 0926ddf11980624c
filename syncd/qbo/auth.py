"""Intuit OAuth 2.0 on aiohttp with authlib's protocol helpers.

Intuit rotates refresh tokens and a superseded one answers `invalid_grant`: a refresh
token presented twice is a lost connection. So refreshes of one realm are single-flight
under a lock (one QboAuth per realm: `Connections` builds one client per tenant) and in
the store's turn for the realm, which re-reads the stored token first: another replica
may have refreshed it, and then its token is the live one. A refresh, once sent, runs
to its end in a task of its own whatever happens to its caller: the answer is kept in
memory at once and persisted (through the TokenStore) before the new token is used. A
`RefreshGate` holds the refreshes under way, so a stopping syncd starts none and waits
for those in flight before it closes its store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request

from syncd.exceptions import QboAuthError, QboTransientError
from syncd.qbo.errors import map_errors

SCOPE = "com.intuit.quickbooks.accounting"
_INTUIT = {
    "authorize": "https://appcenter.intuit.com/connect/oauth2",
    "token": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    "revoke": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
}
_API = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
REFRESH_LEEWAY = 300  # seconds before expiry when a token is refreshed
REFRESH_DRAIN = 30.0  # seconds a stopping syncd waits for a refresh's answer, at most


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where Intuit is: its real hosts, or one `base_url` (syncd's QBO sandbox)."""

    authorize: str
    token: str
    revoke: str
    api: str

    @classmethod
    def for_environment(cls, environment: str, base_url: str = "") -> Endpoints:
        """Intuit's hosts for `environment`, or every path on `base_url`."""
        if base_url:
            base = base_url.rstrip("/")
            return cls(
                base + "/connect/oauth2",
                base + "/oauth2/v1/tokens/bearer",
                base + "/v2/oauth2/tokens/revoke",
                base,
            )
        return cls(
            _INTUIT["authorize"], _INTUIT["token"], _INTUIT["revoke"], _API[environment]
        )


@dataclass(frozen=True, slots=True)
class App:
    """The app's credentials as Intuit issued them."""

    client_id: str
    client_secret: str
    redirect_uri: str


class StoredToken(Protocol):
    """A realm's token set as the store holds it, during a turn."""

    token: dict[str, Any] | None  # None: the store holds none (the connection is gone)

    async def keep(self, token: dict[str, Any]) -> None:
        """Persist a rotated token set (before it is used)."""


class TokenStore(Protocol):
    """Where a realm's latest tokens are kept (encrypted at rest)."""

    def turn(
        self, tenant: str, realm_id: str
    ) -> AbstractAsyncContextManager[StoredToken]:
        """The realm's stored tokens, while no one else may refresh them.

        No one: no other task, and no other syncd on the same store (PostgreSQL
        holds the connection's row locked until the turn ends).
        """


class MemoryTokens:
    """A TokenStore in this process's memory (a QBO user's own session, tests)."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def turn(self, tenant: str, realm_id: str) -> AsyncIterator[StoredToken]:
        """The last token kept (None before the first refresh), one turn at a time."""
        async with self._turn:
            yield _Kept(self.saved[-1] if self.saved else None, self)

    async def keep(self, token: dict[str, Any]) -> None:
        """Keep a rotated token set."""
        self.saved.append(token)


@dataclass(slots=True)
class _Kept:
    token: dict[str, Any] | None
    _store: MemoryTokens

    async def keep(self, token: dict[str, Any]) -> None:
        await self._store.keep(token)


def authorize_url(endpoints: Endpoints, app: App, state: str) -> str:
    """The consent URL the admin's browser goes to."""
    url: str = prepare_grant_uri(
        endpoints.authorize, app.client_id, "code", app.redirect_uri, SCOPE, state
    )
    return url


async def exchange_code(
    http: aiohttp.ClientSession, endpoints: Endpoints, app: App, code: str
) -> dict[str, Any]:
    """Trade an authorization code for the first token set."""
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=app.redirect_uri
    )
    return await _token_call(http, endpoints, app, body)


async def revoke(
    http: aiohttp.ClientSession, endpoints: Endpoints, app: App, token: str
) -> None:
    """Revoke a refresh token (ends the company's grant)."""
    headers = {
        "Authorization": aiohttp.encode_basic_auth(app.client_id, app.client_secret),
        "Accept": "application/json",
    }
    with map_errors():
        async with http.post(
            endpoints.revoke, json={"token": token}, headers=headers
        ) as r:
            if r.status >= 500:
                raise QboTransientError(f"revoke failed with HTTP {r.status}")


async def _token_call(
    http: aiohttp.ClientSession, endpoints: Endpoints, app: App, body: str
) -> dict[str, Any]:
    headers = {
        "Authorization": aiohttp.encode_basic_auth(app.client_id, app.client_secret),
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        # ask for the hard maximum too, to warn before it ends (qbo.md §8, §10)
        "x-include-refresh-token-hard-expires-in": "true",
    }
    with map_errors():
        async with http.post(endpoints.token, data=body, headers=headers) as r:
            status, ctype, payload = r.status, r.content_type, await r.read()
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # an outage page, a proxy's error page
        raise QboTransientError(
            f"Intuit's token endpoint answered HTTP {status} with {ctype or 'no type'}, "
            "not JSON: try again later"
        ) from None
    if status >= 500:
        raise QboTransientError(f"Intuit's token endpoint answered HTTP {status}")
    if status != 200 or not isinstance(data, dict) or "access_token" not in data:
        error = data.get("error", "unknown") if isinstance(data, dict) else "unknown"
        raise QboAuthError(
            f"Intuit refused the token request ({error}): reconnect needed", error
        )
    now = int(time.time())
    data["expires_at"] = now + int(data.get("expires_in", 3600))
    if "x_refresh_token_expires_in" in data:  # qbo.md §8: the refresh token's own life
        data["refresh_expires_at"] = now + int(data["x_refresh_token_expires_in"])
    if "x_refresh_token_hard_expires_in" in data:  # §8, §10: the grant's hard maximum
        data["hard_expires_at"] = now + int(data["x_refresh_token_hard_expires_in"])
    return dict(data)


def leeway(token: dict[str, Any]) -> int:
    """How long before its expiry an access token is refreshed.

    REFRESH_LEEWAY, but at most half the token's life: a token that lives 310 s was
    refreshed on every call 10 s after it was issued, each a rotation of the refresh
    token and a chance to present a spent one.
    """
    life = token.get("expires_in")
    if isinstance(life, int | float) and life > 0:
        return int(min(REFRESH_LEEWAY, life / 2))
    return REFRESH_LEEWAY


class RefreshGate:
    """The token refreshes under way in this process; closed, it lets none start."""

    def __init__(self) -> None:
        self._under_way: set[asyncio.Task[None]] = set()
        self.closed = False

    def start(self, refresh: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `refresh` to its end in a task of its own (a cancelled caller leaves it)."""
        if self.closed:
            refresh.close()
            raise QboTransientError(
                "syncd is stopping: the token is refreshed after the restart"
            )
        task = asyncio.get_running_loop().create_task(refresh, name="syncd.qbo.refresh")
        self._under_way.add(task)
        task.add_done_callback(self._under_way.discard)
        return task

    async def close(self) -> None:
        """Start no refresh from now on; wait for those under way (their answers kept)."""
        self.closed = True
        if self._under_way:
            await asyncio.wait(set(self._under_way), timeout=REFRESH_DRAIN)


class QboAuth:
    """One realm's bearer tokens: refreshed ahead of expiry, single-flight, persisted first."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        endpoints: Endpoints,
        app: App,
        *,
        tenant: str,
        realm_id: str,
        token: dict[str, Any],
        store: TokenStore,
        gate: RefreshGate | None = None,
    ) -> None:
        self._http, self._endpoints, self._app = http, endpoints, app
        self.tenant, self.realm_id = tenant, realm_id
        self._token = token
        self._store = store
        self._gate = gate or RefreshGate()
        self._lock = asyncio.Lock()
        self._unsaved = False  # a rotated token the store could not keep yet
        self.refreshes = 0
        self.adopted = 0  # tokens another process refreshed, taken from the store

    @property
    def refresh_expires_at(self) -> int | None:
        """When the refresh token dies (epoch seconds), if Intuit said.

        The earlier of its rolling expiry (100 days, renewed by each refresh) and the
        grant's hard maximum: past it, only a new consent helps.
        """
        known = [
            int(self._token[k])
            for k in ("refresh_expires_at", "hard_expires_at")
            if self._token.get(k) is not None
        ]
        return min(known) if known else None

    async def bearer(self) -> str:
        """The Authorization header value, refreshing first when due."""
        async with self._lock:
            if self._unsaved or self._due():
                # shielded: a caller cancelled mid-refresh must not lose Intuit's answer
                await asyncio.shield(self._gate.start(self._turn()))
            return f"Bearer {self._token['access_token']}"

    def rejected(self, header: str) -> None:
        """QBO said 401 to `header`: refresh before the next call, unless already done.

        Many calls may fail on the same dead token at once; only a report about the
        current token marks it, so they share one refresh.
        """
        if header == f"Bearer {self._token['access_token']}":
            self._token["expires_at"] = 0

    def _due(self) -> bool:
        due: int = self._token.get("expires_at", 0) - leeway(self._token)
        return due <= time.time()

    async def _turn(self) -> None:
        """In the store's turn: keep what is unsaved, adopt a newer stored token, or refresh."""
        async with self._store.turn(self.tenant, self.realm_id) as stored:
            if self._unsaved:
                await stored.keep(self._token)
                self._unsaved = False
            elif (
                stored.token and stored.token.get("refresh_token") != self.refresh_token
            ):
                # another syncd on the store refreshed: ours is spent, never presented
                self._token = stored.token
                self.adopted += 1
            if self._due():
                await self._refresh(stored)

    async def _refresh(self, stored: StoredToken) -> None:
        body = prepare_token_request(
            "refresh_token", refresh_token=self._token["refresh_token"]
        )
        fresh = await _token_call(self._http, self._endpoints, self._app, body)
        fresh.setdefault("refresh_token", self._token["refresh_token"])
        # the old refresh token is dead from now on: the new one is kept in memory at
        # once (a store that fails below must not lose it) and saved before any use
        self._token = fresh
        self.refreshes += 1
        self._unsaved = True
        await stored.keep(self._token)
        self._unsaved = False

    @property
    def refresh_token(self) -> str:
        """The current refresh token (for revoke)."""
        return str(self._token["refresh_token"])
