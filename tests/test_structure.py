"""The package's import structure: no cycles, and the layers import only downwards.

Top-level imports are read from the source (``tools/structure.py``), which sees every cycle
whatever order modules happen to be imported in; two fresh interpreters then import every
module, in sorted and in reverse order, to prove the package loads either way.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools.structure import find_cycles, import_graph, modules

#: (layer, layers it must never import, top level or inside a function)
FORBIDDEN = [
    ("lcoemb.encoder", ("lcoemb.recipes",)),
    ("lcoemb.training", ("lcoemb.recipes",)),
    ("lcoemb.backbones", ("lcoemb.recipes",)),
    ("lcoemb.evaluation", ("lcoemb.recipes",)),
    (
        "lcoemb.mini",
        (
            "lcoemb.recipes",
            "lcoemb.evaluation",
            "lcoemb.grsl",
            "lcoemb.training",
            "lcoemb.synthetic",
        ),
    ),
]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycles() -> None:
    """None at top level, and none hidden by moving an import into a function body."""
    top, inner, _ = import_graph()
    assert find_cycles(top) == []
    assert find_cycles({m: top[m] | inner[m] for m in top}) == []


@pytest.mark.parametrize(("layer", "forbidden"), FORBIDDEN)
def test_layers_import_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    top, inner, _ = import_graph()
    offending = sorted(
        f"{module} -> {target}"
        for module in top
        if _within(module, layer)
        for target in top[module] | inner[module]
        if any(_within(target, f) for f in forbidden)
    )
    assert offending == []


def test_every_module_imports_in_any_order() -> None:
    names = sorted(modules())
    assert "lcoemb.encoder" in names and len(names) > 30
    for order in (names, names[::-1]):
        code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
        result = subprocess.run(
            [sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
