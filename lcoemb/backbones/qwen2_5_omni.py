"""Qwen2.5-Omni thinker: text, image, audio and video (the backbone of LCO-Emb-Omni)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

from lcoemb.backbones.base import HFChatBackbone
from lcoemb.inputs import LoadedItem

#: Zero samples kept after the longest clip. The mel STFT is centred (window 400, hop 160), so
#: the last valid frames must see zeros, as they do when the processor pads to 300 s; one window
#: of zeros, rounded up to whole hops, keeps the features of every valid frame identical.
_AUDIO_PAD_SAMPLES = 400
_HOP = 160


class QwenOmniBackbone(HFChatBackbone):
    family = "qwen2_5_omni"
    model_types = ("qwen2_5_omni_thinker", "qwen2_5_omni")
    modalities = frozenset({"text", "image", "audio", "video"})
    model_class = Qwen2_5OmniThinkerForConditionalGeneration
    processor_class = Qwen2_5OmniProcessor
    processor_args: ClassVar[dict[str, str]] = {
        "image": "images",
        "video": "videos",
        "audio": "audio",
    }

    def _media_kwargs(self, items: list[LoadedItem]) -> dict[str, Any]:
        kwargs = super()._media_kwargs(items)
        if "audio" in kwargs:
            # The processor zero-pads every clip to `max_length` before the mel spectrogram
            # (300 s by default) and then drops the padded frames; padding only to the batch's
            # longest clip gives the same features at a fraction of the cost.
            longest = max(len(a) for a in kwargs["audio"])
            hops = math.ceil((longest + _AUDIO_PAD_SAMPLES) / _HOP)
            kwargs["audio_kwargs"] = {"max_length": hops * _HOP}
        return kwargs
