"""The library's shape in numbers: lines per package, the biggest functions, imports inside
function bodies, module import cycles, and ``lcoemb --help`` start time.

Run before and after a restructuring to compare::

    python tools/structure.py            # table for lcoemb/
    python tools/structure.py --no-time  # skip the start-time measurement
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lcoemb"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else "lcoemb"


def imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The lcoemb modules an import statement loads (relative imports resolved): for
    ``from pkg import name`` the submodule ``pkg.name`` when it is one, else ``pkg``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return sorted(t for t in targets if t in known)


def is_ancestor(package: str, module: str) -> bool:
    """Python imports a module's parent packages before the module itself, so a package's
    ``__init__`` that re-exports its submodules is not a cycle."""
    return module.startswith(package + ".")


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]], Counter[str]]:
    """Per module: the lcoemb modules it imports at top level, and those it imports inside a
    function body; and per module, how many import statements sit inside function bodies."""
    mods = modules()
    known = set(mods)
    top: dict[str, set[str]] = {m: set() for m in mods}
    inner: dict[str, set[str]] = {m: set() for m in mods}
    statements: Counter[str] = Counter()
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        spans = [
            (n.lineno, n.end_lineno)
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        for node in ast.walk(tree):
            targets = [
                t
                for t in imported(node, name, path.name == "__init__.py", known)
                if t != name and not is_ancestor(t, name)
            ]
            in_body = any(a < getattr(node, "lineno", 0) <= b for a, b in spans)
            statements["inside" if in_body else "top"] += bool(targets)
            if in_body and targets:
                statements[name] += 1
            for target in targets:
                (inner if in_body else top)[name].add(target)
    return top, inner, statements


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-time", action="store_true", help="skip timing `lcoemb --help`")
    p.add_argument("--top", type=int, default=5, help="how many of the biggest functions")
    args = p.parse_args()

    mods = modules()
    lines: Counter[str] = Counter()
    functions: list[tuple[int, str]] = []
    for name, path in mods.items():
        source = path.read_text()
        lines[package_of(name)] += source.count("\n")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    graph, inner, statements = import_graph()
    inside, outside = statements.pop("inside", 0), statements.pop("top", 0)
    inside_where = statements

    print("| package | lines |\n|---|---|")
    for package, count in sorted(lines.items()):
        print(f"| {package} | {count} |")
    print(f"| **total** | {sum(lines.values())} |\n")
    print("| biggest functions | lines |\n|---|---|")
    for size, qualname in sorted(functions, reverse=True)[: args.top]:
        print(f"| {qualname} | {size} |")
    print(
        f"\nimport statements between lcoemb modules: {inside + outside}, of them inside "
        f"function bodies: {inside}"
    )
    if inside:
        print("  " + ", ".join(f"{m} {n}" for m, n in inside_where.most_common()))
    cycles = find_cycles(graph)
    print(f"top-level import cycles: {len(cycles)}")
    for cycle in cycles[:10]:
        print("  " + " -> ".join(cycle))
    hidden = find_cycles({m: graph[m] | inner[m] for m in graph})
    print(f"cycles once imports inside functions count too: {len(hidden)}")
    for cycle in hidden[:10]:
        print("  " + " <-> ".join(cycle))
    if not args.no_time:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "lcoemb.cli", "--help"], check=True, capture_output=True
            )
            times.append(time.perf_counter() - start)
        print(f"`lcoemb --help`: median {statistics.median(times):.2f} s over 5 runs")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


if __name__ == "__main__":
    main()
