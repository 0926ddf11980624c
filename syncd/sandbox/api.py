"""The Accounting API v3 routes: /v3/company/{realmId}/…."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import simplejson
from aiohttp import web

from syncd.sandbox import faults, operations, query
from syncd.sandbox.clock import local_time, parse_time, utc_now
from syncd.sandbox.company import ENTITIES, NOT_IN_CDC, Company
from syncd.sandbox.pdf import invoice_pdf
from syncd.sandbox.state import Sandbox

SANDBOX = web.AppKey("sandbox", Sandbox)
CDC_DAYS, CDC_MAX = 30, 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(app: web.Application) -> None:
    """Add the /v3 routes."""
    base = "/v3/company/{realm}"
    app.router.add_route("*", base + "/query", handle_query)
    app.router.add_post(base + "/batch", handle_batch)
    app.router.add_get(base + "/cdc", handle_cdc)
    app.router.add_get(base + "/preferences", handle_preferences)
    app.router.add_get(base + "/exchangerate", handle_exchange_rate)
    app.router.add_post(base + "/{entity}/{id}/send", handle_send)
    app.router.add_get(base + "/{entity}/{id}/pdf", handle_pdf)
    app.router.add_get(base + "/{entity}/{id}", handle_read)
    app.router.add_post(base + "/{entity}", handle_write)


def json_response(body: Any, status: int = 200) -> web.Response:
    """QBO JSON; amounts are Decimal and go out as exact JSON numbers."""
    return web.Response(
        body=simplejson.dumps(body, use_decimal=True).encode(),
        status=status,
        content_type="application/json",
    )


def company_of(request: web.Request) -> Company:
    """The realm in the path (authorization already checked it)."""
    company = request.app[SANDBOX].companies.get(request.match_info["realm"])
    if company is None:
        raise faults.wrong_realm()
    return company


def entity_of(name: str) -> str:
    """URL entity name → QBO's, or 400 for an entity the sandbox does not have."""
    entity = ENTITIES.get(name.lower())
    if entity is None:
        raise faults.unsupported(f"Unsupported entity: {name}")
    return entity


async def body_of(request: web.Request) -> dict[str, Any]:
    """Parse a JSON body with exact decimals."""
    try:
        body = simplejson.loads(await request.read(), use_decimal=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise faults.validation(
            "2010",
            "Request has invalid or unsupported property",
            f"Could not parse the request body: {exc}",
        ) from exc
    if not isinstance(body, dict):
        raise faults.validation(
            "2010",
            "Request has invalid or unsupported property",
            "The body must be a JSON object",
        )
    return body


def envelope(entity: str, obj: Any) -> dict[str, Any]:
    """`{"Invoice": {...}, "time": …}`."""
    return {entity: obj, "time": local_time(ms=True)}


async def handle_read(request: web.Request) -> web.Response:
    """GET …/{entity}/{id}."""
    entity = entity_of(request.match_info["entity"])
    return json_response(
        envelope(
            entity,
            operations.read(company_of(request), entity, request.match_info["id"]),
        )
    )


async def handle_preferences(request: web.Request) -> web.Response:
    """GET …/preferences."""
    return json_response(
        envelope(
            "Preferences", operations.read(company_of(request), "Preferences", "1")
        )
    )


# the sandbox's market: home-currency units per unit of each currency, whatever the day
RATES = {
    "EUR": Decimal("1.0842"),
    "GBP": Decimal("1.2671"),
    "CAD": Decimal("0.7315"),
    "USD": Decimal(1),
}


async def handle_exchange_rate(request: web.Request) -> web.Response:
    """GET …/exchangerate?sourcecurrencycode=EUR&asofdate=YYYY-MM-DD (qbo.md §10)."""
    company_of(request)
    code = request.query.get("sourcecurrencycode", "")
    day = request.query.get("asofdate") or local_time()[:10]
    if code not in RATES:
        raise faults.validation(
            "2010",
            "Request has invalid or unsupported property",
            f"sourcecurrencycode {code!r} is not a currency this company knows",
        )
    rate = {
        "SourceCurrencyCode": code,
        "TargetCurrencyCode": "USD",
        "Rate": RATES[code],
        "AsOfDate": day,
    }
    return json_response(envelope("ExchangeRate", rate))


async def handle_write(request: web.Request) -> web.Response:
    """POST …/{entity}: create, update, delete, void, with `requestid` replay."""
    sandbox, company = request.app[SANDBOX], company_of(request)
    entity = entity_of(request.match_info["entity"])
    request_id = request.query.get("requestid")
    if request_id:
        replay = company.request_ids.get(request_id)
        if replay is not None:
            return json_response(replay[1], replay[0])
    body = await body_of(request)
    result = write(company, entity, body, request.query)
    response = envelope(entity, result)
    if request_id:
        company.request_ids[request_id] = (200, response)
    await _maybe_hold_back(sandbox)
    return json_response(response)


def write(
    company: Company, entity: str, body: dict[str, Any], params: Any
) -> dict[str, Any]:
    """Dispatch one write by `operation` and `include`."""
    operation = params.get("operation", "")
    include = params.get("include", "")
    allow_dup = "allowduplicatedocnum" in include
    if operation == "delete":
        return operations.delete(company, entity, body)
    # node-quickbooks sends `operation=update&include=void`, quickbooks-ruby `include=void`
    if operation == "void" or (operation in ("", "update") and include == "void"):
        return operations.void(company, entity, body)
    if operation not in ("", "update", "create"):
        raise faults.unsupported(f"Operation {operation} is not supported")
    if body.get("Id"):
        return operations.update(company, entity, body, allow_dup)
    return operations.create(company, entity, body, allow_dup)


async def _maybe_hold_back(sandbox: Sandbox) -> None:
    """Fault: the write is committed, the answer comes too late for the client."""
    if (
        sandbox.faults.slow_after_commit
        and sandbox.rng.random() < sandbox.faults.slow_after_commit
    ):
        await asyncio.sleep(sandbox.faults.slow_seconds)


async def handle_query(request: web.Request) -> web.Response:
    """GET …/query?query= or POST with the statement as the body."""
    text = request.query.get("query")
    if text is None and request.method == "POST":
        text = (await request.read()).decode("utf-8", "replace")
    if not text:
        raise faults.required("query")
    return json_response(
        {
            "QueryResponse": run_query(company_of(request), text),
            "time": local_time(ms=True),
        }
    )


def run_query(company: Company, text: str) -> dict[str, Any]:
    """Parse and run one statement against a company."""
    parsed = query.parse(text)
    return query.run(parsed, company.tables[parsed.entity])


async def handle_batch(request: web.Request) -> web.Response:
    """POST …/batch: up to 30 items, each answered on its own (Fault per item).

    With `requestid` (at most 36 characters, each bId then at most 10: qbo.md §5) a
    repeated batch gets the first answer again, as single writes do.
    """
    sandbox, company = request.app[SANDBOX], company_of(request)
    request_id = request.query.get("requestid")
    if request_id and (replay := company.request_ids.get(request_id)) is not None:
        return json_response(replay[1], replay[0])
    body = await body_of(request)
    items = body.get("BatchItemRequest")
    if not isinstance(items, list) or not items:
        raise faults.required("BatchItemRequest")
    limit = sandbox.config.limits.batch_items
    if len(items) > limit:
        raise faults.validation(
            "4000",
            "Batch limit exceeded",
            f"A batch may hold at most {limit} items; it held {len(items)}",
        )
    if request_id and (
        len(request_id) > BATCH_REQUEST_ID
        or any(len(str(i.get("bId", ""))) > BATCH_ID for i in items)
    ):
        raise faults.validation(
            "4000",
            "Request ID too long",
            f"a batch's requestid may have at most {BATCH_REQUEST_ID} characters and "
            f"each bId at most {BATCH_ID}",
        )
    answers = [_batch_item(company, item) for item in items]
    response = {"BatchItemResponse": answers, "time": local_time(ms=True)}
    if request_id:
        company.request_ids[request_id] = (200, response)
    await _maybe_hold_back(sandbox)
    return json_response(response)


BATCH_REQUEST_ID, BATCH_ID = 36, 10


def _batch_item(company: Company, item: dict[str, Any]) -> dict[str, Any]:
    bid = str(item.get("bId", ""))
    try:
        if "Query" in item:
            return {"bId": bid, "QueryResponse": run_query(company, str(item["Query"]))}
        entity = next((e for e in ENTITIES.values() if e in item), None)
        if entity is None:
            raise faults.required("entity")
        operation = item.get("operation", "create")
        params = {"operation": "delete"} if operation == "delete" else {}
        if operation == "void":
            params = {"operation": "void"}
        return {"bId": bid, entity: write(company, entity, item[entity], params)}
    except faults.QboFault as fault:
        inner = fault.body.get("Fault") or fault.body
        return {"bId": bid, "Fault": inner}


async def handle_cdc(request: web.Request) -> web.Response:
    """GET …/cdc?entities=…&changedSince=…: 30 days back, at most 1,000 objects."""
    company = company_of(request)
    names = [
        n.strip() for n in request.query.get("entities", "").split(",") if n.strip()
    ]
    since_text = request.query.get("changedSince", "")
    if not names or not since_text:
        raise faults.required("entities" if not names else "changedSince")
    try:
        since = parse_time(since_text)
    except ValueError:
        raise faults.validation(
            "2170", "Invalid Date", f"changedSince {since_text!r} is not a date or time"
        ) from None
    if since < utc_now() - timedelta(days=CDC_DAYS):
        raise faults.validation(
            "4000",
            "Invalid changedSince",
            f"changedSince may go back at most {CDC_DAYS} days",
        )
    return json_response(
        {
            "CDCResponse": [{"QueryResponse": _cdc(company, names, since)}],
            "time": local_time(ms=True),
        }
    )


def _cdc(company: Company, names: list[str], since: Any) -> list[dict[str, Any]]:
    found: list[tuple[Any, str, dict[str, Any]]] = []
    for name in names:
        entity = entity_of(name)
        if entity in NOT_IN_CDC:
            raise faults.unsupported(
                f"{entity} is not available in change data capture"
            )
        for obj in company.tables[entity].values():
            changed = parse_time(obj["MetaData"]["LastUpdatedTime"])
            if changed >= since:
                found.append((changed, entity, obj))
        for entity_id, when in company.deleted[entity].items():
            if when >= since:
                stub = {
                    "Id": entity_id,
                    "status": "Deleted",
                    "domain": "QBO",
                    "MetaData": {"LastUpdatedTime": local_time(when)},
                }
                found.append((when, entity, stub))
    found.sort(key=lambda f: f[0])
    found = found[:CDC_MAX]
    out = []
    for name in names:
        entity = entity_of(name)
        rows = [obj for _, e, obj in found if e == entity]
        out.append(
            {entity: rows, "startPosition": 1, "maxResults": len(rows)} if rows else {}
        )
    return out


async def handle_send(request: web.Request) -> web.Response:
    """POST …/invoice/{id}/send[?sendTo=]."""
    entity = entity_of(request.match_info["entity"])
    if entity not in ("Invoice", "SalesReceipt"):
        raise faults.unsupported(f"{entity} cannot be sent")
    obj = operations.send(
        company_of(request),
        entity,
        request.match_info["id"],
        request.query.get("sendTo"),
    )
    return json_response(envelope(entity, obj))


async def handle_pdf(request: web.Request) -> web.Response:
    """GET …/invoice/{id}/pdf: a real PDF; errors are JSON Faults."""
    entity = entity_of(request.match_info["entity"])
    if entity not in ("Invoice", "SalesReceipt"):
        raise faults.unsupported(f"{entity} has no PDF")
    company = company_of(request)
    obj = operations.read(company, entity, request.match_info["id"])
    name = company.tables["CompanyInfo"]["1"]["CompanyName"]
    return web.Response(
        body=invoice_pdf(name, obj, entity), content_type="application/pdf"
    )
