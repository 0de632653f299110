"""Qwen2-VL: text, image and video (the backbone of GME and Ops-MM-embedding).

Its language model is Qwen2.5-VL's (Qwen2 decoder layers with M-RoPE) and its ViT starts with
the same patch ``Conv3d``, so both inference fast paths of :mod:`lcoemb.backbones.fastpath` fit
as they are (the parity tests check it); only the tower's blocks differ (full attention,
LayerNorm). GME and Ops-MM-embedding pool the same last token, but of another prompt: a system
instruction, no one-word suffix, and ``<|endoftext|>`` after the generation prompt.
"""

from __future__ import annotations

from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from lcoemb.backbones.base import HFChatBackbone


class Qwen2VLBackbone(HFChatBackbone):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    modalities = frozenset({"text", "image", "video"})
    model_class = Qwen2VLForConditionalGeneration
    processor_class = Qwen2VLProcessor
