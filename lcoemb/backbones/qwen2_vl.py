"""Qwen2-VL: text, image and video (the backbone of GME and Ops-MM-embedding)."""

from __future__ import annotations

from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from lcoemb.backbones.base import HFChatBackbone


class Qwen2VLBackbone(HFChatBackbone):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    modalities = frozenset({"text", "image", "video"})
    model_class = Qwen2VLForConditionalGeneration
    processor_class = Qwen2VLProcessor
