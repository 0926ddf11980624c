"""The CRM's history file → the messages of a backfill, in dependency order.

The handover format: JSON Lines, one envelope per line, exactly as the CRM publishes it
(`contact.upserted`, `invoice.upserted`, `payment.recorded`; other types are refused).
Only the newest version of each invoice and contact is kept; invoices created before
`since` (`created_at`, else `issue_date`) stay out, and so do their payments. The order:
contacts, then invoices (oldest first), then payments (by date): customers and items are
found or made by the invoice that names them, so a payment always follows its invoice.
Message ids are derived from the content, so a backfill run again sends the same ids
(the ledger drops what syncd already applied).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from syncd.bus.payloads import check_data
from syncd.exceptions import InvalidMessageError

TYPES = ("contact.upserted", "invoice.upserted", "payment.recorded")
PHASES = ("contacts", "invoices", "payments")


@dataclass(frozen=True, slots=True)
class Message:
    """One envelope to publish, on its normal topic."""

    id: str
    type: str
    subject: str  # the contact, invoice or payment id
    data: dict[str, Any]

    def topic(self, prefix: str, tenant: str) -> str:
        """`P/T/crm/<type with dots as slashes>`."""
        return f"{prefix}/{tenant}/crm/{self.type.replace('.', '/')}"

    def envelope(self, tenant: str, occurred_at: str) -> bytes:
        """The message as syncd reads it."""
        body = {
            "id": self.id,
            "type": self.type,
            "tenant": tenant,
            "occurred_at": occurred_at,
            "data": self.data,
        }
        return orjson.dumps(body)


@dataclass(slots=True)
class History:
    """What a history file hands over, phase by phase, and what it left out and why."""

    contacts: list[Message] = field(default_factory=list)
    invoices: list[Message] = field(default_factory=list)
    payments: list[Message] = field(default_factory=list)
    before_since: int = 0
    replaced: int = 0  # older versions of an invoice or contact in the file
    refused: list[str] = field(default_factory=list)  # "line N: reason"

    def phases(self) -> list[tuple[str, list[Message]]]:
        """Contacts, invoices, payments: each is applied before the next is sent."""
        return list(
            zip(PHASES, (self.contacts, self.invoices, self.payments), strict=True)
        )

    @property
    def messages(self) -> list[Message]:
        """Every message, in order."""
        return [*self.contacts, *self.invoices, *self.payments]


def read_history(path: Path, tenant: str, since: date) -> History:
    """Read and order a history file; bad lines are listed, never fatal."""
    with path.open("rb") as lines:
        return order(_parsed(lines, tenant), tenant, since)


def order(
    records: Iterable[tuple[int, dict[str, Any] | str]], tenant: str, since: date
) -> History:
    """Keep what the backfill hands over, newest versions only, in dependency order."""
    history = History()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    payments: list[dict[str, Any]] = []
    for number, record in records:
        if isinstance(record, str):
            history.refused.append(f"line {number}: {record}")
        elif record["type"] == "payment.recorded":
            payments.append(record["data"])
        else:
            _keep_newest(history, latest, record["type"], record["data"])
    for (kind, subject), data in latest.items():
        created = _created(data)
        if kind == "contact.upserted":
            history.contacts.append(_message(tenant, kind, subject, data))
        elif created is not None and created < since:
            history.before_since += 1
        else:
            flagged = {**data, "backfill": True}
            history.invoices.append(_message(tenant, kind, subject, flagged))
    _add_payments(history, payments, tenant, since)
    history.contacts.sort(key=lambda m: m.subject)
    history.invoices.sort(key=lambda m: (_created(m.data) or date.max, m.subject))
    history.payments.sort(key=lambda m: (_day(m.data.get("date")), m.subject))
    return history


def _keep_newest(
    history: History,
    latest: dict[tuple[str, str], dict[str, Any]],
    kind: str,
    data: dict[str, Any],
) -> None:
    """An invoice's highest version wins; for a contact, the last line."""
    key = (kind, _subject(kind, data))
    older = latest.get(key)
    if older is not None:
        history.replaced += 1
        if _version(older) > _version(data):
            return
    latest[key] = data


def _add_payments(
    history: History, payments: list[dict[str, Any]], tenant: str, since: date
) -> None:
    """A payment goes with its invoice; a receipt (no invoice) by its own date."""
    handed = {m.subject for m in history.invoices}
    for data in payments:
        invoice_id = data.get("invoice_id")
        kept = invoice_id in handed if invoice_id else _day(data.get("date")) >= since
        if not kept:
            history.before_since += 1
            continue
        kind = "payment.recorded"
        history.payments.append(_message(tenant, kind, str(data["payment_id"]), data))


def _parsed(
    lines: Iterable[bytes], tenant: str
) -> Iterable[tuple[int, dict[str, Any] | str]]:
    """Each line as an envelope of the tenant, or the reason it is refused."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, f"not JSON ({exc})"
            continue
        yield number, _problem(record, tenant) or record


def _problem(record: Any, tenant: str) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("type") not in TYPES:
        return f"type {record.get('type')!r} is not one of {', '.join(TYPES)}"
    if record.get("tenant") != tenant:
        return f"tenant {record.get('tenant')!r} is not {tenant!r}"
    data = record.get("data")
    if not isinstance(data, dict):
        return "data must be an object"
    subject = _subject(record["type"], data)
    if not isinstance(subject, str) or not subject:
        return "the contact, invoice or payment id is missing"
    try:  # the door's own checks: a line syncd would refuse is listed, never sent
        check_data(record["type"], data, subject)
    except InvalidMessageError as exc:
        return exc.reason
    return None


def _subject(kind: str, data: dict[str, Any]) -> Any:
    field_name = {
        "contact.upserted": "contact_id",
        "invoice.upserted": "invoice_id",
        "payment.recorded": "payment_id",
    }[kind]
    return data.get(field_name)


def _message(tenant: str, kind: str, subject: str, data: dict[str, Any]) -> Message:
    digest = hashlib.sha256(
        orjson.dumps([tenant, kind, data], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return Message(id=f"backfill-{digest[:40]}", type=kind, subject=subject, data=data)


def _version(data: dict[str, Any]) -> int:
    value = data.get("version")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _created(data: dict[str, Any]) -> date | None:
    for name in ("created_at", "issue_date"):
        value = data.get(name)
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                continue
    return None


def _day(value: Any) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    return date.max  # no readable date: syncd refuses it, with the reason
