"""Evaluation: mteb integration (:class:`MTEBEncoder`, benchmarks by name, ``lcoemb eval``), the
offline four-modality benchmark, and retrieval metrics for quick checks.

mteb is an optional dependency (``pip install 'lcoemb[eval]'``). The names below are imported on
first use, so :mod:`lcoemb.evaluation.retrieval` works without it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MTEBEncoder": "lcoemb.evaluation.mteb_encoder",
    "build_model_meta": "lcoemb.evaluation.mteb_encoder",
    "model_name": "lcoemb.evaluation.mteb_encoder",
    "OFFLINE_TASKS": "lcoemb.evaluation.offline",
    "offline_tasks": "lcoemb.evaluation.offline",
    "evaluate": "lcoemb.evaluation.run",
    "format_table": "lcoemb.evaluation.run",
    "resolve_tasks": "lcoemb.evaluation.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lcoemb.evaluation' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name])
    except ImportError as error:
        if error.name and error.name.split(".")[0] == "mteb":
            raise ImportError(
                f"lcoemb.evaluation.{name} needs mteb: pip install 'lcoemb[eval]'"
            ) from error
        raise
    return getattr(module, name)
