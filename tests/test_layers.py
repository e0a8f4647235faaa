"""The package layers point one way. Every import of the project is parsed (lazy ones inside functions too):
an import against the intended direction, a cycle between packages or a cycle between modules fails.

    kernels <- encoders <- training          index (numpy + numba, never torch) alone
    eval (BEIR, metrics, the offline pipeline, benchmarks, other engines) on top of those
    api (REST app, server, CLI) on top of everything; eval never imports api

Run `python tests/test_layers.py` to print the package graph (the README's architecture section shows it).
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "encoders", "training", "index", "eval", "api")
ALLOWED = {  # who may import whom, besides itself
    "kernels": set(),
    "index": set(),
    "encoders": {"kernels", "index"},
    "training": {"kernels", "encoders", "index"},
    "eval": {"kernels", "encoders", "training", "index"},
    "api": {"kernels", "encoders", "training", "index", "eval"},
}
NO_TORCH = ("index",)


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "lsr." + ".".join(parts)


def imports() -> list[tuple[str, str, str]]:
    """(importing module, imported lsr module or external top name, where) for every import statement."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = _module_name(path)
            is_package = path.name == "__init__.py"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import):
                    found += [(module, alias.name, where) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                        target = ".".join(base + ([node.module] if node.module else []))
                        if node.module is None:  # from . import a, b
                            found += [(module, f"{target}.{alias.name}", where) for alias in node.names]
                            continue
                    else:
                        target = node.module or ""
                    found.append((module, target, where))
    return found


def package_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "lsr" and len(parts) > 1 and parts[1] in PACKAGES else None


def package_graph() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for source, target, where in imports():
        a, b = package_of(source), package_of(target)
        if a and b and a != b:
            edges[(a, b)].append(where)
    return dict(edges)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif not state.get(nxt):
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [])
    return found


def test_imports_follow_the_layers():
    wrong = [f"{a} -> {b} ({where[0]})" for (a, b), where in package_graph().items() if b not in ALLOWED[a]]
    assert not wrong, "imports against the layers: " + "; ".join(wrong)


def test_no_cycle_between_packages():
    graph = defaultdict(set)
    for a, b in package_graph():
        graph[a].add(b)
    assert not _cycles(graph)


def test_no_cycle_between_modules():
    """Inside a package too, lazy imports included: modules of one package form a tree of layers."""
    known = {_module_name(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph = defaultdict(set)
    for source, target, _ in imports():
        while target and target not in known:  # `from .x import name` resolves to module x
            target = target.rpartition(".")[0]
        if target and target != source and package_of(source) == package_of(target) \
                and not target.endswith(tuple(f"lsr.{p}" for p in PACKAGES)):  # a package's __init__ re-exports
            graph[source].add(target)
    cycles = _cycles(graph)
    assert not cycles, "module cycles: " + "; ".join(" -> ".join(c) for c in cycles[:3])


def test_index_never_imports_torch():
    hits = [where for source, target, where in imports()
            if package_of(source) in NO_TORCH and target.split(".")[0] in ("torch", "transformers")]
    assert not hits, hits


def test_the_check_catches_a_wrong_import(tmp_path, monkeypatch):
    """The test can fail: an eval -> api import (the direction the layers forbid) is reported."""
    fake = tmp_path / "eval"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from lsr.api.cli import main\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("eval", "api"))
    edges = package_graph()
    assert ("eval", "api") in edges and "api" not in ALLOWED["eval"]


if __name__ == "__main__":
    for (a, b), where in sorted(package_graph().items()):
        print(f"{a:>8} -> {b:<8} {len(where):3d} imports")
