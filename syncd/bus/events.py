"""Outbound MQTT messages, one builder per kind (contract: "syncd → CRM")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson

from syncd.const import TOPIC_REJECTED, TOPIC_STATE, TYPE_REJECTED, TYPE_SYNC_STATE
from syncd.models import Invoice, Outbound


def envelope(
    message_type: str,
    tenant: str,
    data: dict[str, Any],
    now: datetime,
    causation_id: str | None,
) -> bytes:
    """Serialise one envelope with a fresh id (stable across republishing)."""
    body: dict[str, Any] = {
        "id": f"evt-{uuid.uuid4().hex}",
        "type": message_type,
        "tenant": tenant,
        "occurred_at": now.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    if causation_id is not None:
        body["causation_id"] = causation_id
    return orjson.dumps(body)


def invoice_view(invoice: Invoice) -> dict[str, Any]:
    """An invoice as the CRM and the admin API see it: CRM status beside QBO's view."""
    synced = invoice.last_synced_at
    return {
        "invoice_id": invoice.invoice_id,
        "sync_state": invoice.sync_state.value,
        "status": invoice.status,
        "version": invoice.version,
        "qbo_id": invoice.qbo_id,
        "qbo_doc_number": invoice.qbo_doc_number,
        "qbo_status": invoice.qbo_status,
        "balance": invoice.balance,
        "total": invoice.total,
        "last_synced_at": synced.isoformat() if synced else None,
        "error": invoice.error,
    }


def sync_state(
    prefix: str, invoice: Invoice, now: datetime, causation_id: str | None
) -> Outbound:
    """The retained latest word on one invoice (HS3)."""
    data = invoice_view(invoice)
    topic = f"{prefix}/{invoice.tenant}/" + TOPIC_STATE.format(
        invoice_id=invoice.invoice_id
    )
    payload = envelope(TYPE_SYNC_STATE, invoice.tenant, data, now, causation_id)
    return Outbound(topic=topic, payload=payload, retain=True)


def rejected(
    prefix: str,
    tenant: str,
    topic: str,
    message_id: str | None,
    reason: str,
    now: datetime,
) -> Outbound:
    """A refused message: its topic, its id if readable, and why."""
    data = {"topic": topic, "message_id": message_id, "reason": reason}
    payload = envelope(TYPE_REJECTED, tenant, data, now, message_id)
    return Outbound(topic=f"{prefix}/{tenant}/{TOPIC_REJECTED}", payload=payload)


def sync_failed(
    prefix: str,
    tenant: str,
    data: dict[str, Any],
    now: datetime,
) -> Outbound:
    """A sync that failed (HS2): invoice, operation, QBO code and message, attempts."""
    payload = envelope("sync.failed", tenant, data, now, None)
    return Outbound(topic=f"{prefix}/{tenant}/out/sync/failed", payload=payload)


def set_status(
    prefix: str, tenant: str, data: dict[str, Any], now: datetime
) -> Outbound:
    """A QBO event moved the invoice (RO6): `{invoice_id, from, to, reason}`."""
    payload = envelope("invoice.set_status", tenant, data, now, None)
    return Outbound(topic=f"{prefix}/{tenant}/out/invoice/set_status", payload=payload)


def payment_received(
    prefix: str, tenant: str, data: dict[str, Any], now: datetime
) -> Outbound:
    """A QBO payment on a synced invoice (OD10, HS5)."""
    payload = envelope("payment.received", tenant, data, now, None)
    return Outbound(topic=f"{prefix}/{tenant}/out/payment/received", payload=payload)


def invoice_linked(
    prefix: str,
    tenant: str,
    data: dict[str, Any],
    now: datetime,
    causation_id: str | None,
) -> Outbound:
    """A QBO-made invoice linked to a CRM deal, or unlinked (`deal_id` null)."""
    payload = envelope("invoice.linked", tenant, data, now, causation_id)
    return Outbound(topic=f"{prefix}/{tenant}/out/invoice/linked", payload=payload)
