"""Token health, pure: how long until a reconnect, and each warning said once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from syncd.realms.health import assess, due_warning, state_message, warning_message

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _in(days: float) -> int:
    return int((NOW + timedelta(days=days)).timestamp())


def test_a_connection_is_fine_then_expiring_then_ended():
    """qbo.md §8, §10: 30 days before the end it is `expiring`; after, reconnect."""
    assert assess(NOW, None).status == "connected"  # Intuit said nothing: no guess
    assert assess(NOW, _in(100)).status == "connected"
    soon = assess(NOW, _in(20.5))
    assert (soon.status, soon.days_left) == ("expiring", 20)
    assert "ends in 20 days" in str(soon.reason)
    ended = assess(NOW, _in(-1))
    assert ended.status == "needs_reconnect"


@given(st.lists(st.floats(min_value=-2, max_value=60), min_size=1, max_size=30))
def test_each_warning_is_said_once_and_in_order(days_seen):
    """Whatever days pass (in order), 30 days and 7 days are each said at most once."""
    warned: int | None = None
    said: list[int] = []
    for days in sorted(days_seen, reverse=True):
        level = due_warning(assess(NOW, _in(days)), warned)
        if level is not None:
            said.append(level)
            warned = level
    assert said in ([], [30], [7], [30, 7])
    if any(0 <= d < 7 for d in days_seen):
        assert said[-1:] == [7]


def test_the_messages_are_the_contracts():
    """`P/T/connection` retained; `P/T/out/connection/warning` with its level."""
    health = assess(NOW, _in(6.5))
    state = state_message("acme", "9130", health, NOW)
    assert (state.subtopic(), state.retain) == ("connection", True)
    data = state.data
    assert (data["status"], data["days_left"], data["realm_id"]) == (
        "expiring",
        6,
        "9130",
    )
    warning = warning_message("acme", "7_days", health, NOW)
    assert (warning.subtopic(), warning.retain) == ("out/connection/warning", False)
    assert warning.data["level"] == "7_days"
