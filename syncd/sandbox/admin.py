"""The sandbox's own API (`/_sandbox/…`, clearly not QBO's): a person in QBO, and faults.

A bookkeeper's actions (a payment received, an invoice voided or created by hand, a
customer added, multicurrency switched on) change the company and notify webhooks exactly
as QBO's UI would; the API's requests can be inspected and faults injected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from syncd.sandbox import faults, operations, transactions
from syncd.sandbox.api import (
    SANDBOX,
    body_of,
    company_of,
    entity_of,
    envelope,
    json_response,
)
from syncd.sandbox.clock import local_time
from syncd.sandbox.company import Company

PREFIX = "/_sandbox"


def routes(app: web.Application) -> None:
    """Add the admin routes."""
    r = app.router
    r.add_get(PREFIX + "/realms", list_realms)
    r.add_post(PREFIX + "/realms", new_realm)
    r.add_post(PREFIX + "/realms/{realm}/multicurrency", multicurrency)
    r.add_post(PREFIX + "/realms/{realm}/automated-sales-tax", automated_sales_tax)
    r.add_get(PREFIX + "/realms/{realm}/{entity}/{id}", read)
    r.add_post(PREFIX + "/realms/{realm}/{entity}", create)
    r.add_post(PREFIX + "/realms/{realm}/{entity}/{id}", change)
    r.add_post(PREFIX + "/realms/{realm}/{entity}/{id}/{action}", act)
    r.add_get(PREFIX + "/requests", requests)
    r.add_delete(PREFIX + "/requests", clear_requests)
    r.add_get(PREFIX + "/faults", get_faults)
    r.add_put(PREFIX + "/faults", put_faults)
    r.add_post(PREFIX + "/tokens/expire", expire_tokens)
    r.add_post(PREFIX + "/tokens/revoke-all", revoke_tokens)
    r.add_get(PREFIX + "/tokens", issued_tokens)
    r.add_get(PREFIX + "/throttle", throttle_refusals)
    r.add_get(PREFIX + "/webhooks", webhooks)
    r.add_get(PREFIX + "/webhooks/outstanding", outstanding_webhooks)


async def list_realms(request: web.Request) -> web.Response:
    """The companies that exist."""
    companies = request.app[SANDBOX].companies.values()
    return json_response(
        [
            {"realmId": c.realm_id, "objects": {e: len(t) for e, t in c.tables.items()}}
            for c in companies
        ]
    )


async def new_realm(request: web.Request) -> web.Response:
    """A new company (as a new QBO sandbox company)."""
    company = request.app[SANDBOX].new_company()
    return json_response({"realmId": company.realm_id}, 201)


async def multicurrency(request: web.Request) -> web.Response:
    """Switch multicurrency on (only possible in QBO's UI, and never off again)."""
    company = company_of(request)
    prefs = company.tables["Preferences"]["1"]
    prefs["CurrencyPrefs"]["MultiCurrencyEnabled"] = True
    company.save("Preferences", prefs, "Update")
    return json_response(envelope("Preferences", prefs))


async def automated_sales_tax(request: web.Request) -> web.Response:
    """Switch automated sales tax on, at `{"rate": "7.25"}` percent for every customer.

    QBO then computes tax from the customer's address and ignores the tax codes sent;
    the sandbox stands one rate in for every address.
    """
    company = company_of(request)
    body = await request.json()
    rate = Decimal(str(body.get("rate", "7.25")))
    found = company.find("TaxRate", Name=transactions.AST_RATE_NAME)
    if found:
        found[0]["RateValue"] = rate
    else:
        company.save(
            "TaxRate",
            {
                "Name": transactions.AST_RATE_NAME,
                "Active": True,
                "RateValue": rate,
                "AgencyRef": {"value": "1"},
                "SpecialTaxType": "NONE",
                "DisplayType": "ReadOnly",
            },
            "Create",
        )
    prefs = company.tables["Preferences"]["1"]
    prefs["TaxPrefs"]["PartnerTaxEnabled"] = True
    company.save("Preferences", prefs, "Update")
    return json_response(envelope("Preferences", prefs))


async def read(request: web.Request) -> web.Response:
    """Read any object without a token."""
    entity = entity_of(request.match_info["entity"])
    return json_response(
        envelope(
            entity,
            operations.read(company_of(request), entity, request.match_info["id"]),
        )
    )


async def create(request: web.Request) -> web.Response:
    """Create as a bookkeeper would (a payment received, an invoice by hand, …)."""
    entity = entity_of(request.match_info["entity"])
    company = company_of(request)
    body = await body_of(request)
    with unheard(request, company):
        obj = operations.create(company, entity, body, allow_dup=True)
    return json_response(envelope(entity, company.snapshot(entity, obj["Id"])), 201)


async def change(request: web.Request) -> web.Response:
    """Edit fields as a bookkeeper would: a sparse update at the current SyncToken."""
    company = company_of(request)
    entity = entity_of(request.match_info["entity"])
    current = operations.read(company, entity, request.match_info["id"])
    body = {
        **await body_of(request),
        "Id": current["Id"],
        "SyncToken": current["SyncToken"],
        "sparse": True,
    }
    with unheard(request, company):
        operations.update(company, entity, body, allow_dup=True)
    return json_response(envelope(entity, company.snapshot(entity, current["Id"])))


async def act(request: web.Request) -> web.Response:
    """`void`, `delete` or `send` an object as a bookkeeper would."""
    company = company_of(request)
    entity = entity_of(request.match_info["entity"])
    current = operations.read(company, entity, request.match_info["id"])
    key = {"Id": current["Id"], "SyncToken": current["SyncToken"]}
    action = request.match_info["action"]
    with unheard(request, company):
        result = _act(company, entity, current, key, action, request.query)
    if action != "delete":  # as it stands after an aged change
        result = company.snapshot(entity, result["Id"]) or result
    return json_response(envelope(entity, result))


def _act(
    company: Company,
    entity: str,
    current: dict[str, Any],
    key: dict[str, Any],
    action: str,
    query: Any,
) -> dict[str, Any]:
    if action == "void":
        result = operations.void(company, entity, key, by_person=True)
    elif action == "delete":
        result = operations.delete(company, entity, key)
    elif action == "send":
        result = operations.send(company, entity, current["Id"], query.get("sendTo"))
    elif action == "merge":  # ?into=<the surviving Id>
        company.merge(entity, current["Id"], query.get("into", ""))
        result = operations.read(company, entity, query.get("into", ""))
    else:
        raise faults.unsupported(
            f"unknown action {action!r}: void, delete, send or merge"
        )
    return dict(result)


@contextmanager
def unheard(request: web.Request, company: Company) -> Iterator[None]:
    """A bookkeeper's change no webhook tells (`?webhook=0`), or made N days ago.

    `?age_days=N`: no webhook either, and dated back (past CDC's 30 days, only a query
    finds it). Issue 27 plays the drift a sync meets this way.
    """
    try:
        age = timedelta(days=float(request.query.get("age_days", "0")))
    except ValueError:
        raise faults.validation("2050", "Invalid age_days", "a number") from None
    quiet = age > timedelta(0) or request.query.get("webhook") in ("0", "false")
    listener, first = company.listener, len(company.changes)
    if quiet:
        company.listener = None
    try:
        yield
    finally:
        company.listener = listener
        if age:
            _date_back(company, first, age)


def _date_back(company: Company, first: int, age: timedelta) -> None:
    """Move the changes made since `first` back by `age`, as QBO's records would show."""
    for n in range(first, len(company.changes)):
        change = company.changes[n]
        then = change.at - age
        company.changes[n] = dataclasses.replace(change, at=then)
        obj = company.get(change.entity, change.id)
        if obj is not None:
            obj["MetaData"]["LastUpdatedTime"] = local_time(then)
            if change.operation == "Create":
                obj["MetaData"]["CreateTime"] = local_time(then)
        elif change.id in company.deleted[change.entity]:
            company.deleted[change.entity][change.id] = then


async def requests(request: web.Request) -> web.Response:
    """Every API request received (newest last), optionally for one realm."""
    realm = request.query.get("realm")
    entries = [
        e for e in request.app[SANDBOX].requests if realm is None or e["realm"] == realm
    ]
    return json_response(entries)


async def clear_requests(request: web.Request) -> web.Response:
    """Forget the request log."""
    request.app[SANDBOX].requests.clear()
    return web.Response(status=204)


async def get_faults(request: web.Request) -> web.Response:
    """The fault rates in force."""
    sandbox = request.app[SANDBOX]
    return json_response(
        {
            "api": dataclasses.asdict(sandbox.faults),
            "webhooks": dataclasses.asdict(sandbox.notifier.faults),
        }
    )


async def put_faults(request: web.Request) -> web.Response:
    """Set fault rates: `{"seed": 1, "api": {"rate_429": 0.2}, "webhooks": {"drop": 0.5}}`."""
    sandbox = request.app[SANDBOX]
    body = await body_of(request)
    try:
        sandbox.faults = dataclasses.replace(
            sandbox.faults, **_floats(body.get("api", {}))
        )
        sandbox.notifier.faults = dataclasses.replace(
            sandbox.notifier.faults, **_floats(body.get("webhooks", {}))
        )
    except TypeError as exc:
        raise faults.validation("2010", "Unknown fault", str(exc)) from exc
    if "seed" in body:
        sandbox.seed(int(body["seed"]))
    return await get_faults(request)


async def expire_tokens(request: web.Request) -> web.Response:
    """Make access tokens expire now (optionally one realm's)."""
    body = await body_of(request) if request.can_read_body else {}
    count = request.app[SANDBOX].oauth.expire_access(body.get("realm"))
    return json_response({"expired": count})


async def revoke_tokens(request: web.Request) -> web.Response:
    """Revoke every grant (optionally one realm's): as if the company disconnected the app."""
    body = await body_of(request) if request.can_read_body else {}
    count = request.app[SANDBOX].oauth.revoke_all(body.get("realm"))
    return json_response({"revoked": count})


async def issued_tokens(request: web.Request) -> web.Response:
    """Every access and refresh token issued, live or not (to grep logs for them).

    `spent_presented`: how many times a refresh token was presented after it had been
    replaced (Intuit answers invalid_grant: never by a correct client).
    """
    return json_response(request.app[SANDBOX].oauth.issued())


async def throttle_refusals(request: web.Request) -> web.Response:
    """Requests refused with 429 for passing a limit, by realm and limit.

    `{"9130…": {"minute": 0, "second": 2, "concurrent": 0, "batches": 0}}`: the limits
    a client passed (faults injected with `rate_429` are not counted here).
    """
    refused = request.app[SANDBOX].throttle.refused
    return json_response({realm: dict(counts) for realm, counts in refused.items()})


async def webhooks(request: web.Request) -> web.Response:
    """Every webhook delivery with its attempts and statuses."""
    return json_response([d.report() for d in request.app[SANDBOX].notifier.deliveries])


async def outstanding_webhooks(request: web.Request) -> web.Response:
    """How many changes and deliveries are not answered yet: 0 when all is told."""
    return json_response({"outstanding": request.app[SANDBOX].notifier.outstanding()})


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}
