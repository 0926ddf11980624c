"""QBO's error bodies: the v3 Fault, the auth gateway's lower-case 401, and 429."""

from __future__ import annotations

import time
from typing import Any

from syncd.sandbox.clock import local_time


class QboFault(Exception):
    """An error QBO answers with; `status` is the HTTP status, `body` the JSON."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def fault_body(
    code: str, message: str, detail: str, kind: str, element: str = ""
) -> dict[str, Any]:
    """The v3 Fault: `Error` is always a list and `code` a string."""
    error = {"Message": message, "Detail": detail, "code": code, "element": element}
    return {"Fault": {"Error": [error], "type": kind}, "time": local_time(ms=True)}


def validation(code: str, message: str, detail: str, element: str = "") -> QboFault:
    """A 400 ValidationFault."""
    return QboFault(400, fault_body(code, message, detail, "ValidationFault", element))


def required(element: str) -> QboFault:
    """2020: a required field is missing."""
    return validation(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {element} is missing in the request",
        element,
    )


def invalid_reference(kind: str, ref: object) -> QboFault:
    """2500: a reference to an object that does not exist."""
    return validation(
        "2500",
        "Invalid Reference Id",
        f"Invalid Reference Id : {kind} assigned to this transaction has been deleted. "
        f"Before you can modify this transaction, you must restore {kind} {ref}",
    )


def not_found(entity: str, entity_id: str, deleted: bool) -> QboFault:
    """610: the object does not exist (or was deleted)."""
    detail = (
        "Another user has deleted this transaction."
        if deleted
        else f"Object Not Found : Something you're trying to use has been made inactive. "
        f"Check the fields with accounts, customers, items, vendors or employees. "
        f"({entity} {entity_id})"
    )
    return validation("610", "Object Not Found", detail)


def stale(entity: str) -> QboFault:
    """5010: the SyncToken sent is not the current one."""
    return validation(
        "5010",
        "Stale Object Error",
        "Stale Object Error : You and sandbox user were working on this at the same "
        f"time. sandbox user finished before you did, so your work was not saved. ({entity})",
    )


def duplicate_name() -> QboFault:
    """6240: DisplayName taken by a customer, vendor or employee."""
    return validation(
        "6240",
        "Duplicate Name Exists Error",
        "The name supplied already exists. : Another customer, vendor or employee is "
        "already using this name. Please use a different name.",
    )


def duplicate_doc_number(number: str) -> QboFault:
    """6140: DocNumber already used."""
    return validation(
        "6140",
        "Duplicate Doc Num",
        f"Duplicate Document Number Error : You must specify a different number. "
        f"This number has already been used. DocNumber={number}",
    )


def business(detail: str) -> QboFault:
    """6000: a business validation error."""
    return validation(
        "6000",
        "A business validation error has occurred while processing your request",
        detail,
    )


def bad_query(detail: str) -> QboFault:
    """4001: the query cannot be parsed or breaks a limit."""
    return validation("4001", "Invalid query", f"QueryValidationError: {detail}")


def unsupported(detail: str) -> QboFault:
    """500: unsupported operation."""
    return validation("500", "Unsupported Operation", detail)


def throttled() -> QboFault:
    """3001: over the per-realm limits (429)."""
    body = fault_body(
        "3001",
        "message=ThrottleExceeded; errorCode=003001; statusCode=429",
        "The request limit was reached.  Try again later",
        "SERVICE",
    )
    return QboFault(429, body)


def system_error() -> QboFault:
    """10000: QBO's own failure (injected)."""
    body = fault_body(
        "10000",
        "An application error has occurred while processing your request",
        "System Failure Error: An unexpected error occurred while accessing or saving "
        "your data. Please wait a few minutes and try again.",
        "SystemFault",
    )
    return QboFault(500, body)


def unauthorized(detail: str | None) -> QboFault:
    """3200 from the auth gateway: the lower-case shape QBO really sends."""
    body: dict[str, Any] = {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(time.time() * 1000),
        "status": None,
        "cdcresponse": [],
    }
    return QboFault(401, body)


def wrong_realm() -> QboFault:
    """100: a valid token used on another company."""
    body = fault_body(
        "100",
        "General Authentication Error",
        "AuthenticationErrorGeneral: SRV-110-Authentication Failure , statusCode: 401",
        "AuthenticationFault",
    )
    return QboFault(401, body)
