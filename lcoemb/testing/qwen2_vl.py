"""Tiny Qwen2-VL checkpoints (the architecture of GME and Ops-MM-embedding)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from lcoemb.testing.qwen2_5 import write_vl_checkpoint

__all__ = ["make_tiny_qwen2_vl"]


def make_tiny_qwen2_vl(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 1,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random Qwen2-VL checkpoint folder and return its path.

    The folder loads offline with ``Qwen2VLForConditionalGeneration`` and ``Qwen2VLProcessor``
    (``model_type`` ``qwen2_vl``). Qwen2-VL shares Qwen2.5-VL's vision tokens, chat template
    (with its default system turn) and image geometry (14 px patches, 2x2 merge), so it reuses
    that family's tokenizer; what differs is the vision tower: full attention in every block,
    LayerNorm and a ``mlp_ratio`` MLP, where Qwen2.5-VL has window attention, RMSNorm and a
    gated MLP. The tower's width is ``hidden_size`` and its MLP ratio
    ``intermediate_size // hidden_size``. ``max_pixels`` caps the pixels per image and frame;
    equal arguments give identical files (as :func:`lcoemb.testing.make_tiny_qwen2_5_vl`).
    """

    return write_vl_checkpoint(
        path,
        config_class=Qwen2VLConfig,
        model_class=Qwen2VLForConditionalGeneration,
        processor_class=Qwen2VLProcessor,
        text={
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "intermediate_size": intermediate_size,
        },
        vision={
            "depth": vision_depth,
            "embed_dim": hidden_size,
            "hidden_size": hidden_size,  # the merger's output: the language model's width
            "mlp_ratio": max(1, intermediate_size // hidden_size),
            "num_heads": num_attention_heads,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        max_pixels=max_pixels,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )
