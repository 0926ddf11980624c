"""QBO's fault answers → syncd's QboError tree (issue 23: a decision with a test of its own)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.exceptions import (
    QboAuthError,
    QboNotFoundError,
    QboRejectedError,
    QboStaleError,
    QboTransientError,
)
from syncd.qbo.errors import THROTTLE_PAUSE, fault_of, from_response


def _fault(code: str, message: str = "m", detail: str = "", gateway: bool = False):
    error = {"code": code, "Message": message, "Detail": detail}
    if gateway:
        return {"fault": {"error": [{k.lower(): v for k, v in error.items()}]}}
    return {"Fault": {"Error": [error], "type": "ValidationFault"}}


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (429, {}, QboTransientError, ""),
        (400, _fault("3001", "ThrottleExceeded"), QboTransientError, "3001"),
        (503, "<html>down</html>", QboTransientError, ""),
        (
            400,
            _fault("10000", "An application error has occurred"),
            QboTransientError,
            "10000",
        ),
        (401, {}, QboAuthError, ""),
        (
            403,
            _fault("3200", "AuthenticationFailed", gateway=True),
            QboAuthError,
            "3200",
        ),
        (400, _fault("100", "General Authentication Error"), QboAuthError, "100"),
        (400, _fault("5010", "Stale Object Error"), QboStaleError, "5010"),
        (400, _fault("610", "Object Not Found"), QboNotFoundError, "610"),
        (400, _fault("6240", "Duplicate Name Exists Error"), QboRejectedError, "6240"),
        (400, [], QboRejectedError, ""),
    ],
)
def test_each_answer_becomes_the_most_specific_error(status, body: Any, kind, code):
    """qbo.md §3: codes first, then the HTTP status; both fault shapes read."""
    error = from_response(status, body)
    assert type(error) is kind
    assert error.code == code


def test_a_throttle_asks_for_qbos_pause_and_the_detail_is_kept():
    """A 429 carries the minute QBO asks for; a Detail that adds to the Message is said."""
    throttled = from_response(429, _fault("3001", "ThrottleExceeded"))
    assert isinstance(throttled, QboTransientError)
    assert throttled.retry_after == THROTTLE_PAUSE
    rejected = from_response(
        400, _fault("6000", "A business validation error", "Amount")
    )
    assert rejected.message == "QBO 6000: A business validation error (Amount)"
    assert rejected.detail == "Amount"
    same = from_response(
        400, _fault("2020", "Required param missing", "Required param missing")
    )
    assert same.message == "QBO 2020: Required param missing"


def test_a_200_may_still_carry_a_fault():
    """qbo.md §3: a Fault inside a 200 is a fault; a plain answer is not."""
    assert isinstance(fault_of(_fault("610")), QboNotFoundError)
    assert fault_of({"Invoice": {"Id": "1"}}) is None
    assert fault_of("text") is None
