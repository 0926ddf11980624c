"""Bad input is refused with a reason a person understands, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.bus.envelope import check_timely, parse, readable_id, topic_parts
from syncd.exceptions import InvalidMessageError
from syncd.models import RawMessage
from tests.crm import envelope, invoice

TOPIC = "syncd/acme/crm/invoice/upserted"
LIMIT = 256 * 1024


def _raw(
    payload: bytes | dict[str, Any], topic: str = TOPIC, retained: bool = False
) -> RawMessage:
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    return RawMessage(
        topic=topic, payload=payload, received_at=datetime.now(UTC), retained=retained
    )


def _good() -> dict[str, Any]:
    return envelope("acme", "invoice.upserted", invoice("INV-1", 1, "draft"), "m-1")


def _refusal(raw: RawMessage) -> InvalidMessageError:
    with pytest.raises(InvalidMessageError) as info:
        parse(raw, "syncd", LIMIT)
    return info.value


def test_a_good_message_parses():
    """The contract's envelope parses into its parts."""
    env = parse(_raw(_good()), "syncd", LIMIT)
    assert (env.id, env.type, env.tenant) == ("m-1", "invoice.upserted", "acme")
    assert env.data["invoice_id"] == "INV-1"
    assert env.occurred_at.tzinfo is not None


def _mutated(path: str, value: Any) -> dict[str, Any]:
    body = _good()
    target: Any = body
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("id", _DELETE, "id must be a string"),
        ("id", 7, "id must be a string"),
        ("id", "x" * 129, "id must be a string of 1 to 128"),
        ("type", "invoice.deleted", "type 'invoice.deleted' disagrees with the topic"),
        ("tenant", "other", "tenant 'other' disagrees with the topic's 'acme'"),
        ("occurred_at", "yesterday", "occurred_at must be an ISO 8601 time"),
        ("occurred_at", "2026-11-22T10:15:00", "occurred_at must be an ISO 8601 time"),
        ("data", [], "data must be an object"),
        ("data.invoice_id", _DELETE, "data.invoice_id is missing"),
        ("data.invoice_id", "a/b", "data.invoice_id must not contain '/'"),
        ("data.invoice_id", "x" * 129, "data.invoice_id must be 1-128 characters"),
        # each would become a topic level Mosquitto drops syncd for (issue 9 §4)
        ("data.invoice_id", "CTL\u0001A", "must not contain control or non-characters"),
        ("data.invoice_id", "a\nb", "(U+000A at character 2)"),
        ("data.invoice_id", "a\x7fb", "(U+007F"),
        ("data.invoice_id", "a\u0085b", "(U+0085"),
        ("data.invoice_id", "a\uffffb", "(U+FFFF"),
        ("data.invoice_id", "a\ufdd0b", "(U+FDD0"),
        ("data.invoice_id", "a+b", "must not contain '+'"),
        ("data.customer", {"contact_id": "C\u0000"}, "(U+0000"),
        ("data.deal_id", "x" * 4001, "data.deal_id must be at most 4000 characters"),
        ("data.version", 2**63, "the number 9223372036854775808 is out of range"),
        ("data.exchange_rate", "0", "data.exchange_rate must be above zero"),
        ("data.exchange_rate", 1.1, "data.exchange_rate must be a decimal string"),
        (
            "data.created_at",
            "2026-11-22T10:15:00",
            "data.created_at must be a time with",
        ),
        ("data.custom_fields", {"po": "x" * 4001}, "data.custom_fields.po must be at"),
        ("data.version", "7", "data.version must be a whole number"),
        ("data.version", -1, "data.version must be a whole number"),
        ("data.version", True, "data.version must be a whole number"),
        ("data.status", 3, "data.status must be a string"),
        (
            "data.total",
            199.5,
            'data.total must be a decimal string such as "199.5", not the number',
        ),
        ("data.total", "19,50", "data.total must be a decimal string"),
        ("data.currency", "usd", "data.currency must be a 3-letter currency code"),
        ("data.issue_date", "22/11/2026", "data.issue_date must be a date"),
        # issue 22 §6: valid ISO dates no business uses crashed the job worker
        (
            "data.issue_date",
            "9999-12-31",
            "must fall in the years 1900 to 2199, not 9999",
        ),
        (
            "data.due_date",
            "1899-12-31",
            "must fall in the years 1900 to 2199, not 1899",
        ),
        (
            "data.created_at",
            "0001-01-01T00:00:00+14:00",
            "data.created_at must fall in the years 1900 to 2199, not 1",
        ),
        ("data.created_at", "9999-12-31T23:00:00-05:00", "not 9999"),
        (
            "occurred_at",
            "0001-01-01T00:00:00+14:00",
            "occurred_at must fall in the years",
        ),
        # issue 22 §9: the number reaches the PDF's Content-Disposition header
        ("data.number", "7\r\nSet-Cookie: a=b", "must not contain control characters"),
        (
            "data.lines.0.unit_price",
            100.0,
            "data.lines[0].unit_price must be a decimal string",
        ),
        ("data.lines", {}, "data.lines must be a list"),
        ("data.customer", "Acme", "data.customer must be an object"),
        (
            "data.custom_fields",
            {"po": 7},
            "data.custom_fields must be an object whose values",
        ),
    ],
)
def test_each_bad_field_is_named(path, value, reason):
    """Missing or mistyped fields, floats for money, topic disagreements: each named."""
    refusal = _refusal(_raw(_mutated(path, value)))
    assert reason in refusal.reason
    if path != "id":
        assert refusal.message_id == "m-1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "payload is not JSON"),
        (b"\xff\xfe{}", "payload is not valid UTF-8 (byte 0"),
        (b"[1, 2]", "payload must be a JSON object"),
        (b"", "payload is not JSON"),
        (
            b"x" * (LIMIT + 1),
            f"payload is {LIMIT + 1} bytes, over the limit of {LIMIT}",
        ),
    ],
)
def test_unreadable_payloads_are_refused(payload, reason):
    """Non-JSON, invalid UTF-8, non-objects and oversized payloads are refused."""
    assert reason in _refusal(_raw(payload)).reason


def _nested(depth: int) -> dict[str, Any]:
    body = _mutated("data.x", 0)
    inner: Any = []
    for _ in range(depth - 1):
        inner = [inner]
    body["data"]["x"] = inner
    return body


def test_nesting_is_bounded_where_the_store_can_write_it():
    """Issue 9 §2: 300 levels passed validation and then failed every commit."""
    refusal = _refusal(_raw(_nested(300)))
    assert "nests deeper than 32 levels" in refusal.reason
    assert refusal.message_id == "m-1"
    # envelope (1) → data (2) → x (3 …): 30 levels of list inside data are fine
    parse(_raw(_nested(30)), "syncd", LIMIT)


@pytest.mark.parametrize("number", [2**63, 2**64 - 1])  # orjson reads up to 2⁶⁴ - 1
def test_integers_anywhere_are_bounded(number):
    """Issue 9 §3: any integer beyond 64 bits is refused, wherever it stands."""
    refusal = _refusal(_raw(_mutated("data.extra", number)))
    assert f"the number {number} is out of range" in refusal.reason


def test_unknown_type_is_refused_with_the_known_ones():
    """A type syncd does not know is refused, listing those it does."""
    body = envelope("acme", "invoice.archived", {"invoice_id": "x"}, "m-2")
    refusal = _refusal(_raw(body, "syncd/acme/crm/invoice/archived"))
    assert "unknown message type 'invoice.archived'" in refusal.reason
    assert "invoice.upserted" in refusal.reason


@pytest.mark.parametrize(
    ("message_type", "data", "reason"),
    [
        ("payment.recorded", {"payment_id": "p"}, "data.customer is missing"),
        (
            "payment.recorded",
            {
                "payment_id": "p",
                "customer": {},
                "amount": 5.0,
                "currency": "USD",
                "date": "2026-11-22",
                "kind": "invoice",
            },
            "data.amount must be a decimal string",
        ),
        ("command.sync", {}, "data.invoice_id is missing"),
        ("command.refresh", {}, "needs invoice_id, or contact_id"),
        ("command.link", {"qbo_invoice_id": "1"}, "data.deal_id is missing"),
    ],
)
def test_other_types_are_checked_too(message_type, data, reason):
    """Every contract type's data is checked, not only invoices."""
    topic = "syncd/acme/crm/" + message_type.replace(".", "/")
    body = envelope("acme", message_type, data, "m-3")
    assert reason in _refusal(_raw(body, topic)).reason


def test_topic_parts():
    """Topics split into tenant and dotted type; others are not CRM topics."""
    assert topic_parts("syncd/acme/crm/command/sync", "syncd") == (
        "acme",
        "command.sync",
    )
    assert topic_parts("a/b/syncd/acme/crm/x", "a/b/syncd") == ("acme", "crm.x"[4:])
    assert topic_parts("syncd/acme/crm", "syncd") is None
    assert topic_parts("other/acme/crm/x", "syncd") is None


def test_readable_id_recovers_the_id_when_it_can():
    """A refused message's id is quoted back when it can be read at all."""
    assert readable_id(json.dumps({"id": "abc"}).encode(), LIMIT) == "abc"
    assert readable_id(b"junk", LIMIT) is None


def test_a_retained_message_is_refused():
    """Issue 22 §3: a retained message comes back at every subscribe: never acted on."""
    refusal = _refusal(_raw(_good(), retained=True))
    assert "published with the retain flag" in refusal.reason
    assert refusal.message_id == "m-1"


@pytest.mark.parametrize(
    ("age", "refused"),
    [
        (timedelta(days=6, hours=23), None),
        (timedelta(days=7, minutes=1), "older than syncd's memory of message ids"),
        (timedelta(hours=-23), None),
        (timedelta(days=-1, minutes=-1), "more than a day ahead of syncd's clock"),
    ],
)
def test_a_message_older_than_the_ledgers_memory_is_refused(age, refused):
    """Issue 22 §3: the ledger keeps ids 8 days; older news may be a forgotten replay."""
    now = datetime.now(UTC)
    env = parse(
        _raw(
            envelope(
                "acme",
                "invoice.upserted",
                invoice("I", 1, "draft"),
                "m-1",
                at=now - age,
            )
        ),
        "syncd",
        LIMIT,
    )
    if refused is None:
        check_timely(env, now, timedelta(days=8))
        return
    with pytest.raises(InvalidMessageError, match=refused):
        check_timely(env, now, timedelta(days=8))
