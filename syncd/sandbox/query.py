"""QBO's query language: SELECT … FROM … WHERE … ORDERBY … STARTPOSITION … MAXRESULTS.

Only AND (no OR), operators = < > <= >= IN LIKE ('%' only), single-quoted strings with
backslash escapes, keywords and field names case-blind. String values compare case-blind
too (UNCONFIRMED in qbo.md; the sandbox's pick).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.clock import parse_time
from syncd.sandbox.company import ENTITIES

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),*])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*(?:\(\*\))?)|(?P<number>-?\d+(?:\.\d+)?))",
    re.S,
)
_NAME_LISTS = {"Customer", "Item", "Account", "Vendor", "Employee", "TaxCode", "Term"}
_WITH_TOTAL = {"Invoice"}  # totalCount is present for some entities only (qbo.md §1)
MAX_RESULTS, DEFAULT_RESULTS = 1000, 100


@dataclass
class Condition:
    """One `field op value` term."""

    path: str
    op: str
    values: list[Any]
    pattern: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if self.op == "LIKE":  # '%' is the only wildcard
            parts = str(self.values[0]).split("%")
            self.pattern = re.compile(
                ".*".join(re.escape(p) for p in parts), re.I | re.S
            )


@dataclass
class Query:
    """A parsed statement."""

    entity: str
    count: bool = False
    where: list[Condition] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (path, descending)
    start: int = 1
    limit: int = DEFAULT_RESULTS


def parse(text: str) -> Query:
    """Parse a statement or raise 4001 saying where it is wrong."""
    tokens = _tokens(text)
    reader = _Reader(tokens)
    reader.keyword("SELECT")
    count = reader.select_list()
    reader.keyword("FROM")
    entity = _entity(reader.word())
    query = Query(entity=entity, count=count)
    while not reader.done():
        word = reader.word().upper()
        if word == "WHERE":
            query.where = reader.conditions()
        elif word == "ORDERBY" or (word == "ORDER" and reader.peek_word("BY")):
            query.order = reader.ordering()
        elif word == "STARTPOSITION":
            query.start = reader.integer("STARTPOSITION", 1)
        elif word == "MAXRESULTS":
            query.limit = reader.integer("MAXRESULTS", 1, MAX_RESULTS)
        else:
            raise faults.bad_query(f'Encountered "{word}" where a clause was expected')
    return query


def run(query: Query, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Apply a parsed query to an entity's objects (by Id); return the QueryResponse."""
    rows = [o for o in _candidates(query, table) if _matches(o, query)]
    if query.count:
        return {"totalCount": len(rows)}
    for path, descending in reversed(query.order):
        rows.sort(key=functools.partial(_sort_by, path), reverse=descending)
    if not query.order:
        rows.sort(key=lambda o: int(o["Id"]) if str(o["Id"]).isdigit() else 0)
    page = rows[query.start - 1 : query.start - 1 + query.limit]
    if not page:
        return {}
    response: dict[str, Any] = {
        query.entity: page,
        "startPosition": query.start,
        "maxResults": len(page),
    }
    if query.entity in _WITH_TOTAL:
        response["totalCount"] = len(rows)
    return response


def _candidates(query: Query, table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`Id = …` and `Id IN (…)` look objects up instead of scanning them all."""
    for condition in query.where:
        if condition.path.lower() == "id" and condition.op in ("=", "IN"):
            found = (table.get(str(v)) for v in condition.values)
            return [o for o in found if o is not None]
    return list(table.values())


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip().rstrip(";")
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise faults.bad_query(
                f'Encountered "{text[pos : pos + 10]}" at position {pos + 1}'
            )
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _entity(name: str) -> str:
    for entity in ENTITIES.values():
        if entity.lower() == name.lower():
            return entity
    raise faults.bad_query(f"Invalid context declaration : {name}")


class _Reader:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos = tokens, 0

    def done(self) -> bool:
        return self.pos >= len(self.tokens)

    def next(self) -> tuple[str, str]:
        if self.done():
            raise faults.bad_query("Unexpected end of query")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def word(self) -> str:
        kind, value = self.next()
        if kind != "word":
            raise faults.bad_query(f'Encountered "{value}" where a name was expected')
        return value

    def keyword(self, expected: str) -> None:
        if self.word().upper() != expected:
            raise faults.bad_query(f"Expected {expected}")

    def peek_word(self, expected: str) -> bool:
        if not self.done() and self.tokens[self.pos][1].upper() == expected:
            self.pos += 1
            return True
        return False

    def punct(self, expected: str) -> bool:
        if not self.done() and self.tokens[self.pos] == ("punct", expected):
            self.pos += 1
            return True
        return False

    def select_list(self) -> bool:
        """`*`, `*, Sku` or `count(*)`; projections are not supported otherwise."""
        kind, value = self.next()
        if kind == "word" and value.lower() == "count(*)":
            return True
        if (kind, value) != ("punct", "*"):
            raise faults.bad_query("Only SELECT * and SELECT count(*) are supported")
        while self.punct(","):
            self.word()  # e.g. Sku: full objects are returned anyway
        return False

    def conditions(self) -> list[Condition]:
        conditions = [self.condition()]
        while not self.done() and self.tokens[self.pos][1].upper() in ("AND", "OR"):
            if self.word().upper() == "OR":
                raise faults.bad_query("OR is not supported: use AND and IN (…)")
            conditions.append(self.condition())
        return conditions

    def condition(self) -> Condition:
        path = self.word()
        kind, op = self.next()
        if kind == "word" and op.upper() in ("IN", "LIKE"):
            op = op.upper()
        elif kind != "op" or op in ("!=", "<>"):
            raise faults.bad_query(f"Operator {op!r} is not supported")
        if op == "IN":
            if not self.punct("("):
                raise faults.bad_query("IN needs a list: IN ('a', 'b')")
            values = [self.value()]
            while self.punct(","):
                values.append(self.value())
            if not self.punct(")"):
                raise faults.bad_query("IN list is not closed")
            return Condition(path, op, values)
        return Condition(path, op, [self.value()])

    def value(self) -> Any:
        kind, value = self.next()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "number":
            return Decimal(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise faults.bad_query(f'Encountered "{value}" where a value was expected')

    def ordering(self) -> list[tuple[str, bool]]:
        order = []
        while True:
            path = self.word()
            descending = False
            if not self.done() and self.tokens[self.pos][1].upper() in ("ASC", "DESC"):
                descending = self.word().upper() == "DESC"
            order.append((path, descending))
            if not self.punct(","):
                return order

    def integer(self, name: str, low: int, high: int | None = None) -> int:
        kind, value = self.next()
        if kind != "number" or "." in value:
            raise faults.bad_query(f"{name} needs a whole number")
        number = int(value)
        if number < low:
            raise faults.bad_query(
                f"value {number} is too small. Min allowed value is {low}"
            )
        if high is not None and number > high:
            raise faults.bad_query(
                f"value {number} is too large. Max allowed value is {high}"
            )
        return number


def _lookup(obj: dict[str, Any], path: str) -> Any:
    """Case-blind dotted path; a reference object compares by its `value`."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return None
        if part in current:
            current = current[part]
            continue
        key = next((k for k in current if k.lower() == part.lower()), None)
        if key is None:
            return None
        current = current[key]
    if isinstance(current, dict) and "value" in current:
        return current["value"]
    if isinstance(current, dict) and "Address" in current:
        return current["Address"]  # PrimaryEmailAddr compares by its address
    return current


def _matches(obj: dict[str, Any], query: Query) -> bool:
    filters_active = any(c.path.lower() == "active" for c in query.where)
    if (
        query.entity in _NAME_LISTS
        and not filters_active
        and obj.get("Active") is False
    ):
        return False  # a plain SELECT returns only active name-list objects
    return all(_holds(_lookup(obj, c.path), c) for c in query.where)


def _holds(actual: Any, condition: Condition) -> bool:
    if actual is None:
        return False
    if condition.op == "IN":
        return any(_compare(actual, v) == 0 for v in condition.values)
    expected = condition.values[0]
    if condition.pattern is not None:
        return condition.pattern.fullmatch(str(actual)) is not None
    result = _compare(actual, expected)
    if result is None:
        return False
    return {
        "=": result == 0,
        "<": result < 0,
        ">": result > 0,
        "<=": result <= 0,
        ">=": result >= 0,
    }[condition.op]


def _compare(actual: Any, expected: Any) -> int | None:
    """Compare as times, numbers, booleans or case-blind strings, whichever fits."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return 0 if bool(actual) == expected else 1
    a, b = _as_time(actual), _as_time(expected)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    try:
        x, y = Decimal(str(actual)), Decimal(str(expected))
        return (x > y) - (x < y)
    except InvalidOperation:
        s, t = str(actual).lower(), str(expected).lower()
        return (s > t) - (s < t)


def _as_time(value: Any) -> datetime | None:
    if (
        isinstance(value, str)
        and len(value) >= 10
        and value[4:5] == "-"
        and value[7:8] == "-"
    ):
        try:
            return parse_time(value)
        except ValueError:
            return None
    return None


def _sort_by(path: str, obj: dict[str, Any]) -> tuple[int, Any]:
    return _sort_key(_lookup(obj, path))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, Decimal | int):
        return (1, Decimal(value))
    return (2, str(value).lower())
