"""Qwen2.5-VL: text, image and video (no audio tower)."""

from __future__ import annotations

from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

from lcoemb.backbones.base import HFChatBackbone


class QwenVLBackbone(HFChatBackbone):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    modalities = frozenset({"text", "image", "video"})
    model_class = Qwen2_5_VLForConditionalGeneration
    processor_class = Qwen2_5_VLProcessor
