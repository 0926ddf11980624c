"""QBO connections: one realm per tenant, OAuth connect/callback/disconnect, clients.

Reconnecting the same realm keeps every link; switching a tenant to another realm while
invoices are linked to the old one is refused unless the admin forces it (then the links
are forgotten, so nothing is written to the wrong books).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog

from syncd.config import Config
from syncd.exceptions import ConfigError, QboError, RealmTakenError
from syncd.models import Connection
from syncd.qbo import (
    App,
    Endpoints,
    QboAuth,
    QboClient,
    RealmLimiter,
    authorize_url,
    exchange_code,
    revoke,
)
from syncd.store.sqlite import SqliteStore

log = structlog.get_logger(__name__)
STATE_TTL = timedelta(minutes=10)


def custom_field_ids(prefs: dict[str, Any]) -> dict[str, str]:
    """Sales-form custom field names → DefinitionId, from Preferences.SalesFormsPrefs."""
    found: dict[str, str] = {}
    for group in prefs.get("SalesFormsPrefs", {}).get("CustomField", []):
        for entry in group.get("CustomField", []):
            name = str(entry.get("Name", ""))
            if name.startswith("SalesFormsPrefs.SalesCustomName") and entry.get(
                "StringValue"
            ):
                found[str(entry["StringValue"])] = name.removeprefix(
                    "SalesFormsPrefs.SalesCustomName"
                )
    return found


class ConnectError(Exception):
    """A connect or callback that cannot go on; `reason` is for the admin."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def _taken(realm_id: str, tenant: str, holder: str | None) -> ConnectError:
    who = f"tenant {holder!r}" if holder else "another tenant"
    return ConnectError(
        f"QBO company {realm_id} is already connected to {who}: a company belongs to "
        f"one tenant, so {tenant!r} was not connected. Consent with {tenant!r}'s own "
        f"company, or disconnect {who} first.",
        409,
    )


class Connections:
    """Builds and caches each connected tenant's QboClient."""

    def __init__(self, config: Config, store: SqliteStore) -> None:
        self._config, self._store = config, store
        self._session: aiohttp.ClientSession | None = None
        self.endpoints = Endpoints.for_environment(
            config.qbo.environment, config.qbo.base_url
        )
        self._clients: dict[str, QboClient] = {}
        self._connections: dict[str, Connection] = {}  # decrypted once, with the client
        self.on_connected: Callable[[], None] = lambda: None
        self._limiters: dict[str, RealmLimiter] = {}

    async def open(self) -> None:
        """One HTTP session for the process, with explicit timeouts."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

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
        await self._store.new_state(state, tenant, force, datetime.now(UTC), STATE_TTL)
        return authorize_url(self.endpoints, self.app, state)

    async def finish(self, params: dict[str, str]) -> Connection:
        """The callback: check the state, trade the code, keep or refuse the realm."""
        taken = await self._store.take_state(params.get("state", ""))
        if taken is None or taken[2] < datetime.now(UTC) - STATE_TTL:
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
        conn = Connection(tenant=tenant, realm_id=realm_id, status="connected", token=token,
                          connected_at=datetime.now(UTC))  # fmt: skip
        try:
            await self._store.save_connection(conn)
        except RealmTakenError as exc:  # taken between the check and now
            raise _taken(realm_id, tenant, None) from exc
        self._forget(tenant)
        conn.preferences = await self._read_preferences(tenant)
        await self._store.set_preferences(tenant, conn.preferences)
        self._forget(tenant)  # the client cached while reading them holds none
        await self._store.jobs_due_now(tenant, datetime.now(UTC))
        self.on_connected()
        log.info("qbo_connected", tenant=tenant, realm=realm_id)
        return conn

    async def _check_realm(self, tenant: str, realm_id: str, force: bool) -> None:
        holder = await self._store.tenant_of_realm(realm_id)
        if holder is not None and holder != tenant:
            raise _taken(realm_id, tenant, holder)
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
        await self._store.unlink_invoices(tenant)

    async def _read_preferences(self, tenant: str) -> dict[str, Any]:
        client = await self.client(tenant)
        if client is None:
            return {}
        prefs = await client.preferences()
        currency = prefs.get("CurrencyPrefs", {})
        # OD2: what the company has, read once here so syncs need no look-ups for it
        taxes = await client.query("select * from TaxCode maxresults 1000")
        accounts = await client.query("select * from Account maxresults 1000")
        return {
            "home_currency": currency.get("HomeCurrency", {}).get("value", "USD"),
            "multicurrency": bool(currency.get("MultiCurrencyEnabled")),
            "custom_fields": custom_field_ids(prefs),
            "tax_codes": {t["Name"]: str(t["Id"]) for t in taxes.get("TaxCode", [])},
            "accounts": {a["Name"]: str(a["Id"]) for a in accounts.get("Account", [])},
        }

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
                str(conn.token.get("refresh_token", "")),
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
        """The tenant's client and connection, or None when it is not connected."""
        client = await self.client(tenant)
        return (client, self._connections[tenant]) if client is not None else None

    def _forget(self, tenant: str) -> None:
        self._clients.pop(tenant, None)
        self._connections.pop(tenant, None)

    async def client(self, tenant: str) -> QboClient | None:
        """The tenant's client, or None when it is not connected (or needs reconnecting)."""
        cached = self._clients.get(tenant)
        if cached is not None:
            return cached
        conn = await self._store.connection(tenant)
        if conn is None or conn.status != "connected":
            return None
        auth = QboAuth(self._http, self.endpoints, self.app, tenant=tenant, realm_id=conn.realm_id,
                       token=conn.token, store=self._store)  # fmt: skip
        limiter = self._limiters.setdefault(conn.realm_id, RealmLimiter())
        qbo = self._config.qbo
        client = QboClient(
            self._http, self.endpoints.api, auth, limiter,
            timeout=qbo.request_timeout, throttle_pause=qbo.throttle_pause,
        )  # fmt: skip
        self._clients[tenant] = client
        self._connections[tenant] = conn
        return client

    async def needs_reconnect(self, tenant: str, reason: str) -> None:
        """invalid_grant: pause the realm until the admin reconnects; nothing is lost."""
        self._forget(tenant)
        await self._store.set_connection_status(tenant, "needs_reconnect", reason)
        log.error("qbo_reconnect_needed", tenant=tenant, reason=reason)
