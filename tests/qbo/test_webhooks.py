"""QBO webhook bodies as syncd reads them (qbo.md §7, §10)."""

from __future__ import annotations

import json

from syncd.qbo.webhooks import legacy_body, parse


def _event(kind: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "type": kind,
        "time": "2026-11-27T10:00:00Z",
        "intuitentityid": "7",
        "intuitaccountid": "123",
        "data": data,
    }


def test_void_and_voided_are_one_operation():
    """§10: the subscription page says `void`; older deliveries said `voided`."""
    body = [_event("qbo.invoice.void.v1", {}), _event("qbo.invoice.voided.v1", {})]
    assert [n.operation for n in parse(json.dumps(body).encode())] == ["Void", "Void"]


def test_a_merge_names_what_was_merged_away_in_either_spelling():
    """§10: `deletedId` in a real delivery, `deletedid` in the docs."""
    for key in ("deletedId", "deletedid", "DeletedID"):
        [note] = parse(
            json.dumps([_event("qbo.customer.merged.v1", {key: "5"})]).encode()
        )
        assert (note.entity, note.operation, note.id, note.deleted_id) == (
            "Customer",
            "Merge",
            "7",
            "5",
        )
    legacy = {
        "eventNotifications": [
            {
                "realmId": "123",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Customer",
                            "id": "7",
                            "operation": "Merge",
                            "lastUpdated": "x",
                            "deletedId": "5",
                        }
                    ]
                },
            }
        ]
    }
    [note] = parse(json.dumps(legacy).encode())
    assert note.deleted_id == "5"


def test_notifications_stored_again_read_back_the_same():
    """What cannot be fetched now is stored again as a legacy body, and reads back whole."""
    body = [
        _event("qbo.customer.merged.v1", {"deletedId": "5"}),
        _event("qbo.invoice.updated.v1", {}),
    ]
    notes = parse(json.dumps(body).encode())
    again = parse(legacy_body("123", notes))
    assert [(n.entity, n.id, n.operation, n.at, n.deleted_id) for n in again] == [
        (n.entity, n.id, n.operation, n.at, n.deleted_id) for n in notes
    ]
