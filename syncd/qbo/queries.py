"""QBO's query language (qbo.md §4, §5), built in one place: every question syncd asks.

Each function returns a statement for `QboClient.query` / `query_all`; values are quoted
here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    """A QBO query string literal (backslash escapes, qbo.md §5)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def every(entity: str) -> str:
    """Every object of an entity (page with `query_all`)."""
    return f"select * from {entity}"


def named(entity: str, field: str, value: str) -> str:
    """The objects whose `field` equals `value` (a customer by DisplayName, an item…)."""
    return f"select * from {entity} where {field} = {quote(value)}"


def among(entity: str, field: str, values: Iterable[str]) -> str:
    """The objects whose `field` is one of `values` (page with `query_all`)."""
    listed = ", ".join(quote(v) for v in values)
    return f"select * from {entity} where {field} in ({listed})"


def dated(entity: str, day: str) -> str:
    """The transactions of one TxnDate."""
    return f"SELECT * FROM {entity} WHERE TxnDate = {quote(day)}"


def of_customer(
    entity: str, customer_id: str, since: str | None = None, until: str | None = None
) -> str:
    """A customer's transactions, optionally within TxnDate bounds (inclusive)."""
    where = [f"CustomerRef = {quote(customer_id)}"]
    if since:
        where.append(f"TxnDate >= {quote(since)}")
    if until:
        where.append(f"TxnDate <= {quote(until)}")
    return f"select * from {entity} where {' and '.join(where)}"


def by_ids(entity: str, ids: Iterable[str]) -> str:
    """The objects with these Ids, in one question."""
    return among(entity, "Id", sorted(ids))


def updated_since(entity: str, stamp: str) -> str:
    """The objects changed at or after `stamp` (QBO's local-offset timestamp)."""
    return f"select * from {entity} where MetaData.LastUpdatedTime >= {quote(stamp)}"
