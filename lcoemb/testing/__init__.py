"""Tiny, randomly initialised but *complete* checkpoints on local disk.

Tests and benchmarks need a real checkpoint folder (config, safetensors weights, tokenizer,
image/video/audio processors and chat template) that loads with the stock ``transformers``
classes and with mteb's reference wrappers, without network access and in well under a second
of model compute. The builders here write such folders, one module per model family; every
width and depth is a keyword argument, so a benchmark can build a "realistic width" model with
the same code path the tests exercise. They share one pipeline (:mod:`lcoemb.testing._build`).
"""

from __future__ import annotations

from lcoemb.testing.gemma3n import make_tiny_gemma3n
from lcoemb.testing.llava_next import make_tiny_llava_next
from lcoemb.testing.qwen2_5 import make_tiny_qwen2_5_omni_thinker, make_tiny_qwen2_5_vl
from lcoemb.testing.qwen2_vl import make_tiny_qwen2_vl
from lcoemb.testing.qwen3_omni import make_tiny_qwen3_omni, make_tiny_qwen3_omni_thinker
from lcoemb.testing.qwen3_vl import make_tiny_qwen3_vl
from lcoemb.testing.smolvlm import make_tiny_smolvlm

__all__ = [
    "make_tiny_gemma3n",
    "make_tiny_llava_next",
    "make_tiny_qwen2_5_omni_thinker",
    "make_tiny_qwen2_5_vl",
    "make_tiny_qwen2_vl",
    "make_tiny_qwen3_omni",
    "make_tiny_qwen3_omni_thinker",
    "make_tiny_qwen3_vl",
    "make_tiny_smolvlm",
]
