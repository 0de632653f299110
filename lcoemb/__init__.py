"""lcoemb: language-centric omnimodal embeddings (LCO-EMB).

Turn a multimodal LLM into one embedding model for text, images, audio, video and interleaved
inputs, by LoRA contrastive training on text alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lcoemb.encoder import OmniEncoder
    from lcoemb.inputs import Audio, InputError, Limits, Video

__version__ = "0.1.0"

__all__ = ["Audio", "InputError", "Limits", "OmniEncoder", "Video", "__version__"]

#: The public names and their modules, imported on first use (PEP 562): both import torch, and
#: the package's light modules (``lcoemb.config``, ``lcoemb.cli``) must not pay for it, since
#: importing any ``lcoemb.<module>`` runs this file first.
_LAZY = {
    "OmniEncoder": "lcoemb.encoder",
    "Audio": "lcoemb.inputs",
    "InputError": "lcoemb.inputs",
    "Limits": "lcoemb.inputs",
    "Video": "lcoemb.inputs",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lcoemb' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
