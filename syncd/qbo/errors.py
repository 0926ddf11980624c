"""One translation from aiohttp failures and QBO fault bodies to syncd's QboError tree."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp

from syncd.exceptions import (
    QboAuthError,
    QboError,
    QboNotFoundError,
    QboRejectedError,
    QboStaleError,
    QboTransientError,
)

# Intuit asks for a minute's pause after a 429 (qbo.md §6); the retry schedule honours it
THROTTLE_PAUSE = 60.0


@contextlib.contextmanager
def map_errors() -> Iterator[None]:
    """Turn aiohttp's client errors into QboTransientError, raised `from` the cause."""
    try:
        yield
    except TimeoutError as exc:
        raise QboTransientError("QBO did not answer in time") from exc
    except aiohttp.ClientError as exc:
        raise QboTransientError(f"QBO could not be reached: {exc}") from exc


def from_response(status: int, body: Any) -> QboError:
    """The most specific QboError for a non-success answer."""
    fault = _first_error(body)
    code, message, detail = (
        fault.get("code", ""),
        fault.get("message", ""),
        fault.get("detail", ""),
    )
    text = f"QBO {code or status}: {message}".strip()
    if detail and detail != message:
        text = f"{text} ({detail})"  # QBO's Detail says what exactly is wrong
    if status == 429 or code == "3001":
        return QboTransientError(text, code, detail, retry_after=THROTTLE_PAUSE)
    if status >= 500 or code == "10000":
        return QboTransientError(text, code, detail)
    if status == 401 or code in ("3200", "100"):
        return QboAuthError(
            f"{text} (reconnect needed if a refresh does not help)", code, detail
        )
    if code == "5010":
        return QboStaleError(text, code, detail)
    if code == "610":
        return QboNotFoundError(text, code, detail)
    return QboRejectedError(text, code, detail)


def _first_error(body: Any) -> dict[str, str]:
    """QBO's two fault shapes: `Fault.Error[]` (v3) and `fault.error[]` (the gateway)."""
    if not isinstance(body, dict):
        return {}
    fault = body.get("Fault") or body.get("fault") or {}
    errors = fault.get("Error") or fault.get("error") or []
    if not errors or not isinstance(errors[0], dict):
        return {}
    first = errors[0]
    return {
        "code": str(first.get("code") or ""),
        "message": str(first.get("Message") or first.get("message") or ""),
        "detail": str(first.get("Detail") or first.get("detail") or ""),
    }


def fault_of(body: Any) -> QboError | None:
    """A 200 answer may still carry a Fault (qbo.md §3)."""
    if isinstance(body, dict) and ("Fault" in body or "fault" in body):
        return from_response(400, body)
    return None
