"""Issue 14, reads budget: QBO reads counted per company and month, kept in the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from syncd.exceptions import StoreError
from syncd.realms.reads import ReadsMeter

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
LAST_MONTH = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)


async def test_reads_add_up_by_company_and_month_across_flushes(store):
    """Counted in memory, added to the store at each flush; what is not flushed shows too."""
    meter = ReadsMeter(store, budget=1000, clock=lambda: NOW)
    for _ in range(3):
        meter.count("r1", NOW)
    meter.count("r1", LAST_MONTH)
    meter.count("r2", NOW)
    await meter.flush()
    meter.count("r1", NOW)  # not flushed yet
    assert await meter.used() == {"r1": 4, "r2": 1}
    assert await meter.used("2026-10") == {"r1": 1}
    await meter.flush()
    again = ReadsMeter(store, budget=1000, clock=lambda: NOW)  # after a restart
    assert await again.used() == {"r1": 4, "r2": 1}
    assert await store.reads() == [
        ("r1", "2026-11", 4),
        ("r2", "2026-11", 1),
        ("r1", "2026-10", 1),
    ]


async def test_nearing_the_budget_is_said_once_a_month(store):
    """80 % of `[qbo] monthly_reads_budget`, across companies: one warning, not one a read."""
    meter = ReadsMeter(store, budget=10, clock=lambda: NOW)
    with capture_logs() as logs:
        for n in range(12):
            meter.count(f"r{n % 2}", NOW)
            await meter.flush()
    warnings = [e for e in logs if e["event"] == "qbo_reads_near_budget"]
    assert len(warnings) == 1
    assert (warnings[0]["reads"], warnings[0]["budget"]) == (8, 10)


async def test_a_failed_flush_keeps_the_count(store):
    """The store refuses (closed here): the reads are kept for the next flush."""
    meter = ReadsMeter(store, budget=0, clock=lambda: NOW)
    meter.count("r1", NOW)
    await store.close()
    with pytest.raises(StoreError):
        await meter.flush()
    await store.open()
    await meter.flush()
    assert await meter.used() == {"r1": 1}
