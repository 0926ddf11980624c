"""Read TOML tables into typed values, collecting every problem instead of stopping."""

from __future__ import annotations

import tomllib
from collections import Counter
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from syncd.exceptions import ConfigError

_MISSING: Any = object()


MAX_TOML_BYTES = 4 * 1024 * 1024  # a syncd.toml of thousands of tenants fits


def read_toml(path: Path, source: str) -> dict[str, Any]:
    """Parse a TOML file; raise ConfigError naming `source` when it cannot."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_TOML_BYTES:
        raise ConfigError(
            [f"{source}: {len(raw)} bytes, over the {MAX_TOML_BYTES} a file may have"]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from exc
    return parse_toml(text, source)


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text; raise ConfigError naming `source` when it cannot."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from exc
    except RecursionError:  # tomllib recurses: `a = [[[[…]]]]` 2,000 deep
        raise ConfigError([f"{source}: not valid TOML: nested too deeply"]) from None


def shown(problems: list[str], limit: int = 100) -> list[str]:
    """The first `limit` problems, and how many more there are (a page stays small)."""
    if len(problems) <= limit:
        return problems
    return [*problems[:limit], f"… and {len(problems) - limit} more problems"]


class TableReader:
    """Typed getters over parsed TOML that append `file: key: problem` lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        """Record one problem at `key`."""
        where = f"{self.source}: {key}" if key else self.source
        self.problems.append(f"{where}: {message}")

    def table(self, data: Any, key: str, known: set[str] | None) -> dict[str, Any]:
        """Return `data` as a table, reporting unknown keys when `known` is given."""
        if data is _MISSING or data is None:
            return {}
        if not isinstance(data, dict):
            self.problem(key, f"must be a table, not {_kind(data)}")
            return {}
        if known is not None:
            for name in data:
                if name not in known:
                    self.problem(_join(key, name), _unknown(name, known))
        return data

    def sub(
        self, data: dict[str, Any], key: str, name: str, known: set[str] | None
    ) -> dict[str, Any]:
        """Return the sub-table `name` of `data` (empty when absent)."""
        return self.table(data.get(name, _MISSING), _join(key, name), known)

    def text(
        self,
        data: dict[str, Any],
        key: str,
        name: str,
        default: str | None = None,
        choices: tuple[str, ...] = (),
    ) -> str:
        """Return a string; `default=None` makes it required."""
        value = data.get(name, _MISSING)
        where = _join(key, name)
        if value is _MISSING:
            if default is None:
                self.problem(where, "is required")
                return ""
            return default
        if not isinstance(value, str):
            self.problem(where, f"must be a string, not {_kind(value)}")
            return default or ""
        if choices and value not in choices:
            self.problem(where, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(
        self,
        data: dict[str, Any],
        key: str,
        name: str,
        default: int,
        low: int = 0,
        high: int | None = None,
    ) -> int:
        """Return an integer of at least `low` (and at most `high`)."""
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(_join(key, name), f"must be an integer, not {_kind(value)}")
            return default
        if value < low:
            self.problem(_join(key, name), f"must be at least {low}, not {value}")
            return default
        if high is not None and value > high:
            self.problem(_join(key, name), f"must be at most {high}, not {value}")
            return default
        return value

    def flag(self, data: dict[str, Any], key: str, name: str, default: bool) -> bool:
        """Return a boolean."""
        value = data.get(name, default)
        if not isinstance(value, bool):
            self.problem(_join(key, name), f"must be true or false, not {_kind(value)}")
            return default
        return value

    def texts(
        self, data: dict[str, Any], key: str, name: str, default: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        """Return a list of strings."""
        value = data.get(name, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(_join(key, name), "must be a list of strings")
            return default
        once = tuple(dict.fromkeys(value))
        if len(once) != len(value):
            counted = Counter(value)
            twice = next(v for v in once if counted[v] > 1)
            self.problem(_join(key, name), f"lists {twice!r} more than once")
        return once

    def text_map(self, data: dict[str, Any], key: str, name: str) -> dict[str, str]:
        """Return a table whose values are all strings."""
        table = self.sub(data, key, name, None)
        result: dict[str, str] = {}
        for k, v in table.items():
            if isinstance(v, str):
                result[k] = v
            else:
                self.problem(_join(_join(key, name), k), "must be a string")
        return result

    def money(
        self, data: dict[str, Any], key: str, name: str, default: str
    ) -> Decimal | None:
        """Return a decimal written as a string (money is never a float)."""
        value = data.get(name, default)
        where = _join(key, name)
        if not isinstance(value, str):
            self.problem(
                where, f'must be a decimal string such as "0.01", not {value!r}'
            )
            return None
        if value == "":
            return None
        try:
            return Decimal(value)
        except InvalidOperation:
            self.problem(where, f"{value!r} is not a decimal number")
            return None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _unknown(name: str, known: set[str]) -> str:
    return f"unknown key {name!r} (known: {', '.join(sorted(known))})"
