"""Qwen3-Omni-MoE thinker: text, image, audio and video."""

from __future__ import annotations

from transformers import Qwen3OmniMoeProcessor, Qwen3OmniMoeThinkerForConditionalGeneration

from lcoemb.backbones.base import HFChatBackbone


class Qwen3OmniBackbone(HFChatBackbone):
    family = "qwen3_omni"
    model_types = ("qwen3_omni_moe_thinker", "qwen3_omni_moe")
    modalities = frozenset({"text", "image", "audio", "video"})
    model_class = Qwen3OmniMoeThinkerForConditionalGeneration
    processor_class = Qwen3OmniMoeProcessor
