"""The admin API described as OpenAPI 3.1, served at `/openapi.json`.

Every `/api/*` route is here with what it answers; tests/integration/test_openapi.py has
schemathesis call each one as documented and check the answers against this.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from syncd.models import SyncState

_NULLABLE_STR = {"type": ["string", "null"]}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_STATE = {
    "type": "object",
    "required": ["invoice_id", "status", "version", "sync_state", "updated_at"],
    "properties": {
        "invoice_id": {"type": "string"},
        "status": {"type": "string"},
        "version": {"type": "integer"},
        "sync_state": {"enum": [s.value for s in SyncState]},
        "qbo_id": _NULLABLE_STR,
        "qbo_doc_number": _NULLABLE_STR,
        "qbo_status": _NULLABLE_STR,
        "balance": _NULLABLE_STR,
        "total": _NULLABLE_STR,
        "error": _NULLABLE_STR,
        "last_synced_at": _NULLABLE_STR,
        "updated_at": {"type": "string"},
    },
}
_HISTORY = {
    "type": "object",
    "required": ["from", "to", "cause", "at"],
    "properties": {
        "from": _NULLABLE_STR,
        "to": {"type": "string"},
        "cause": {"type": "string"},
        "event_id": _NULLABLE_STR,
        "at": {"type": "string"},
    },
}
_FAILURE = {
    "type": "object",
    "required": ["id", "operation", "code", "message", "attempts", "retryable", "at"],
    "properties": {
        "id": {"type": "integer"},
        "invoice_id": _NULLABLE_STR,
        "operation": {"type": "string"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "attempts": {"type": "integer"},
        "retryable": {"type": "boolean"},
        "at": {"type": "string"},
        "resolved_at": _NULLABLE_STR,
    },
}
_CONNECTION = {
    "type": "object",
    "required": ["connected"],
    "properties": {
        "connected": {"type": "boolean"},
        "realm_id": {"type": "string"},
        "status": {"type": "string"},
        "error": _NULLABLE_STR,
        "preferences": {"type": "object"},
    },
}

_MONTH = {
    "type": "object",
    "required": ["month", "reads"],
    "properties": {"month": {"type": "string"}, "reads": {"type": "integer"}},
}
_READS = {
    "type": "object",
    "required": ["realm_id", "month", "reads", "months", "app"],
    "properties": {
        "realm_id": {"type": "string"},
        "month": {"type": "string"},
        "reads": {"type": "integer"},
        "months": {"type": "array", "items": _MONTH},
        "app": {
            "type": "object",
            "required": ["month", "reads", "budget"],
            "properties": {
                "month": {"type": "string"},
                "reads": {"type": "integer"},
                "budget": {"type": "integer"},
                "share": {"type": ["number", "null"]},
            },
        },
    },
}
# issue 26: what paid, refunded or credited an invoice
_PAYMENT: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "amount", "state"],
    "properties": {
        "kind": {"enum": ["payment", "receipt", "qbo_payment", "refund"]},
        "payment_id": {"type": ["string", "null"]},
        "refunds": {"type": ["string", "null"]},
        "amount": {"type": "string"},
        "state": {"enum": ["recorded", "removing", "removed"]},
        "qbo_id": {"type": ["string", "null"]},
        "at": {"type": "string", "format": "date-time"},
    },
}
_CREDIT_NOTE: dict[str, Any] = {
    "type": "object",
    "required": ["credit_note_id", "sync_state", "status"],
    "properties": {
        "credit_note_id": {"type": "string"},
        "sync_state": {"type": "string"},
        "status": {"enum": ["draft", "open", "voided"]},
        "version": {"type": "integer"},
        "invoice_id": {"type": ["string", "null"]},
        "qbo_id": {"type": ["string", "null"]},
        "qbo_doc_number": {"type": ["string", "null"]},
        "qbo_status": {"type": ["string", "null"]},
        "total": {"type": ["string", "null"]},
        "remaining_credit": {"type": ["string", "null"]},
        "last_synced_at": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
    },
}


_DRIFT: dict[str, Any] = {
    "type": "object",
    "required": ["checked_at", "invoices_checked", "qbo_reads", "differences"],
    "properties": {
        "checked_at": _NULLABLE_STR,
        "started_at": {"type": "string"},
        "invoices_checked": {"type": "integer"},
        "qbo_invoices": {"type": "integer"},
        "qbo_reads": {"type": "integer"},
        "reads_target": {"type": "integer"},
        "healed": {"type": "boolean"},
        "running": _NULLABLE_STR,
        "requested_at": _NULLABLE_STR,
        "differences": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "invoice_id",
                    "qbo_id",
                    "field",
                    "crm",
                    "qbo",
                    "cause",
                    "action",
                    "found_at",
                ],
                "properties": {
                    "invoice_id": _NULLABLE_STR,
                    "qbo_id": _NULLABLE_STR,
                    "field": {"type": "string"},
                    "crm": _NULLABLE_STR,
                    "qbo": _NULLABLE_STR,
                    "cause": {"type": "string"},
                    "action": {"type": "string"},
                    "found_at": {"type": "string"},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


_UNAUTHORIZED = _json(_ERROR, "no or a wrong admin token")
_NO_TENANT = _json(_ERROR, "no such tenant, invoice or failure")
_TENANT = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _op(
    summary: str, responses: dict[str, Any], *params: dict[str, Any]
) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_TENANT, *params],
        "responses": {**responses, "401": _UNAUTHORIZED, "404": _NO_TENANT},
    }


def _path_param(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "syncd admin API", "version": "1"},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"admin": []}],
    "paths": {
        "/api/tenants/{tenant}/connection": {
            "get": _op(
                "The tenant's QuickBooks connection (never its tokens)",
                {"200": _json(_CONNECTION, "connected (or waiting for a reconnect)")},
            ),
        },
        "/api/tenants/{tenant}/disconnect": {
            "post": _op(
                "Revoke and forget the QuickBooks connection (HL9, RO1)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"disconnected": {"type": "boolean"}},
                        },
                        "revoked and forgotten",
                    )
                },
            ),
        },
        "/api/tenants/{tenant}/invoices": {
            "get": _op(
                "Invoices with their sync state, newest change first, a page at a "
                'time (the next page\'s address in the `Link` header, rel="next")',
                {
                    "200": _json({"type": "array", "items": _STATE}, "the invoices"),
                    "400": _json(_ERROR, "a limit or cursor that is not one"),
                },
                {
                    "name": "sync_state",
                    "in": "query",
                    "required": False,
                    "schema": _STATE["properties"]["sync_state"],  # type: ignore[index]
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ),
        },
        "/api/tenants/{tenant}/invoices/{invoice}": {
            "get": _op(
                "One invoice, its transition history, payments and credit notes",
                {
                    "200": _json(
                        {
                            "allOf": [
                                _STATE,
                                {
                                    "type": "object",
                                    "required": ["history", "payments", "credit_notes"],
                                    "properties": {
                                        "history": {"type": "array", "items": _HISTORY},
                                        "payments": {
                                            "type": "array",
                                            "items": _PAYMENT,
                                        },
                                        "credit_notes": {
                                            "type": "array",
                                            "items": _CREDIT_NOTE,
                                        },
                                    },
                                },
                            ]
                        },
                        "the invoice",
                    )
                },
                _path_param("invoice"),
            ),
        },
        "/api/tenants/{tenant}/invoices/{invoice}/pdf": {
            "get": _op(
                "The QuickBooks PDF of a synced invoice (HS8)",
                {
                    "200": {
                        "description": "QBO's PDF",
                        "content": {"application/pdf": {"schema": {"type": "string"}}},
                    },
                    "409": _json(_ERROR, "the tenant is not connected"),
                    "502": _json(_ERROR, "QuickBooks refused"),
                },
                _path_param("invoice"),
            ),
        },
        "/api/tenants/{tenant}/reads": {
            "get": _op(
                "QBO reads of the tenant's company by month, and the app's this month "
                "(Intuit meters reads, qbo.md §10)",
                {"200": _json(_READS, "the counts")},
            ),
        },
        "/api/tenants/{tenant}/drift": {
            "get": _op(
                "The latest drift check (issue 27): each difference between the CRM "
                "and QBO with its cause and action; ?field=, ?cause=, ?invoice_id= "
                "filter",
                {"200": _json(_DRIFT, "the report")},
            ),
        },
        "/api/tenants/{tenant}/drift/check": {
            "post": _op(
                "Ask for a drift check now (?heal=0: list only, mend nothing)",
                {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["tenant", "heal"],
                            "properties": {
                                "tenant": {"type": "string"},
                                "heal": {"type": "boolean"},
                            },
                        },
                        "asked for",
                    ),
                    "409": _json(_ERROR, "the tenant is not connected to QuickBooks"),
                },
            ),
        },
        "/api/tenants/{tenant}/failures": {
            "get": _op(
                "The failed syncs (HS2), unresolved first",
                {"200": _json({"type": "array", "items": _FAILURE}, "the failures")},
            ),
        },
        "/api/tenants/{tenant}/failures/{failure}/retry": {
            "post": _op(
                "Run the failed QBO job again, with what it carried",
                {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["queued", "invoice_id"],
                            "properties": {
                                "queued": {"type": "string"},
                                "invoice_id": _NULLABLE_STR,
                            },
                        },
                        "queued",
                    ),
                    "409": _json(_ERROR, "not a failure a retry can help"),
                },
                _path_param("failure", "integer"),
            ),
        },
    },
}


async def openapi(request: web.Request) -> web.Response:
    """The document (no token needed to read it)."""
    return web.json_response(DOCUMENT)
