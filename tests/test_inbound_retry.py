"""Issue 22 §2: a webhook body whose fetch fails is retried on its own, then given up.

Before, a realm's failing notifications were stored again merged with every newer one
of the realm, with a new received_at, and retried every 5 s for ever.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from syncd import metrics
from syncd.inbound.worker import RETRY_ATTEMPTS, _again, _groups
from syncd.models import StoredWebhook
from syncd.qbo import webhooks
from syncd.qbo.webhooks import Notification

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _note(realm: str, invoice: str) -> Notification:
    return Notification(
        realm_id=realm,
        entity="Invoice",
        id=invoice,
        operation="Update",
        at="2026-11-27T12:00:00.000Z",
        key=f"Invoice:{invoice}:Update",
    )


def _stored(seq: int, notes: list[Notification], attempts: int = 0) -> StoredWebhook:
    by_realm: dict[str, list[Notification]] = {}
    for note in notes:
        by_realm.setdefault(note.realm_id, []).append(note)
    bodies = [json.loads(webhooks.legacy_body(r, n)) for r, n in by_realm.items()]
    body = {"eventNotifications": [b["eventNotifications"][0] for b in bodies]}
    return StoredWebhook(
        seq=seq,
        body=json.dumps(body).encode(),
        received_at=NOW - timedelta(minutes=seq),
        attempts=attempts,
    )


def test_a_retried_body_is_fetched_apart_from_the_realms_new_ones():
    """New bodies of a realm are fetched together; one that failed before, alone."""
    pending = [
        _stored(1, [_note("R1", "1")], attempts=2),
        _stored(2, [_note("R1", "2")]),
        _stored(3, [_note("R1", "3"), _note("R2", "9")]),
    ]
    groups = {
        (g.realm, tuple(n.id for n in g.notes), g.attempts) for g in _groups(pending)
    }
    assert groups == {("R1", ("2", "3"), 0), ("R2", ("9",), 0), ("R1", ("1",), 2)}


def test_a_failed_group_waits_longer_each_time_keeps_its_age_then_is_given_up():
    """5 s doubling to 5 min, its first delivery's time kept (the lag shows), 8 tries."""
    [group] = _groups([_stored(5, [_note("R1", "1")])])
    pauses = []
    for _ in range(RETRY_ATTEMPTS - 1):
        retry = _again(group, NOW)
        assert retry is not None
        assert retry.received_at == NOW - timedelta(minutes=5)
        pauses.append((retry.next_at - NOW).total_seconds())
        [group] = _groups(
            [
                StoredWebhook(
                    seq=9,
                    body=retry.body,
                    received_at=retry.received_at,
                    attempts=retry.attempts,
                )
            ]
        )
    assert pauses == [5, 10, 20, 40, 80, 160, 300]
    before = metrics.WEBHOOKS_GIVEN_UP._value.get()
    assert _again(group, NOW) is None
    assert metrics.WEBHOOKS_GIVEN_UP._value.get() == before + 1
