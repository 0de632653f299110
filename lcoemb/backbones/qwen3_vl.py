"""Qwen3-VL, dense and MoE: text, image and video (the backbone of Qwen3-VL-Embedding)."""

from __future__ import annotations

from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

from lcoemb.backbones.base import HFChatBackbone


class Qwen3VLBackbone(HFChatBackbone):
    family = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    modalities = frozenset({"text", "image", "video"})
    model_class = Qwen3VLForConditionalGeneration
    processor_class = Qwen3VLProcessor
