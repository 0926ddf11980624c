"""QBO webhook bodies as syncd reads them (qbo.md §7, §10)."""

from __future__ import annotations

import json
from typing import Any

from syncd.qbo.webhooks import by_realm, legacy_body, parse


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


def test_a_body_is_stored_as_one_body_per_company_in_its_own_form():
    """Issue 25: each company's changes go to the replica that runs it; ids are kept."""
    events = [
        _event("qbo.invoice.updated.v1", {}) | {"id": f"e-{n}", "intuitaccountid": r}
        for n, r in enumerate(["123", "456", "123"])
    ]
    body = json.dumps(events).encode()
    parts = by_realm(body)
    assert sorted(parts) == ["123", "456"]
    assert [n.key for n in parse(parts["123"])] == ["e-0", "e-2"]
    assert [n.key for n in parse(parts["456"])] == ["e-1"]
    one = json.dumps(events[:1]).encode()
    assert by_realm(one) == {"123": one}  # one company: the body as it came
    legacy: dict[str, Any] = {
        "eventNotifications": [
            {"realmId": r, "dataChangeEvent": {"entities": []}} for r in ("1", "2")
        ]
    }
    split = by_realm(json.dumps(legacy).encode())
    assert {
        r: json.loads(b)["eventNotifications"][0]["realmId"] for r, b in split.items()
    } == {
        "1": "1",
        "2": "2",
    }
