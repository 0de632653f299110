"""SmolVLM / Idefics3: text and image."""

from __future__ import annotations

from transformers import SmolVLMForConditionalGeneration, SmolVLMProcessor

from lcoemb.backbones.base import HFChatBackbone


class SmolVLMBackbone(HFChatBackbone):
    family = "smolvlm"
    model_types = ("smolvlm", "idefics3")
    modalities = frozenset({"text", "image"})
    model_class = SmolVLMForConditionalGeneration
    processor_class = SmolVLMProcessor
