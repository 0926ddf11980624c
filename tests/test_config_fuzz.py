"""Issue 13 (fuzzing): rules and config files, whatever they hold.

Each is accepted, or refused with its problems named; nothing else ever escapes (`syncd
check` and SIGHUP's reload rely on it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import parse_config
from syncd.exceptions import ConfigError
from syncd.rules.model import parse_rules

ROOT = Path(__file__).resolve().parent.parent
RULES: dict[str, Any] = tomllib.loads((ROOT / "rules" / "default.toml").read_text())
CONFIG: dict[str, Any] = tomllib.loads((ROOT / "syncd.toml").read_text())

toml_values = st.recursive(
    st.booleans()  # TOML has no null
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["draft", "open", "paid", "", "0.01", "-1", "all", "fail"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)


def _mutated(base: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    """`base` with a few keys, at any depth, replaced, removed or added."""
    data: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()
    }
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        section = draw(st.sampled_from([*data, "extra"]))
        action = draw(st.sampled_from(["replace", "remove", "add", "swap"]))
        if action == "remove":
            data.pop(section, None)
        elif (
            action == "replace"
            or section not in data
            or not isinstance(data[section], dict)
        ):
            data[section] = draw(toml_values)
        else:
            inner = data[section]
            key = draw(st.sampled_from([*inner, "typo"]))
            if action == "swap":
                inner[key] = draw(toml_values)
            else:
                inner[draw(st.text(max_size=8))] = draw(toml_values)
    return data


@st.composite
def rules_files(draw: st.DrawFn) -> dict[str, Any]:
    return _mutated(RULES, draw)


@st.composite
def config_files(draw: st.DrawFn) -> dict[str, Any]:
    return _mutated(CONFIG, draw)


def _problems(parse: Callable[[], object]) -> list[str] | None:
    """The problems `parse` refused with, or None when it accepted."""
    try:
        parse()
    except ConfigError as exc:
        return exc.problems
    return None


@given(rules_files())
@settings(max_examples=300)
def test_any_rules_file_is_accepted_or_refused_with_reasons(data):
    """parse_rules either returns rules or raises ConfigError naming each problem."""
    problems = _problems(lambda: parse_rules(data, "fuzz.toml"))
    if problems is None:
        rules = parse_rules(data, "fuzz.toml")
        assert rules.initial in rules.statuses
    else:
        assert problems and all(p.startswith("fuzz.toml") for p in problems)


@given(config_files())
@settings(max_examples=300)
def test_any_config_file_is_accepted_or_refused_with_reasons(data):
    """parse_config either returns a config or raises ConfigError naming each problem."""
    problems = _problems(lambda: parse_config(data, ROOT / "syncd.toml", {}))
    assert problems is None or len(problems) > 0
