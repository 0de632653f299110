"""Tiny, randomly initialised but *complete* checkpoints on local disk.

Tests and benchmarks need a real checkpoint folder (config, safetensors weights, tokenizer,
image/video/audio processors and chat template) that loads with the stock ``transformers``
classes and with mteb's reference wrappers, without network access and in well under a second
of model compute. The builders here write such folders, one module per model family; every
width and depth is a keyword argument, so a benchmark can build a "realistic width" model with
the same code path the tests exercise. They share one pipeline (:mod:`lcoemb.testing._build`).
"""

from __future__ import annotations

from lcoemb.testing.qwen2_5 import make_tiny_qwen2_5_omni_thinker, make_tiny_qwen2_5_vl

__all__ = ["make_tiny_qwen2_5_omni_thinker", "make_tiny_qwen2_5_vl"]
