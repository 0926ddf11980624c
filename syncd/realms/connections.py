"""QBO connections: one realm per tenant, OAuth connect/callback/disconnect, clients.

Reconnecting the same realm keeps every link; switching a tenant to another realm while
invoices are linked to the old one is refused unless the admin forces it (then the links
are forgotten, so nothing is written to the wrong books).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

import aiohttp
import structlog

from syncd import metrics
from syncd.clock import Clock
from syncd.config import Config
from syncd.exceptions import (
    ConfigError,
    ConnectError,
    QboError,
    QboTransientError,
    RealmTakenError,
)
from syncd.messages import Message
from syncd.models import (
    ChangeSet,
    Connection,
)
from syncd.qbo import (
    App,
    Endpoints,
    QboAuth,
    QboClient,
    RealmLimiter,
    RefreshGate,
    StoredToken,
    authorize_url,
    exchange_code,
    revoke,
)
from syncd.realms import books, consent
from syncd.realms import health as token_health
from syncd.realms.secrets import Cipher
from syncd.realms.settings import read_settings
from syncd.store import JobQueue, Realms, TokenTurn

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
# how long the callback waits to read QBO's settings: a replica that gave the company's
# lease away sends nothing for it until granted, which it never is again (the holder reads
# them before the first sync)
SETTINGS_WAIT = 10.0


class _SealedTokens:
    """QboAuth's TokenStore: the stored token opened in a turn, a rotated one sealed."""

    def __init__(self, store: Realms, cipher: Cipher) -> None:
        self._store, self._cipher = store, cipher

    @contextlib.asynccontextmanager
    async def turn(self, tenant: str, realm_id: str) -> AsyncIterator[StoredToken]:
        async with self._store.token_turn(tenant, realm_id) as turn:
            opened = self._cipher.open(turn.sealed) if turn.sealed else None
            yield _Opened(opened, turn, self._cipher)


class _Opened:
    """A turn's token in clear; kept sealed."""

    def __init__(
        self, token: dict[str, Any] | None, turn: TokenTurn, cipher: Cipher
    ) -> None:
        self.token, self._turn, self._cipher = token, turn, cipher

    async def keep(self, token: dict[str, Any]) -> None:
        await self._turn.keep(self._cipher.seal(token))


class Linked(Realms, JobQueue, Protocol):
    """What a tenant's connection needs of the store (books included)."""


class Connections:
    """Builds and caches each connected tenant's QboClient."""

    def __init__(
        self, config: Config, store: Linked, clock: Clock, cipher: Cipher | None
    ) -> None:
        self._config, self._store, self._clock = config, store, clock
        self._cipher = cipher
        self._session: aiohttp.ClientSession | None = None
        self.endpoints = Endpoints.for_environment(
            config.qbo.environment, config.qbo.base_url
        )
        self._clients: dict[str, QboClient] = {}
        self._connections: dict[str, Connection] = {}  # decrypted once, with the client
        # one client per tenant: two would each refresh the same rotating token
        self._building: dict[str, asyncio.Lock] = {}
        self._refreshes = RefreshGate()
        self.on_connected: Callable[[], None] = lambda: None
        self.on_published: Callable[[], None] = lambda: None  # outbox rows committed
        self.on_read: Callable[[str, datetime], None] = lambda realm, at: None
        self._limiters: dict[str, RealmLimiter] = {}  # realm → its quota as spent here
        self._by_tenant: dict[str, RealmLimiter] = {}  # the same, by tenant
        self.throttled: dict[str, datetime] = {}  # realm → QBO's last 429 to it
        # tenant → (status, days left) last published on `P/T/connection`
        self._said: dict[str, tuple[str, int | None]] = {}

    async def open(self) -> None:
        """One HTTP session for the process, with explicit timeouts."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    def stopping(self) -> None:
        """Start no token refresh from now on: its answer might never be kept."""
        self._refreshes.closed = True

    async def close(self) -> None:
        """Wait for the refreshes under way (their tokens kept), then close the session.

        The store must still be open: a rotated refresh token that is not kept is a lost
        connection.
        """
        await self._refreshes.close()
        if self._session is not None:
            await self._session.close()

    def _sealer(self) -> Cipher:
        if self._cipher is None:
            raise ConfigError(
                ["SYNCD_SECRET_KEY is needed to keep QBO tokens (encrypted)"]
            )
        return self._cipher

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Connections.open() was not called")
        return self._session

    @property
    def app(self) -> App:
        """The app's credentials (from the environment)."""
        secrets_ = self._config.secrets
        client_id, secret = (
            secrets_.get("QBO_CLIENT_ID"),
            secrets_.get("QBO_CLIENT_SECRET"),
        )
        if not client_id or not secret:
            raise ConfigError(
                [
                    "SYNCD_QBO_CLIENT_ID and SYNCD_QBO_CLIENT_SECRET are needed to connect QBO"
                ]
            )
        base = (
            self._config.http.public_url
            or f"http://{self._config.http.host}:{self._config.http.port}"
        )
        return App(client_id, secret, base.rstrip("/") + "/oauth/callback")

    async def start(self, tenant: str, force: bool) -> str:
        """Begin OAuth: a one-time state, and the consent URL to send the browser to."""
        if tenant not in self._config.tenants:
            raise ConnectError(f"tenant {tenant!r} is not served by this syncd", 404)
        state = secrets.token_urlsafe(24)
        await self._store.new_state(
            state, tenant, force, self._clock(), consent.STATE_TTL
        )
        return authorize_url(self.endpoints, self.app, state)

    async def finish(self, params: dict[str, str]) -> Connection:
        """The callback: check the state, trade the code, keep or refuse the realm."""
        taken = await self._store.take_state(params.get("state", ""))
        if taken is None or taken[2] < self._clock() - consent.STATE_TTL:
            raise ConnectError(
                "unknown or expired state: start again from /oauth/connect"
            )
        tenant, force, _ = taken
        if "error" in params or "code" not in params or "realmId" not in params:
            raise ConnectError(
                f"QuickBooks did not authorize: {params.get('error', 'no code')}"
            )
        realm_id = params["realmId"]
        await self._check_realm(tenant, realm_id, force)
        token = await exchange_code(
            self._http, self.endpoints, self.app, params["code"]
        )
        before = await self._store.connection(tenant)
        conn = Connection(
            tenant=tenant,
            realm_id=realm_id,
            status="connected",
            sealed_token=self._sealer().seal(token),
            connected_at=self._clock(),
            preferences=consent.checkpoint(before, realm_id),
        )
        try:
            await self._store.save_connection(conn)
        except RealmTakenError as exc:  # taken between the check and now
            raise consent.taken(realm_id, tenant, None) from exc
        self._forget(tenant)
        self._said.pop(tenant, None)  # a new grant: its health is said afresh
        await self._open_books(tenant, realm_id, conn.connected_at)
        try:
            conn.preferences = await asyncio.wait_for(
                self._read_settings(tenant), SETTINGS_WAIT
            )
        except (QboTransientError, TimeoutError) as exc:
            # connected all the same: the settings are read before the first sync
            why = (
                exc.message
                if isinstance(exc, QboTransientError)
                else "another replica holds the company's QBO quota"
            )
            conn.error = f"QBO's settings are not read yet ({why}); syncs wait for them"
            await self._store.set_connection_status(tenant, "connected", conn.error)
            log.warning("qbo_settings_deferred", tenant=tenant, error=why)
        self._forget(tenant)  # the client cached while reading them holds none
        await self._store.jobs_due_now(tenant, self._clock())
        if await self.client(tenant) is not None:
            await self.watch(tenant)  # the new grant's health, said at once
        self.on_connected()
        log.info("qbo_connected", tenant=tenant, realm=realm_id)
        return conn

    async def _check_realm(self, tenant: str, realm_id: str, force: bool) -> None:
        holder = await self._store.tenant_of_realm(realm_id)
        if holder is not None and holder != tenant:
            raise consent.taken(realm_id, tenant, holder)
        current = await self._store.connection(tenant)
        if current is None or current.realm_id == realm_id:
            return  # new, or the same company again: links stay
        linked = await self._store.linked_invoices(tenant)
        if linked and not force:
            raise ConnectError(
                f"tenant {tenant!r} has {linked} invoices linked to QBO company "
                f"{current.realm_id}; connecting {realm_id} would split the books. "
                "Connect again with force=1 to switch (the links are forgotten).",
                409,
            )

    async def open_all_books(self) -> None:
        """At start: each connected tenant's books are its company's.

        A switch a crash interrupted between the callback and its commit is applied now;
        `client()` itself changes nothing.
        """
        for tenant in self._config.tenants:
            conn = await self._store.connection(tenant)
            if conn is not None:
                await self._open_books(tenant, conn.realm_id, conn.connected_at)

    async def _open_books(
        self, tenant: str, realm_id: str, connected_at: datetime
    ) -> None:
        """The tenant's books are `realm_id`'s (a switch sets the old company aside)."""
        switched = await books.open_books(
            self._store,
            tenant,
            realm_id,
            connected_at,
            now=self._clock(),
        )
        if switched:
            self.on_published()

    async def _read_settings(self, tenant: str) -> dict[str, Any]:
        """Read the company's settings (OD2) and keep them with the connection."""
        client = await self.client(tenant)
        if client is None:
            return {}
        stored = await self._store.connection(tenant)
        settings = {
            **await read_settings(client),
            **consent.checkpoint(stored, client.realm_id),
        }
        await self._store.set_preferences(tenant, settings)
        conn = self._connections.get(tenant)
        if conn is not None:
            conn.preferences = settings
            if conn.error:  # the settings this error spoke of are read now
                conn.error = None
                await self._store.set_connection_status(tenant, "connected", None)
        return settings

    async def disconnect(self, tenant: str) -> bool:
        """Revoke the grant and forget the connection (HL9, RO1)."""
        conn = await self._store.connection(tenant)
        if conn is None:
            return False
        try:
            await revoke(
                self._http,
                self.endpoints,
                self.app,
                str(self._sealer().open(conn.sealed_token).get("refresh_token", "")),
            )
        except QboError as exc:  # forgetting it matters more than telling Intuit
            log.warning("qbo_revoke_failed", tenant=tenant, error=str(exc))
        await self._store.delete_connection(tenant)
        self._forget(tenant)
        log.info("qbo_disconnected", tenant=tenant, realm=conn.realm_id)
        return True

    async def status(self, tenant: str) -> Connection | None:
        """The stored connection."""
        return await self._store.connection(tenant)

    async def connected(self, tenant: str) -> tuple[QboClient, Connection] | None:
        """The tenant's client and connection, or None when it is not connected.

        A connection whose settings could not be read at the callback (QBO throttling)
        reads them now; QboTransientError says to try again later.
        """
        client = await self.client(tenant)
        if client is None:
            return None
        conn = self._connections[tenant]
        if "accounts" not in conn.preferences:
            await self._read_settings(tenant)
        return client, conn

    def limiter(self, tenant: str) -> RealmLimiter:
        """The tenant's company quota as this process spends it (made on first use).

        The lease of a tenant carries it between replicas (`record`, `charge`), before
        this process may have built the tenant's client.
        """
        made = self._by_tenant.get(tenant)
        if made is None:
            qbo = self._config.qbo
            made = self._by_tenant[tenant] = RealmLimiter(
                per_minute=qbo.requests_per_minute,
                # sandbox companies allow 10 requests a second (qbo.md §10); one spare
                per_second=9 if qbo.environment == "sandbox" else None,
                window=60.0 / qbo.time_scale,
                batches_per_minute=qbo.batch_requests_per_minute,
            )
        return made

    def quota_record(self, tenant: str, ahead: float) -> str:
        """The tenant's quota as spent here, and a grant for `ahead` seconds (JSON)."""
        return json.dumps(self.limiter(tenant).record(ahead))

    def quota_grant(self, tenant: str, record: str) -> None:
        """Send what `record`, now kept in the lease, grants."""
        self.limiter(tenant).grant(json.loads(record))

    def quota_charge(self, tenant: str, record: str | None) -> None:
        """Count the quota the lease's last holder spent (its `record`) as spent here.

        A record that cannot be read counts as the whole minute spent now.
        """
        limiter = self.limiter(tenant)
        try:
            spent = json.loads(record) if record else {}
            limiter.charge(spent)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("quota_record_unreadable", tenant=tenant, reason=str(exc))
            full = [limiter.per_minute, limiter.batches_per_minute]
            limiter.charge({"ahead": full})

    def _forget(self, tenant: str) -> None:
        self._clients.pop(tenant, None)
        self._connections.pop(tenant, None)

    async def client(self, tenant: str) -> QboClient | None:
        """The tenant's client, or None when it is not connected (or needs reconnecting).

        Built once, whoever asks first: concurrent first callers (the job worker and the
        reconciliation, right after a start) wait for the one being built.
        """
        cached = self._clients.get(tenant)
        if cached is not None:
            return cached
        async with self._building.setdefault(tenant, asyncio.Lock()):
            cached = self._clients.get(tenant)
            if cached is not None:
                return cached
            return await self._build(tenant)

    async def _build(self, tenant: str) -> QboClient | None:
        conn = await self._store.connection(tenant)
        if conn is None or conn.status != "connected":
            return None
        auth = QboAuth(
            self._http,
            self.endpoints,
            self.app,
            tenant=tenant,
            realm_id=conn.realm_id,
            token=self._sealer().open(conn.sealed_token),
            store=_SealedTokens(self._store, self._sealer()),
            gate=self._refreshes,
        )
        qbo = self._config.qbo
        own = self.limiter(tenant)
        limiter = self._limiters.setdefault(conn.realm_id, own)
        if limiter is not own:  # another tenant on the same company: one quota
            # its grant goes on: the other tenant's lease keeps granting it
            limiter.charge(own.record(0), hold=False)
            self._by_tenant[tenant] = limiter
        client = QboClient(
            self._http,
            self.endpoints.api,
            auth,
            limiter,
            timeout=qbo.request_timeout,
            throttle_pause=qbo.throttle_pause / qbo.time_scale,
            observe=functools.partial(self._observed, conn.realm_id),
        )
        self._clients[tenant] = client
        self._connections[tenant] = conn
        return client

    def refresh_expiries(self) -> dict[str, int]:
        """When each connected tenant's refresh token dies (epoch seconds), if known."""
        return {
            tenant: expires
            for tenant, client in self._clients.items()
            if (expires := client.auth.refresh_expires_at) is not None
        }

    def _observed(self, realm: str, kind: str, status: int, seconds: float) -> None:
        now = self._clock()
        metrics.qbo_call(realm, kind, status, seconds, now)
        if kind == "read" and status:  # answered: Intuit counts it
            self.on_read(realm, now)
        if status == 429:
            self.throttled[realm] = now

    async def needs_reconnect(self, tenant: str, reason: str) -> None:
        """invalid_grant: pause the realm until the admin reconnects; nothing is lost.

        Said everywhere at once, the first time: the log, the connection's status (admin
        API), the retained `P/T/connection` state and `…/out/connection/warning`.
        """
        self._forget(tenant)
        conn = await self._store.connection(tenant)
        await self._store.set_connection_status(tenant, "needs_reconnect", reason)
        log.error("qbo_reconnect_needed", tenant=tenant, reason=reason)
        if conn is None or conn.status == "needs_reconnect":
            return  # said already
        health = token_health.Health(
            "needs_reconnect", None, None, f"reconnect needed: {reason}"
        )
        now = self._clock()
        changes = ChangeSet(
            outbox=[
                token_health.state_message(tenant, conn.realm_id, health, now),
                token_health.warning_message(tenant, "reconnect_needed", health, now),
            ]
        )
        await self._store.commit(changes)
        self._said.pop(tenant, None)
        self.on_published()

    async def watch(self, tenant: str) -> None:
        """Say how the tenant's connection stands; warn 30 and 7 days before it ends."""
        client, conn = self._clients.get(tenant), self._connections.get(tenant)
        if client is None or conn is None:
            return
        now = self._clock()
        health = token_health.assess(now, client.auth.refresh_expires_at)
        if self._said.get(tenant) == (health.status, health.days_left):
            return  # nothing new since the last state published
        outbox: list[Message] = [
            token_health.state_message(tenant, conn.realm_id, health, now)
        ]
        level = token_health.due_warning(health, conn.warned)
        if level is not None:
            outbox.append(
                token_health.warning_message(tenant, f"{level}_days", health, now)
            )
            log.warning(
                "qbo_connection_expiring",
                tenant=tenant,
                days_left=health.days_left,
                expires_at=str(health.expires_at),
            )
            conn.warned = level
            await self._store.set_warned(tenant, level)
        await self._store.commit(ChangeSet(outbox=outbox))
        self._said[tenant] = (health.status, health.days_left)
        self.on_published()
