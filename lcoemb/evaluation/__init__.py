"""Evaluation: mteb integration (:class:`MTEBEncoder`, benchmarks by name, ``lcoemb eval``), the
offline four-modality benchmark over :mod:`lcoemb.synthetic` (:mod:`~lcoemb.evaluation.offline`),
and, without mteb, held-out generation scores (:mod:`~lcoemb.evaluation.generation`) and
retrieval metrics with the quick retrieval check (:mod:`~lcoemb.evaluation.retrieval`).

mteb is an optional dependency (``pip install 'lcoemb[eval]'``). The names below need it and are
imported on first use, so :mod:`lcoemb.evaluation.generation` and
:mod:`lcoemb.evaluation.retrieval` work without it.
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
