"""LLaVA-NeXT: text and image (the backbone of E5-V)."""

from __future__ import annotations

from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

from lcoemb.backbones.base import HFChatBackbone


class LlavaNextBackbone(HFChatBackbone):
    family = "llava_next"
    model_types = ("llava_next",)
    modalities = frozenset({"text", "image"})
    model_class = LlavaNextForConditionalGeneration
    processor_class = LlavaNextProcessor
