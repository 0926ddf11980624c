"""The import graph of `syncd/`: floors, package cycles and the arrows that climb back up.

    python -m benchmarks.layout [--root syncd]

A floor is a level of the module graph once each cycle is one node: floor 0 imports no
other syncd module, floor n imports something on floor n-1. A package cycle (bus imports
engine, engine imports bus) has arrows that climb back up; they are listed.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path


def modules(root: Path) -> dict[str, set[str]]:
    """Each module of the package and the syncd modules it imports."""
    names = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        for p in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                root.name
            ):
                mod = node.module or ""
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    found.add(sub if sub in names else mod)
            elif isinstance(node, ast.Import):
                found |= {
                    a.name for a in node.names if a.name.startswith(root.name + ".")
                }
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components, dependencies first (Tarjan; the graph is small)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = set()
            while (top := stack.pop()) != node:
                comp.add(top)
            found.append(comp | {node})

    for start in sorted(graph):
        if start not in index:
            visit(start)
    return found


def floors(graph: dict[str, set[str]]) -> int:
    """How many levels the module graph has, each cycle counted as one node."""
    comps = components(graph)
    of = {m: n for n, comp in enumerate(comps) for m in comp}
    level: dict[int, int] = {}
    for n, comp in enumerate(comps):  # Tarjan yields dependencies first
        deps = {of[d] for m in comp for d in graph[m]} - {n}
        level[n] = 1 + max((level[d] for d in deps), default=-1)
    return 1 + max(level.values(), default=-1)


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="syncd")
    root = Path(parser.parse_args().root).resolve()
    graph = modules(root)
    packages: dict[str, set[str]] = defaultdict(set)
    for mod, deps in graph.items():
        packages[package(mod)] |= {package(d) for d in deps} - {package(mod)}
    cycles = [c for c in components(dict(packages)) if len(c) > 1]
    arrows = sorted(
        (mod, dep)
        for mod, deps in graph.items()
        for dep in deps
        for cycle in cycles
        if package(mod) in cycle
        and package(dep) in cycle
        and package(mod) != package(dep)
    )
    module_cycles = [c for c in components(graph) if len(c) > 1]
    print(
        f"modules: {len(graph)}, imports between them: {sum(map(len, graph.values()))}"
    )
    print(f"import floors: {floors(graph)}")
    print(f"module cycles: {len(module_cycles)} {[sorted(c) for c in module_cycles]}")
    print(f"package cycles: {[sorted(c) for c in cycles]}")
    print(f"arrows within package cycles: {len(arrows)}")
    for mod, dep in arrows:
        print(f"  {mod} → {dep}")


if __name__ == "__main__":
    main()
