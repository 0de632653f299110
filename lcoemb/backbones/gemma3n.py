"""Gemma 3n: text, image and audio."""

from __future__ import annotations

from transformers import Gemma3nForConditionalGeneration, Gemma3nProcessor

from lcoemb.backbones.base import HFChatBackbone


class Gemma3nBackbone(HFChatBackbone):
    family = "gemma3n"
    model_types = ("gemma3n",)
    modalities = frozenset({"text", "image", "audio"})
    model_class = Gemma3nForConditionalGeneration
    processor_class = Gemma3nProcessor
