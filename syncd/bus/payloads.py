"""Shape checks for the `data` of each CRM message type, with reasons a person reads.

Each check returns None when the value is fine, or what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from syncd.bus.topics import level_problem
from syncd.const import DATE_YEARS, MAX_TEXT_LEN, MAX_VERSION
from syncd.exceptions import InvalidMessageError

Check = Callable[[Any], str | None]
Spec = Mapping[str, tuple[Check, bool]]  # field → (check, required)

_MONEY_RE = re.compile(r"^-?\d{1,15}(\.\d{1,6})?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PAYMENT_KINDS = ("invoice", "order_form", "subscription", "membership", "booking")


def text(value: Any) -> str | None:
    """A string of at most MAX_TEXT_LEN characters."""
    if not isinstance(value, str):
        return f"must be a string, not {_show(value)}"
    if len(value) > MAX_TEXT_LEN:
        return f"must be at most {MAX_TEXT_LEN} characters, not {len(value)}"
    return None


def ident(value: Any) -> str | None:
    """An id that can stand as one MQTT topic level (ids end up in topics)."""
    if not isinstance(value, str):
        return f"must be a string, not {_show(value)}"
    return level_problem(value)


def version(value: Any) -> str | None:
    """A whole number the store can keep (0 to 2⁶³ - 1)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_VERSION
    ):
        return f"must be a whole number from 0 to {MAX_VERSION}, not {_show(value)}"
    return None


def flag(value: Any) -> str | None:
    """A JSON boolean."""
    if not isinstance(value, bool):
        return f"must be true or false, not {_show(value)}"
    return None


def money(value: Any) -> str | None:
    """A decimal string: money is never a float."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f'must be a decimal string such as "{value}", not the number {value}'
    if not isinstance(value, str) or not _MONEY_RE.match(value):
        return f'must be a decimal string such as "199.50", not {_show(value)}'
    try:
        Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern already excludes these
        return f"{value!r} is not a decimal number"
    return None


def rate(value: Any) -> str | None:
    """An exchange rate: a decimal string above zero."""
    problem = money(value)
    if problem is None and Decimal(value) <= 0:
        return f"must be above zero, not {value!r}"
    return problem


def amount(value: Any) -> str | None:
    """Money paid or paid back: a decimal string above zero."""
    problem = money(value)
    if problem is None and Decimal(value) <= 0:
        return f"must be above zero, not {value!r}"
    return problem


def currency(value: Any) -> str | None:
    """An ISO 4217 code."""
    if not isinstance(value, str) or not _CURRENCY_RE.match(value):
        return f'must be a 3-letter currency code such as "USD", not {_show(value)}'
    return None


def day(value: Any) -> str | None:
    """An ISO 8601 date within DATE_YEARS."""
    if isinstance(value, str):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return _in_years(parsed.year)
    return f'must be a date such as "2026-11-22", not {_show(value)}'


def moment(value: Any) -> str | None:
    """An ISO 8601 time with its zone, or a date, within DATE_YEARS (in UTC)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None or len(value) == 10:
                return _in_years(parsed.year) or _in_years(utc_year(parsed))
    return f'must be a time with its zone such as "2026-11-22T10:15:00Z", not {_show(value)}'


def utc_year(when: datetime) -> int:
    """The year of `when` in UTC; 0 or 10000 where UTC falls outside Python's range."""
    if when.tzinfo is None:
        return when.year
    try:
        return when.astimezone(UTC).year
    except OverflowError:
        return 0 if when.year == 1 else 10000


def _in_years(year: int) -> str | None:
    first, last = DATE_YEARS
    if first <= year <= last:
        return None
    return f"must fall in the years {first} to {last}, not {year}"


def number(value: Any) -> str | None:
    """An invoice number: text without control characters (it reaches headers, PDFs)."""
    problem = text(value)
    if problem is None and (bad := _CONTROL_RE.search(value)):
        return f"must not contain control characters (U+{ord(bad.group()):04X})"
    return problem


def table(spec: Spec) -> Check:
    """An object whose fields follow `spec`."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be an object, not {_show(value)}"
        return _fields(value, spec)

    return check


def items(inner: Check) -> Check:
    """A list whose items pass `inner`."""

    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list, not {_show(value)}"
        for n, item in enumerate(value):
            problem = inner(item)
            if problem:
                return f"[{n}]{_sep(problem)}{problem}"
        return None

    return check


def one_of(*choices: str) -> Check:
    """One of the given strings."""

    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"must be one of {', '.join(choices)}, not {_show(value)}"

    return check


def text_map(value: Any) -> str | None:
    """An object of strings (custom fields)."""
    if not isinstance(value, dict) or not all(
        isinstance(v, str) for v in value.values()
    ):
        return "must be an object whose values are strings"
    for name, v in value.items():
        if len(name) > MAX_TEXT_LEN or len(v) > MAX_TEXT_LEN:
            return f".{name[:40]} must be at most {MAX_TEXT_LEN} characters"
    return None


def _fields(value: dict[str, Any], spec: Spec) -> str | None:
    for name, (check, required) in spec.items():
        if name not in value or value[name] is None:
            if required:
                return f".{name} is missing"
            continue
        problem = check(value[name])
        if problem:
            return f".{name}{_sep(problem)}{problem}"
    return None


def _sep(problem: str) -> str:
    return "" if problem.startswith((".", "[")) else " "


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value[:40])
    return "a list" if isinstance(value, list) else "an object"


ADDRESS = table({k: (text, False) for k in ("line1", "line2", "city", "postal_code")})
CUSTOMER = table(
    {
        "contact_id": (ident, False),
        "name": (text, False),
        "email": (text, False),
        "billing_email": (text, False),
        "address": (ADDRESS, False),
        "tax_id": (text, False),
        "currency": (currency, False),
    }
)
LINE = table(
    {
        "description": (text, False),
        "item": (text, False),
        "quantity": (money, False),
        "unit_price": (money, False),
        "discount": (money, False),
        "tax": (text, False),
        "amount": (money, False),
    }
)
INVOICE: Spec = {
    "invoice_id": (ident, True),
    "version": (version, True),
    "status": (text, True),
    "number": (number, False),
    "currency": (currency, False),
    "issue_date": (day, False),
    "due_date": (day, False),
    "customer": (CUSTOMER, False),
    "lines": (items(LINE), False),
    "discount": (table({"percent": (money, False), "amount": (money, False)}), False),
    "total": (money, False),
    "custom_fields": (text_map, False),
    "deal_id": (text, False),
    "created_at": (moment, False),  # HL8: when the CRM created it
    "exchange_rate": (rate, False),  # home-currency units per unit of `currency`
    "backfill": (flag, False),  # handed over by `syncd backfill` (history, HL8)
}
_INVOICE_REF: Spec = {"invoice_id": (ident, True)}
DATA_SPECS: Mapping[str, Spec] = {
    "invoice.upserted": INVOICE,
    "invoice.deleted": {"invoice_id": (ident, True), "version": (version, False)},
    "payment.recorded": {
        "payment_id": (ident, True),
        "invoice_id": (ident, False),
        "customer": (CUSTOMER, True),
        "amount": (money, True),
        "currency": (currency, True),
        "date": (day, True),
        "method": (text, False),
        "kind": (one_of(*_PAYMENT_KINDS), True),
        # one payment across several invoices (issue 26): what it pays of each
        "invoices": (
            items(table({"invoice_id": (ident, True), "amount": (amount, True)})),
            False,
        ),
        # the processor's fee, booked as an expense (issue 26, HS6)
        "fee": (
            table(
                {
                    "amount": (amount, True),
                    "processor": (text, False),
                    "currency": (currency, False),
                }
            ),
            False,
        ),
    },
    "payment.deleted": {"payment_id": (ident, True)},
    "credit_note.upserted": {
        "credit_note_id": (ident, True),
        "version": (version, True),
        "status": (one_of("draft", "open", "voided"), True),
        "invoice_id": (ident, False),
        "customer": (CUSTOMER, True),
        "lines": (items(LINE), True),
        "total": (amount, True),
        "currency": (currency, False),
        "issue_date": (day, False),
        "created_at": (moment, False),
    },
    "payment.refunded": {
        "refund_id": (ident, True),
        "payment_id": (ident, False),
        "invoice_id": (ident, False),
        "customer": (CUSTOMER, True),
        "amount": (amount, True),
        "currency": (currency, True),
        "date": (day, True),
        "method": (text, False),
        "reason": (text, False),
    },
    "contact.upserted": {
        "contact_id": (ident, True),
        "name": (text, True),
        "email": (text, False),
        "address": (ADDRESS, False),
        "tax_id": (text, False),
        "currency": (currency, False),
    },
    "command.sync": _INVOICE_REF,
    "command.send": _INVOICE_REF,
    "command.void": _INVOICE_REF,
    "command.delete": _INVOICE_REF,
    "command.refresh": {
        "invoice_id": (ident, False),
        "contact_id": (ident, False),
        "from": (day, False),
        "to": (day, False),
    },
    "command.link": {"qbo_invoice_id": (ident, True), "deal_id": (ident, True)},
    "command.unlink": {"qbo_invoice_id": (ident, True), "deal_id": (ident, False)},
}


def check_data(message_type: str, data: dict[str, Any], message_id: str) -> None:
    """Raise InvalidMessageError naming the first field that is wrong."""
    problem = _fields(data, DATA_SPECS[message_type])
    refresh = message_type == "command.refresh"
    if problem is None and refresh and not {"invoice_id", "contact_id"} & data.keys():
        problem = " needs invoice_id, or contact_id with from and to"
    if problem:
        raise InvalidMessageError(f"data{problem}", message_id)
