"""The one table from a failure on the QBO side to what happens next (issue 23)."""

from __future__ import annotations

import pytest

from syncd.exceptions import (
    QboAuthError,
    QboError,
    QboNotFoundError,
    QboRejectedError,
    QboStaleError,
    QboTransientError,
    ResolveError,
    StoreError,
)
from syncd.qbo.steps import NextStep, Step, next_step


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            QboAuthError("Intuit refused the token request (invalid_grant)"),
            NextStep(
                Step.RECONNECT,
                "reconnect_needed",
                "reconnect needed: Intuit refused the token request (invalid_grant)",
            ),
        ),
        (
            QboTransientError("throttled", "3001", retry_after=60.0),
            NextStep(Step.RETRY, "3001", "throttled", 60.0),
        ),
        (QboTransientError("HTTP 503"), NextStep(Step.RETRY, "transient", "HTTP 503")),
        (
            QboStaleError("stale object", "5010"),
            NextStep(Step.RETRY, "5010", "stale object"),
        ),
        (
            QboRejectedError("Duplicate Name Exists Error", "6240"),
            NextStep(Step.FAIL, "6240", "Duplicate Name Exists Error"),
        ),
        (
            QboNotFoundError("Object Not Found", "610"),
            NextStep(Step.FAIL, "610", "Object Not Found"),
        ),
        (QboError("odd answer"), NextStep(Step.FAIL, "QboError", "odd answer")),
        (
            ResolveError("QBO has no item named 'Gold Plan'"),
            NextStep(Step.FAIL, "not_resolved", "QBO has no item named 'Gold Plan'"),
        ),
        (
            StoreError("the store cannot be used: disk full"),
            NextStep(Step.STORE, "store", "the store cannot be used: disk full"),
        ),
        (
            OverflowError("date value out of range"),
            NextStep(
                Step.DEFECT,
                "internal_error",
                "internal error (OverflowError): see syncd's log",
            ),
        ),
    ],
)
def test_each_failure_has_one_next_step(exc, expected):
    """Job worker, inbound worker and reconciliation act on this table alike."""
    assert next_step(exc) == expected
