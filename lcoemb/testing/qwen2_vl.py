"""Tiny Qwen2-VL checkpoints (the architecture of GME and Ops-MM-embedding)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from lcoemb.testing._build import (
    image_processor_kwargs,
    text_config,
    video_processor_kwargs,
    write_checkpoint,
)
from lcoemb.testing.qwen2_5 import VL

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, ProcessorMixin

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

    def build_config(tokenizer: Qwen2Tokenizer) -> PreTrainedConfig:
        ids = tokenizer.convert_tokens_to_ids
        return Qwen2VLConfig(
            text_config=text_config(
                tokenizer,
                hidden_size=hidden_size,
                num_hidden_layers=num_hidden_layers,
                num_attention_heads=num_attention_heads,
                num_key_value_heads=num_key_value_heads,
                intermediate_size=intermediate_size,
            ),
            vision_config={
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
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        )

    def build_processor(tokenizer: Qwen2Tokenizer, chat_template: str) -> ProcessorMixin:
        return Qwen2VLProcessor(
            image_processor=Qwen2VLImageProcessor(**image_processor_kwargs(max_pixels)),
            video_processor=Qwen2VLVideoProcessor(**video_processor_kwargs(max_pixels)),
            tokenizer=tokenizer,
            chat_template=chat_template,
        )

    return write_checkpoint(
        path,
        family=VL,
        build_config=build_config,
        model_class=Qwen2VLForConditionalGeneration,
        build_processor=build_processor,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )
