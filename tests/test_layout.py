"""The layout is the data flow: each package imports only what its docstring allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks import layout

SYNCD = Path(__file__).resolve().parent.parent / "syncd"
SHARED = {
    "syncd.clock",
    "syncd.config",
    "syncd.const",
    "syncd.exceptions",
    "syncd.messages",
    "syncd.models",
    "syncd.store",
    "syncd.realms",
    "syncd.worker",
    "syncd.loop",
    "syncd.replicas",
    "syncd.rules",
    "syncd.metrics",
}
ALLOWED: dict[str, set[str]] = {
    "qbo": {"syncd.exceptions"},
    "store": {"syncd.exceptions", "syncd.models", "syncd.messages"},
    # the rules an admin edits: read and checked, built on by engine and config alike
    "rules": {"syncd.const", "syncd.exceptions"},
    # decisions: no store, no network, no config; they append typed intents (messages)
    "engine": {
        "syncd.const",
        "syncd.exceptions",
        "syncd.models",
        "syncd.messages",
        "syncd.rules",
    },
    "bus": SHARED | {"syncd.engine"},
    "outbound": SHARED | {"syncd.engine", "syncd.qbo"},
    "inbound": SHARED | {"syncd.engine", "syncd.qbo"},
    # a QBO company's life: connecting, clients, books, tokens, reads
    "realms": SHARED | {"syncd.qbo"},
    # a client of the daemon: its topics (the broker link's TLS) and its store, read only
    "backfill": SHARED | {"syncd.bus.link", "syncd.bus.payloads"},
}


def _imports(path: Path) -> set[str]:
    """The syncd modules a file imports (`from syncd.bus import events` → syncd.bus.events)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("syncd"):
            module = str(node.module)
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                is_module = (
                    SYNCD.parent / (candidate.replace(".", "/") + ".py")
                ).exists()
                found.add(candidate if is_module else module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("syncd")}
    return found


def _allowed(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_it_may(package):
    """Bus → engine; outbound and inbound → engine, qbo; qbo and store → almost nothing."""
    own = f"syncd.{package}"
    wrong = {
        f"{path.name}: {module}"
        for path in (SYNCD / package).glob("*.py")
        for module in _imports(path)
        if not module.startswith(own) and not _allowed(module, ALLOWED[package])
    }
    assert not wrong, f"{package} may not import these: {sorted(wrong)}"


def test_every_package_says_what_it_owns_and_may_import():
    """Each package's docstring names what it owns and what it may import."""
    for package in [*ALLOWED, "web", "sandbox"]:
        doc = ast.get_docstring(
            ast.parse((SYNCD / package / "__init__.py").read_text())
        )
        assert doc, package
        if package in (
            "bus",
            "engine",
            "outbound",
            "inbound",
            "web",
            "backfill",
            "rules",
        ):
            assert "May import" in doc, package


def test_nothing_outside_the_store_names_sqlite_store():
    """Issue 11: consumers are typed against the Store Protocol, never SqliteStore."""
    outside = [
        path
        for path in SYNCD.rglob("*.py")
        if "store" not in path.relative_to(SYNCD).parts[:1]
        and "SqliteStore" in path.read_text()
    ]
    assert outside == []


def test_the_import_reader_sees_modules_and_names():
    """The check above is only as good as its reading of imports."""
    found = _imports(SYNCD / "inbound" / "worker.py")
    assert {"syncd.inbound.plan", "syncd.qbo.webhooks", "syncd.models"} <= found
    assert not _allowed("syncd.web.admin", ALLOWED["bus"])


def test_config_builds_on_the_rules_never_on_the_engine():
    """Issue 23: config imported engine.rules, making a cycle {bus, engine, config}."""
    found = _imports(SYNCD / "config.py")
    assert not any(m.startswith(("syncd.engine", "syncd.bus")) for m in found), found
    assert "syncd.rules.model" in found


def _package_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        own = layout.package(mod)
        packages.setdefault(own, set())
        packages[own] |= {layout.package(d) for d in deps} - {own}
    for deps in list(packages.values()):
        for dep in deps:
            packages.setdefault(dep, set())
    return [c for c in layout.components(packages) if len(c) > 1]


def test_no_import_climbs_back_up():
    """Issue 23: no package imports one that imports it back (was {bus, engine, config})."""
    graph = layout.modules(SYNCD)
    assert _package_cycles(graph) == []
    assert [c for c in layout.components(graph) if len(c) > 1] == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above is only as good as its cycle finder: bus → engine → bus."""
    graph = {
        "syncd.bus.inbox": {"syncd.engine.decide"},
        "syncd.engine.decide": {"syncd.bus.events"},
        "syncd.bus.events": set(),
    }
    assert _package_cycles(graph) == [{"syncd.bus", "syncd.engine"}]


def test_the_engine_decides_without_bus_store_qbo_or_config():
    """Issue 23: decisions append typed intents; they never render, store or call QBO."""
    found = {m for path in (SYNCD / "engine").glob("*.py") for m in _imports(path)}
    banned = ("syncd.bus", "syncd.store", "syncd.qbo", "syncd.config")
    assert not [m for m in found if m.startswith(banned)], found


def test_only_the_store_speaks_to_a_database():
    """Issue 24: SQLite and PostgreSQL drivers stay inside `syncd/store/`.

    The sandbox keeps a state file of its own (QBO's side, not syncd's store).
    """
    drivers = ("sqlite3", "aiosqlite", "psycopg")
    outside = sorted(
        f"{path.relative_to(SYNCD)}: {module}"
        for path in SYNCD.rglob("*.py")
        if path.relative_to(SYNCD).parts[0] not in ("store", "sandbox")
        for node in ast.walk(ast.parse(path.read_text()))
        for module in _modules_of(node)
        if module.split(".")[0] in drivers
    )
    assert outside == []


def _modules_of(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return []


def test_no_one_holds_a_store_lock():
    """Issue 24: read-decide-commit is guarded by the store, never by a held lock.

    A stale write is refused, in one process or across replicas, and decided again.
    """
    holders = sorted(
        str(path.relative_to(SYNCD))
        for path in SYNCD.rglob("*.py")
        if "write_lock" in path.read_text() or "WriteLock" in path.read_text()
    )
    assert holders == []
