"""Backbone adapters, one module per MLLM family, chosen from the checkpoint's config."""

from __future__ import annotations

import os
from typing import Any

import torch

from lcoemb.backbones.base import Backbone, HFChatBackbone, ModalityError
from lcoemb.backbones.qwen2_5_omni import QwenOmniBackbone
from lcoemb.backbones.qwen2_5_vl import QwenVLBackbone

BACKBONES: tuple[type[Backbone], ...] = (QwenOmniBackbone, QwenVLBackbone)


def backbone_class(model_type: str) -> type[Backbone]:
    """The adapter that loads checkpoints of ``model_type`` (a config's ``model_type``)."""
    for cls in BACKBONES:
        if model_type in cls.model_types:
            return cls
    known = ", ".join(t for cls in BACKBONES for t in cls.model_types)
    raise ValueError(f"no lcoemb backbone for model_type {model_type!r}; supported: {known}")


def load_backbone(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    **kwargs: Any,
) -> Backbone:
    """Load a Hugging Face id or local folder with the adapter its config names."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(os.fspath(name_or_path))
    return backbone_class(config.model_type).from_pretrained(
        name_or_path, device=device, dtype=dtype, attn_implementation=attn_implementation, **kwargs
    )


__all__ = [
    "BACKBONES",
    "Backbone",
    "HFChatBackbone",
    "ModalityError",
    "QwenOmniBackbone",
    "QwenVLBackbone",
    "backbone_class",
    "load_backbone",
]
