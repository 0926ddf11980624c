"""The one background loop (issue 23): rounds when woken, on a timer, never ended by one."""

from __future__ import annotations

import asyncio

import structlog

from syncd.exceptions import StoreError
from syncd.loop import Backoff, Loop, Said

SAID = Said(paused="thing_paused", failed="thing_failed")


async def test_a_busy_round_is_followed_at_once_and_a_failed_one_is_said():
    """Failures are logged (the store's as a pause) and the loop goes on; stop ends it."""
    results: list[object] = [5, 5, StoreError("disk full"), ValueError("bug"), 0]
    rounds = 0
    loop: Loop

    async def round_() -> int:
        nonlocal rounds
        rounds += 1
        result = results.pop(0) if results else 0
        if isinstance(result, Exception):
            raise result
        if not results:
            loop.stop()
        assert isinstance(result, int)
        return result

    loop = Loop(round_, interval=0.01, said=SAID, busy=5, worker="test")
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(5):
            await loop.run()
    assert rounds == 5
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [("thing_paused", "warning"), ("thing_failed", "error")]
    assert logs[0]["reason"] == "disk full" and logs[0]["worker"] == "test"


async def _let_others_run() -> None:
    """Hand the event loop over until every ready task has run as far as it can."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_quiet_round_waits_to_be_woken():
    """Below `busy`, the loop waits for `wake` (or the interval) before the next round."""
    rounds = asyncio.Queue[int]()
    count = 0

    async def round_() -> int:
        nonlocal count
        count += 1
        rounds.put_nowait(count)
        return 0

    loop = Loop(round_, interval=3600, said=SAID)
    task = asyncio.create_task(loop.run())
    assert await asyncio.wait_for(rounds.get(), 5) == 1
    await _let_others_run()
    assert rounds.empty()  # quiet: waiting
    loop.wake()
    assert await asyncio.wait_for(rounds.get(), 5) == 2
    loop.stop()
    await asyncio.wait_for(task, 5)
    assert loop.stopping


async def test_a_loop_may_wait_first_and_stop_before_any_round():
    """`first_round_at_start=False`: the first round comes after the interval."""
    ran = []

    async def round_() -> int:
        ran.append(1)
        return 0

    loop = Loop(round_, interval=3600, said=SAID, first_round_at_start=False)
    task = asyncio.create_task(loop.run())
    await _let_others_run()
    loop.stop()
    await asyncio.wait_for(task, 5)
    assert ran == []
    assert await loop.sleep(3600)  # stopped: returns at once


def test_a_backoff_doubles_to_its_cap_with_jitter_and_starts_over_when_reset():
    """The broker link's pauses between connections (bus/link.py)."""
    backoff = Backoff(0.2, 3.0)
    states = [backoff.backing_off]
    pauses = [backoff.pause() for _ in range(8)]
    bases = [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0]
    assert all(b * 0.5 <= p <= b * 1.5 for p, b in zip(pauses, bases, strict=True))
    states.append(backoff.backing_off)
    backoff.reset()
    states.append(backoff.backing_off)
    assert states == [False, True, False]
    assert backoff.pause() <= 0.3
