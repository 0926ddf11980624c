"""The one failure path of the QBO side (HS2)."""

from __future__ import annotations

from datetime import UTC, datetime

from syncd.engine import failures
from syncd.messages import SyncFailed
from syncd.models import ChangeSet, Failure

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _failure(**extra: object) -> Failure:
    fields = {
        "tenant": "acme",
        "invoice_id": "I-1",
        "operation": "invoice.push",
        "code": "6000",
        "message": "QBO refused",
        "event_id": None,
        "at": AT,
        "attempts": 2,
        "retryable": False,
        **extra,
    }
    return Failure(**fields)  # type: ignore[arg-type]


def test_a_failure_is_recorded_and_told():
    """HS2: the admin's panel gets the record; the CRM gets …/out/sync/failed."""
    changes = ChangeSet()
    failures.report(changes, _failure())
    assert changes.failures == [_failure()]
    [message] = changes.outbox
    assert isinstance(message, SyncFailed)
    assert (message.tenant, message.at) == ("acme", AT)
    assert message.data == {
        "invoice_id": "I-1",
        "operation": "invoice.push",
        "code": "6000",
        "message": "QBO refused",
        "attempts": 2,
        "retryable": False,
    }


def test_a_note_is_told_but_not_recorded():
    """OD9: "copied, not e-mailed" is worth saying, not a failure to retry."""
    changes = ChangeSet()
    failures.report(changes, _failure(code="note"), record=False)
    assert changes.failures == []
    assert changes.outbox[0].data["code"] == "note"
