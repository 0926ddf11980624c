"""What happens after a failure on the QBO side: one table, for every worker.

The job worker, the inbound worker and reconciliation each met QBO's errors and each
wrote its own `except` ladder; they now ask `next_step` and act on its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from syncd.exceptions import (
    QboAuthError,
    QboError,
    QboTransientError,
    ResolveError,
    StoreError,
)


class Step(StrEnum):
    """What the caller does next."""

    RECONNECT = "reconnect"  # the grant is gone: pause the realm until reconnected
    RETRY = "retry"  # may pass later: try again (after `retry_after` when QBO said)
    FAIL = "fail"  # will not pass as it is: record why; a person fixes the cause
    STORE = "store"  # the store cannot be used: raise it (intake and workers pause)
    DEFECT = "defect"  # a defect in syncd: log the traceback, record it, go on


@dataclass(frozen=True, slots=True)
class NextStep:
    """The step, and what a failure record says of it."""

    step: Step
    code: str
    message: str
    retry_after: float | None = None  # seconds QBO asked to wait (a 429)


def next_step(exc: Exception) -> NextStep:
    """The step after `exc`, with the code and message a failure record carries."""
    if isinstance(exc, StoreError):
        return NextStep(Step.STORE, "store", str(exc))
    if isinstance(exc, QboAuthError):
        return NextStep(
            Step.RECONNECT, "reconnect_needed", f"reconnect needed: {exc.message}"
        )
    if isinstance(exc, QboTransientError):
        return NextStep(
            Step.RETRY, exc.code or "transient", exc.message, exc.retry_after
        )
    if isinstance(exc, QboError):
        code = exc.code or type(exc).__name__
        return NextStep(Step.RETRY if exc.retryable else Step.FAIL, code, exc.message)
    if isinstance(exc, ResolveError):
        return NextStep(Step.FAIL, "not_resolved", str(exc))
    return NextStep(
        Step.DEFECT,
        "internal_error",
        f"internal error ({type(exc).__name__}): see syncd's log",
    )
