"""The one failure path of the QBO side (HS2): a record for the admin, a word to the CRM.

A failed write, a refused QBO event and a note worth telling all reach the CRM the same
way, on `P/T/out/sync/failed`; failures (not notes) are also kept for the failed-syncs
panel and its retry.
"""

from __future__ import annotations

from syncd.messages import SyncFailed
from syncd.models import ChangeSet, Failure


def report(changes: ChangeSet, failure: Failure, *, record: bool = True) -> None:
    """Add the `…/out/sync/failed` message, and the failure record unless `record` is off."""
    if record:
        changes.failures.append(failure)
    data = {
        "invoice_id": failure.invoice_id,
        "operation": failure.operation,
        "code": failure.code,
        "message": failure.message,
        "attempts": failure.attempts,
        "retryable": failure.retryable,
    }
    changes.outbox.append(SyncFailed(tenant=failure.tenant, at=failure.at, data=data))
