"""Time, as every part of syncd reads it: one injected clock, timezone-aware UTC.

Components take a `Clock` instead of calling `datetime.now`, so tests and a future
replica set can drive time, and nothing reads a naive or local time by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)
