"""Raw MQTT message → validated Envelope, or a refusal a person can read."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from syncd.bus.payloads import check_data, utc_year
from syncd.const import (
    CLOCK_AHEAD_LIMIT,
    CRM_TYPES,
    DATE_YEARS,
    INT_RANGE,
    MAX_DEPTH,
    MAX_MESSAGE_ID_LEN,
)
from syncd.exceptions import InvalidMessageError
from syncd.models import Envelope, RawMessage


def topic_parts(topic: str, prefix: str) -> tuple[str, str] | None:
    """Split `P/T/crm/a/b` into (tenant, "a.b"); None when the topic is not one."""
    rest = topic.removeprefix(prefix + "/")
    tenant, _, tail = rest.partition("/")
    kind, _, path = tail.partition("/")
    if rest == topic or kind != "crm" or not tenant or not path:
        return None
    return tenant, path.replace("/", ".")


def parse(raw: RawMessage, prefix: str, max_bytes: int) -> Envelope:
    """Validate one message; raise InvalidMessageError with the reason."""
    parts = topic_parts(raw.topic, prefix)
    if parts is None:
        raise InvalidMessageError(f"topic {raw.topic!r} is not {prefix}/<tenant>/crm/…")
    tenant, topic_type = parts
    body = _decode(raw.payload, max_bytes)
    message_id = _message_id(body)
    if raw.retained:
        raise InvalidMessageError(
            "published with the retain flag: a broker sends retained messages again at "
            "every subscribe, so syncd acts on none (publish it without retain)",
            message_id,
        )
    _check_shape(body, message_id)
    _check_type(body.get("type"), topic_type, message_id)
    if body.get("tenant") != tenant:
        raise InvalidMessageError(
            f"tenant {body.get('tenant')!r} disagrees with the topic's {tenant!r}",
            message_id,
        )
    occurred_at = _occurred_at(body.get("occurred_at"), message_id)
    data = body.get("data")
    if not isinstance(data, dict):
        raise InvalidMessageError("data must be an object", message_id)
    check_data(topic_type, data, message_id)
    return Envelope(
        id=message_id,
        type=topic_type,
        tenant=tenant,
        occurred_at=occurred_at,
        data=data,
        topic=raw.topic,
        payload=raw.payload,
    )


def readable_id(payload: bytes, max_bytes: int) -> str | None:
    """Return the envelope id of a refused message if it can be read at all."""
    try:
        return _message_id(_decode(payload, max_bytes))
    except InvalidMessageError:
        return None


def _decode(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise InvalidMessageError(
            f"payload is {len(payload)} bytes, over the limit of {max_bytes} bytes"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(
            f"payload is not valid UTF-8 (byte {exc.start}: {exc.reason})"
        ) from exc
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessageError(f"payload is not JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise InvalidMessageError("payload must be a JSON object (the envelope)")
    return body


def _message_id(body: dict[str, Any]) -> str:
    value = body.get("id")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_MESSAGE_ID_LEN:
        raise InvalidMessageError("id must be a string of 1 to 128 characters")
    return value


def _check_shape(body: dict[str, Any], message_id: str) -> None:
    """Refuse what the store could not keep: deep nesting, integers beyond 64 bits."""
    low, high = INT_RANGE
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidMessageError(
                    f"the message nests deeper than {MAX_DEPTH} levels", message_id
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, int) and not low <= value <= high:
            raise InvalidMessageError(
                f"the number {value} is out of range (64-bit integers only)",
                message_id,
            )


def _check_type(value: Any, topic_type: str, message_id: str) -> None:
    if topic_type not in CRM_TYPES:
        known = ", ".join(sorted(CRM_TYPES))
        raise InvalidMessageError(
            f"unknown message type {topic_type!r} (known: {known})", message_id
        )
    if value != topic_type:
        raise InvalidMessageError(
            f"type {value!r} disagrees with the topic's {topic_type!r}", message_id
        )


def _occurred_at(value: Any, message_id: str) -> datetime:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidMessageError(
            'occurred_at must be an ISO 8601 time with a zone, e.g. "2026-11-22T10:15:00Z"',
            message_id,
        )
    first, last = DATE_YEARS
    if not first <= utc_year(when) <= last:
        raise InvalidMessageError(
            f"occurred_at must fall in the years {first} to {last}, not {value!r}",
            message_id,
        )
    return when


def check_timely(env: Envelope, now: datetime, memory: timedelta) -> None:
    """Refuse a message syncd cannot tell apart from one it applied and forgot.

    The ledger keeps each message id for `memory` (`[store] keep_ledger_days`) from its
    arrival. A message that happened longer ago than that, less the most a CRM's clock
    may run ahead, may be a replay of one applied before and forgotten since (a retained
    message, a CRM's retry after an outage): it could act twice, so it is refused. So is
    one dated further ahead than a clock can run: it would stay "recent" for ever.
    """
    oldest = now - (memory - CLOCK_AHEAD_LIMIT)
    if env.occurred_at < oldest:
        raise InvalidMessageError(
            f"occurred_at {env.occurred_at.isoformat()} is older than syncd's memory of "
            f"message ids ({memory.days} days, less a day for clocks): syncd cannot tell "
            "whether it was applied before; send it again as a new message",
            env.id,
        )
    if env.occurred_at > now + CLOCK_AHEAD_LIMIT:
        raise InvalidMessageError(
            f"occurred_at {env.occurred_at.isoformat()} is more than a day ahead of "
            f"syncd's clock ({now.isoformat(timespec='seconds')})",
            env.id,
        )
