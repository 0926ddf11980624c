"""QBO webhooks: the `intuit-signature` check and both payload formats, parsed."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import simplejson

# QBO's subscription page says `void` (qbo.md §10); older deliveries said `voided`
_OPERATIONS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "voided": "Void",
    "void": "Void",
    "emailed": "Emailed",
    "merged": "Merge",
}
_ENTITIES = {
    "invoice": "Invoice",
    "payment": "Payment",
    "customer": "Customer",
    "salesreceipt": "SalesReceipt",
    "item": "Item",
    "account": "Account",
    "creditmemo": "CreditMemo",
    "refundreceipt": "RefundReceipt",
    "purchase": "Purchase",
    "deposit": "Deposit",
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One entity change QBO told us about; `key` is what makes a repeat a repeat."""

    realm_id: str
    entity: str
    id: str
    operation: str
    at: str
    key: str
    deleted_id: str | None = None  # a merge: the object merged away into `id`


def verify(body: bytes, signature: str | None, verifier: str) -> bool:
    """base64(HMAC-SHA256(verifier token, raw body)) compared in constant time."""
    if not signature or not verifier:
        return False
    expected = base64.b64encode(
        hmac.new(verifier.encode(), body, hashlib.sha256).digest()
    )
    return hmac.compare_digest(expected, signature.strip().encode())


def legacy_body(realm_id: str, notes: list[Notification]) -> bytes:
    """One realm's notifications as an `eventNotifications` body (to store them again)."""
    entities = []
    for n in notes:
        entity = {
            "name": n.entity,
            "id": n.id,
            "operation": n.operation,
            "lastUpdated": n.at,
        }
        if n.deleted_id:
            entity["deletedId"] = n.deleted_id
        entities.append(entity)
    note = {"realmId": realm_id, "dataChangeEvent": {"entities": entities}}
    return simplejson.dumps({"eventNotifications": [note]}).encode()


def parse(body: bytes) -> list[Notification]:
    """Legacy `eventNotifications` or a CloudEvents array; ValueError when neither."""
    data = simplejson.loads(body)
    if isinstance(data, dict) and "eventNotifications" in data:
        return [n for note in data["eventNotifications"] for n in _legacy(note)]
    if isinstance(data, list):
        return [_cloud_event(event) for event in data]
    raise ValueError("neither eventNotifications nor a CloudEvents array")


def by_realm(body: bytes) -> dict[str, bytes]:
    """A body as one body per company, each in its own form (CloudEvents ids kept).

    ValueError (or KeyError, TypeError) when it is not a notification, as `parse`.
    """
    data = simplejson.loads(body)
    realms: dict[str, list[Any]] = {}
    if isinstance(data, dict) and "eventNotifications" in data:
        for note in data["eventNotifications"]:
            realms.setdefault(str(note["realmId"]), []).append(note)
        if len(realms) <= 1:
            return dict.fromkeys(realms, body)
        return {
            realm: simplejson.dumps({"eventNotifications": notes}).encode()
            for realm, notes in realms.items()
        }
    if isinstance(data, list):
        for event in data:
            realms.setdefault(_cloud_event(event).realm_id, []).append(event)
        if len(realms) <= 1:
            return dict.fromkeys(realms, body)
        return {realm: simplejson.dumps(e).encode() for realm, e in realms.items()}
    raise ValueError("neither eventNotifications nor a CloudEvents array")


def _legacy(note: dict[str, Any]) -> list[Notification]:
    realm = str(note["realmId"])
    out = []
    for e in note.get("dataChangeEvent", {}).get("entities", []):
        key = f"{e['name']}:{e['id']}:{e['operation']}:{e.get('lastUpdated', '')}"
        out.append(
            Notification(
                realm,
                str(e["name"]),
                str(e["id"]),
                str(e["operation"]),
                str(e.get("lastUpdated", "")),
                key,
                _deleted_id(e),
            )
        )
    return out


def _cloud_event(event: dict[str, Any]) -> Notification:
    """`qbo.<entity>.<past-tense op>.v1`; the CloudEvents id repeats on redelivery."""
    _, entity, op, *_ = str(event["type"]).split(".")
    return Notification(
        realm_id=str(event["intuitaccountid"]),
        entity=_ENTITIES.get(entity, entity.capitalize()),
        id=str(event["intuitentityid"]),
        operation=_OPERATIONS.get(op, op.capitalize()),
        at=str(event.get("time", "")),
        key=str(event["id"]),
        deleted_id=_deleted_id(event.get("data")),
    )


def _deleted_id(data: Any) -> str | None:
    """A merge's `deletedId`, spelled `deletedid` in the docs: read case-blind."""
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == "deletedid" and value is not None:
            return str(value)
    return None
