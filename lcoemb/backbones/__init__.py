"""Backbone adapters, one module per MLLM family, chosen from the checkpoint's config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from lcoemb.backbones.base import Backbone, HFChatBackbone, ModalityError
from lcoemb.backbones.gemma3n import Gemma3nBackbone
from lcoemb.backbones.llava_next import LlavaNextBackbone
from lcoemb.backbones.mini import MiniBackbone
from lcoemb.backbones.qwen2_5_omni import QwenOmniBackbone
from lcoemb.backbones.qwen2_5_vl import QwenVLBackbone
from lcoemb.backbones.qwen2_vl import Qwen2VLBackbone
from lcoemb.backbones.qwen3_omni import Qwen3OmniBackbone
from lcoemb.backbones.qwen3_vl import Qwen3VLBackbone
from lcoemb.backbones.smolvlm import SmolVLMBackbone

BACKBONES: tuple[type[Backbone], ...] = (
    QwenOmniBackbone,
    QwenVLBackbone,
    Qwen2VLBackbone,
    Qwen3OmniBackbone,
    Qwen3VLBackbone,
    LlavaNextBackbone,
    SmolVLMBackbone,
    Gemma3nBackbone,
    MiniBackbone,
)


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
    local = Path(os.fspath(name_or_path)) / "config.json"
    if local.is_file():  # read directly: AutoConfig does not know lcoemb's own model types
        model_type = json.loads(local.read_text()).get("model_type", "")
    else:
        model_type = AutoConfig.from_pretrained(os.fspath(name_or_path)).model_type
    return backbone_class(model_type).from_pretrained(
        name_or_path, device=device, dtype=dtype, attn_implementation=attn_implementation, **kwargs
    )


__all__ = [
    "BACKBONES",
    "Backbone",
    "Gemma3nBackbone",
    "HFChatBackbone",
    "LlavaNextBackbone",
    "MiniBackbone",
    "ModalityError",
    "Qwen2VLBackbone",
    "Qwen3OmniBackbone",
    "Qwen3VLBackbone",
    "QwenOmniBackbone",
    "QwenVLBackbone",
    "SmolVLMBackbone",
    "backbone_class",
    "load_backbone",
]
