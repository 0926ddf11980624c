"""QboClient: typed calls on QBO's Accounting API over an injected aiohttp session.

Every write carries a `requestid` (QBO replays the first answer for a repeated id);
transient failures retry briefly in the call (never a 429: Intuit asks for a minute's
pause, which the durable job retry gives); a 401 forces one token refresh and one retry.
Amounts travel as exact decimals (simplejson with Decimal).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import simplejson
import stamina

from syncd.exceptions import QboAuthError, QboError, QboTransientError
from syncd.qbo.auth import QboAuth
from syncd.qbo.errors import THROTTLE_PAUSE, fault_of, from_response, map_errors
from syncd.qbo.throttle import RealmLimiter

MINOR_VERSION = "75"
_ATTEMPTS = 3
PAGE = 1000  # QBO's MAXRESULTS ceiling
BATCH_ITEMS = 30  # QBO's recommended maximum per batch request (qbo.md §6)
NO_RESULT = "no_result"  # the code of an item QBO's batch answer left out: written?


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One write of a batch: `bid` (at most 10 characters) names its answer."""

    bid: str
    entity: str
    operation: str  # "create" or "update"
    body: dict[str, Any]


@dataclass(slots=True)
class _Tries:
    """What one call has been through so far."""

    refreshed: bool = False  # the token was refreshed after a 401
    unanswered: bool = False  # a try got no answer: a write may have been done
    final: bool = False  # what failed must not be tried again within this call

    def worth_another(self, exc: Exception) -> bool:
        """A transient fault without QBO's Retry-After, in a call not yet ended."""
        return (
            isinstance(exc, QboTransientError)
            and exc.retry_after is None
            and not self.final
        )


class QboClient:
    """One realm's API."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_base: str,
        auth: QboAuth,
        limiter: RealmLimiter | None = None,
        *,
        timeout: float = 30.0,
        throttle_pause: float = THROTTLE_PAUSE,
        observe: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._throttle_pause = throttle_pause
        self._base = f"{api_base.rstrip('/')}/v3/company/{auth.realm_id}"
        self._auth = auth
        self._limiter = limiter or RealmLimiter()
        self.calls: dict[str, int] = {"read": 0, "write": 0}
        # told of each request: its kind (read, write), HTTP status (0: none), seconds
        self._observe = observe

    @property
    def limiter(self) -> RealmLimiter:
        """The realm's quota as this process spends it."""
        return self._limiter

    @property
    def auth(self) -> QboAuth:
        """The realm's tokens."""
        return self._auth

    @property
    def realm_id(self) -> str:
        """The company this client talks to."""
        return self._auth.realm_id

    async def create(
        self, entity: str, body: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        """Create an object; return it as QBO stored it."""
        return await self._write(entity, body, request_id)

    async def update(
        self, entity: str, body: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        """Update (sparse when `body["sparse"]`); `Id` and `SyncToken` must be in `body`."""
        return await self._write(entity, body, request_id)

    async def batch(
        self, items: list[BatchItem], request_id: str
    ) -> dict[str, dict[str, Any] | QboError]:
        """Up to 30 creates and updates in one request; each item's object or its fault.

        QBO answers each item on its own: one refused item leaves the others written.
        The batch as a whole fails (throttled, unreachable, a token refused) as any call;
        `request_id` (at most 36 characters) makes a resent batch get the first answer.
        """
        if not 0 < len(items) <= BATCH_ITEMS:
            raise ValueError(
                f"a batch holds 1 to {BATCH_ITEMS} items, not {len(items)}"
            )
        request = {
            "BatchItemRequest": [
                {"bId": i.bid, "operation": i.operation, i.entity: i.body}
                for i in items
            ]
        }
        data = simplejson.dumps(request, use_decimal=True).encode()
        answer = await self._call(
            "POST",
            "batch",
            params={"requestid": request_id[:36]},
            data=data,
            kind="write",
            batch=True,
        )
        by_bid = {str(r.get("bId")): r for r in answer.get("BatchItemResponse", [])}
        results: dict[str, dict[str, Any] | QboError] = {}
        for item in items:
            found = by_bid.get(item.bid)
            if found is None or not (
                "Fault" in found or isinstance(found.get(item.entity), dict)
            ):
                results[item.bid] = QboTransientError(
                    f"QBO's batch answer has no result for item {item.bid}",
                    NO_RESULT,
                )
            elif "Fault" in found:
                results[item.bid] = from_response(400, {"Fault": found["Fault"]})
            else:
                results[item.bid] = dict(found[item.entity])
        return results

    async def void(
        self, entity: str, key: dict[str, str], request_id: str
    ) -> dict[str, Any]:
        """Void an Invoice (`operation=void`) or a Payment/SalesReceipt (`include=void`)."""
        if entity == "Invoice":
            return await self._write(entity, key, request_id, {"operation": "void"})
        body = {**key, "sparse": True}
        return await self._write(
            entity, body, request_id, {"operation": "update", "include": "void"}
        )

    async def delete(
        self, entity: str, key: dict[str, str], request_id: str
    ) -> dict[str, Any]:
        """Delete a transaction (`operation=delete`)."""
        return await self._write(entity, key, request_id, {"operation": "delete"})

    async def send(
        self, entity: str, entity_id: str, send_to: str | None = None
    ) -> dict[str, Any]:
        """Have QBO e-mail the invoice."""
        params = {"sendTo": send_to} if send_to else {}
        path = f"{entity.lower()}/{entity_id}/send"
        body = await self._call(
            "POST",
            path,
            params=params,
            data=b"",
            kind="write",
            content_type="application/octet-stream",
        )
        return dict(body[entity])

    async def read(self, entity: str, entity_id: str) -> dict[str, Any]:
        """Read one object."""
        body = await self._call("GET", f"{entity.lower()}/{entity_id}", kind="read")
        return dict(body[entity])

    async def query(self, statement: str) -> dict[str, Any]:
        """Run one query statement; return its QueryResponse."""
        body = await self._call(
            "GET", "query", params={"query": statement}, kind="read"
        )
        return dict(body.get("QueryResponse") or {})

    async def query_all(self, statement: str, entity: str) -> list[dict[str, Any]]:
        """Every row of a query, page by page: QBO answers at most 1,000 at a time.

        `statement` has no STARTPOSITION/MAXRESULTS of its own (qbo.md §10: a listing
        that does not page is silently cut short).
        """
        rows: list[dict[str, Any]] = []
        while True:
            answer = await self.query(
                f"{statement} startposition {len(rows) + 1} maxresults {PAGE}"
            )
            page = list(answer.get(entity, []))
            rows += page
            if len(page) < PAGE:
                return rows

    async def cdc(
        self, entities: list[str], changed_since: str
    ) -> dict[str, list[dict[str, Any]]]:
        """Change data capture: objects of `entities` changed since (≤ 30 days, ≤ 1,000)."""
        params = {"entities": ",".join(entities), "changedSince": changed_since}
        body = await self._call("GET", "cdc", params=params, kind="read")
        found: dict[str, list[dict[str, Any]]] = {}
        for response in body.get("CDCResponse", []):
            for part in response.get("QueryResponse", []):
                for entity in entities:
                    found.setdefault(entity, []).extend(part.get(entity, []))
        return found

    async def preferences(self) -> dict[str, Any]:
        """The company's preferences (home currency, multicurrency, custom fields)."""
        body = await self._call("GET", "preferences", kind="read")
        return dict(body["Preferences"])

    async def exchange_rate(self, currency: str, day: str) -> Decimal:
        """Home-currency units per unit of `currency` on `day` (QBO's own rate)."""
        params = {"sourcecurrencycode": currency, "asofdate": day}
        body = await self._call("GET", "exchangerate", params=params, kind="read")
        return Decimal(str(body["ExchangeRate"]["Rate"]))

    async def pdf(self, entity: str, entity_id: str) -> bytes:
        """The PDF QBO renders for an invoice or sales receipt."""
        data: bytes = await self._call(
            "GET",
            f"{entity.lower()}/{entity_id}/pdf",
            kind="read",
            accept="application/pdf",
            raw=True,
        )
        return data

    async def _write(
        self,
        entity: str,
        body: dict[str, Any],
        request_id: str,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        data = simplejson.dumps(body, use_decimal=True).encode()
        query = {"requestid": request_id[:50], **(params or {})}
        answer = await self._call(
            "POST", entity.lower(), params=query, data=data, kind="write"
        )
        return dict(answer[entity])

    async def _call(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        raw: bool = False,
        batch: bool = False,
    ) -> Any:
        request = (method, path, kind, params, data, content_type, accept, raw)
        tries = _Tries()
        # transient faults are tried again (stamina: jittered, growing pauses); a 429 with
        # Retry-After is not (the realm pauses as QBO asks, elsewhere), nor a failed refresh
        async for attempt in stamina.retry_context(
            on=tries.worth_another,
            attempts=_ATTEMPTS,
            timeout=None,
            wait_initial=0.4,
            wait_max=4.0,
            wait_jitter=0.6,
        ):
            with attempt:
                try:
                    return await self._authorised(request, tries, batch=batch)
                except QboError as exc:
                    # a 429 is a refusal; anything else may have been done before it failed
                    if isinstance(exc, QboTransientError) and exc.retry_after is None:
                        tries.unanswered = True
                    exc.maybe_written = tries.unanswered and kind == "write"
                    raise
        raise AssertionError("unreachable")  # pragma: no cover -- stamina re-raises

    async def _authorised(
        self, request: tuple[Any, ...], tries: _Tries, *, batch: bool
    ) -> Any:
        """One try with the current token; a 401 refreshes it once per call, tries again.

        A token may die early; a 401 on the last transient try must still get its
        refresh, or the call ends without an answer (the chaos run found it did).
        """
        while True:
            try:
                header = await self._auth.bearer()
            except QboError:
                tries.final = True  # the refresh failed: said as it is
                raise
            try:
                return await self._once(*request, authorization=header, batch=batch)
            except QboAuthError as exc:
                if tries.refreshed:
                    # refused again with the token just refreshed: the grant itself is
                    # fine (a dead one fails at the refresh, invalid_grant); try later
                    tries.final = True
                    raise QboTransientError(
                        f"{exc.message}, again after a refresh", exc.code, exc.detail
                    ) from exc
                tries.refreshed = True
                self._auth.rejected(header)

    async def _once(
        self,
        method: str,
        path: str,
        kind: str,
        params: dict[str, str] | None,
        data: bytes | None,
        content_type: str,
        accept: str,
        raw: bool,
        *,
        authorization: str,
        batch: bool = False,
    ) -> Any:
        headers = {"Authorization": authorization, "Accept": accept}
        if data is not None:
            headers["Content-Type"] = content_type
        query = {"minorversion": MINOR_VERSION, **(params or {})}
        async with self._limiter.slot(batch):
            self.calls[kind] += 1
            started, status = time.monotonic(), 0
            try:
                with map_errors():
                    url = f"{self._base}/{path}"
                    request = self._http.request(
                        method,
                        url,
                        params=query,
                        data=data,
                        headers=headers,
                        timeout=self._timeout,
                    )
                    async with request as r:
                        status, payload, ctype = (
                            r.status,
                            await r.read(),
                            r.content_type,
                        )
            finally:
                if self._observe is not None:
                    self._observe(kind, status, time.monotonic() - started)
        if raw and status == 200 and ctype != "application/json":
            return payload
        body = _parse(payload)
        error = from_response(status, body) if status != 200 else fault_of(body)
        if isinstance(error, QboTransientError) and error.retry_after:
            error.retry_after = self._throttle_pause
        if error is not None:
            raise error
        return body


def _parse(payload: bytes) -> Any:
    try:
        return simplejson.loads(payload, use_decimal=True)
    except (ValueError, UnicodeDecodeError):
        return {
            "Fault": {
                "Error": [
                    {"code": "", "Message": payload[:200].decode("utf-8", "replace")}
                ]
            }
        }
