"""Qwen3-Omni-MoE thinker: text, image, audio and video.

What differs from the Qwen2.5-Omni thinker (:mod:`lcoemb.backbones.qwen2_5_omni`), and how this
module handles it:

* A full ``qwen3_omni_moe`` checkpoint (thinker, talker and code2wav, as
  ``Qwen/Qwen3-Omni-30B-A3B-Instruct`` ships) loads as its thinker alone: transformers builds
  ``Qwen3OmniMoeThinkerForConditionalGeneration`` from the full folder's ``thinker_config`` and
  ``thinker.*`` weights and never instantiates the talker or code2wav (mteb's wrapper loads the
  published checkpoints the same way).
* Each audio clip gets exactly what the processor and the audio tower give it alone. The
  processor pads the clips of one call to the longest (Qwen2.5-Omni's pads to 300 s, hence the
  ``max_length`` trick there, which does not apply here): next to a longer clip, a clip's partial
  last hop becomes one more mel frame (and audio token) computed over zeros. The tower pads every
  chunk of a call to the longest chunk, and its convolution biases leak into the last frames of
  a shorter one. :func:`per_clip` and :func:`by_chunk_length` take these steps clip by clip (or
  group by group where that is the same), installed once on the processor and model instances.
* The language model is a sparse MoE with per-head q/k norms and DeepStack visual features added
  to its first layers' states, none of which :func:`lcoemb.backbones.fastpath.last_token_states`
  knows (it cannot even run a MoE block), so only the vision tower's patch-embedding shortcut is
  installed: the same ``Conv3d`` as Qwen2.5's.
* LoRA adapts the language model's Linears, which with MoE are the attention projections only
  (the experts are stacked 3-D parameters and the router a bare weight).
* Videos go to the processor as Qwen2.5-Omni's do, without a frame rate: it then assumes 1 fps
  (2 s per temporal patch) for the temporal positions, as the official and mteb pipelines do.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
from transformers import (
    AutoConfig,
    BatchFeature,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    _get_feat_extract_output_lengths,
)

from lcoemb.backbones.base import HFChatBackbone

AudioStep = Callable[..., tuple[BatchFeature, list[str]]]


def _right_pad(rows: list[Any]) -> torch.Tensor:
    """One-row arrays ``(1, ..., T_i)`` zero-padded on the right to the longest and stacked."""
    rows = [torch.as_tensor(r) for r in rows]
    frames = max(r.shape[-1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, frames - r.shape[-1])) for r in rows])


def per_clip(process_audio: AudioStep) -> AudioStep:
    """A drop-in for ``Qwen3OmniMoeProcessor._process_audio`` (mel features and placeholder
    expansion of a call's clips) that runs it on each clip alone: the same features, frame
    counts and audio tokens per clip as a one-clip call, right-padded to the longest (the audio
    tower reads only the frames ``feature_attention_mask`` keeps, so padding never matters)."""

    @functools.wraps(process_audio)
    def process(audio: list[Any], **kwargs: Any) -> tuple[BatchFeature, list[str]]:
        alone = [process_audio([clip], **kwargs) for clip in audio]
        inputs = {
            key: _right_pad([features[key] for features, _ in alone])
            for key in ("input_features", "feature_attention_mask")
        }
        inputs["num_audio_tokens"] = torch.cat(
            [torch.as_tensor(features["num_audio_tokens"]).reshape(1) for features, _ in alone]
        )
        return BatchFeature(inputs), [text for _, texts in alone for text in texts]

    return process


def by_chunk_length(get_audio_features: Callable[..., Any], n_window: int) -> Callable[..., Any]:
    """A drop-in for ``Qwen3OmniMoeThinkerModel.get_audio_features`` that runs the audio tower
    once per group of clips whose longest chunk has the same length, so each clip's states are
    what a one-clip call gives.

    The tower cuts a clip into chunks of ``2 * n_window`` frames and zero-pads every chunk of the
    call to the longest; its convolutions carry their biases into that padding, which reaches the
    last valid frames of a shorter chunk. A clip under one chunk is therefore changed by any
    longer batch-mate; clips whose longest chunks are equal (every clip of at least one full
    chunk) are padded alike alone or together, so they still run as one batch.
    """

    @functools.wraps(get_audio_features)
    def run(
        input_features: torch.Tensor,
        feature_attention_mask: torch.Tensor | None = None,
        audio_feature_lengths: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if feature_attention_mask is None:
            return get_audio_features(input_features, None, audio_feature_lengths, **kwargs)
        frames = feature_attention_mask.sum(-1)
        longest_chunk = frames.clamp(max=2 * n_window)
        groups = longest_chunk.unique()
        if len(groups) == 1:
            return get_audio_features(
                input_features, feature_attention_mask, audio_feature_lengths, **kwargs
            )
        states: list[torch.Tensor | None] = [None] * len(frames)
        for length in groups:
            rows = (longest_chunk == length).nonzero()[:, 0]
            out = get_audio_features(
                input_features[rows], feature_attention_mask[rows], **kwargs
            ).last_hidden_state
            tokens = _get_feat_extract_output_lengths(frames[rows], n_window).tolist()
            for row, clip in zip(rows.tolist(), out.split(tokens)):
                states[row] = clip
        merged = torch.cat(states)  # type: ignore[arg-type]
        return BaseModelOutputWithPooling(last_hidden_state=merged, pooler_output=merged)

    return run


class Qwen3OmniBackbone(HFChatBackbone):
    family = "qwen3_omni"
    model_types = ("qwen3_omni_moe_thinker", "qwen3_omni_moe")
    modalities = frozenset({"text", "image", "audio", "video"})
    model_class = Qwen3OmniMoeThinkerForConditionalGeneration
    processor_class = Qwen3OmniMoeProcessor
    processor_args: ClassVar[dict[str, str]] = {
        "image": "images",
        "video": "videos",
        "audio": "audio",
    }

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> Qwen3OmniBackbone:
        """As :meth:`HFChatBackbone.from_pretrained`, refusing other families' checkpoints (the
        thinker class would otherwise build itself from a foreign config)."""
        path = os.fspath(name_or_path)
        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type not in cls.model_types:
            raise ValueError(
                f"{path!r} is a {model_type!r} checkpoint, not Qwen3-Omni "
                f"({', '.join(cls.model_types)})"
            )
        return cast(Qwen3OmniBackbone, super().from_pretrained(path, **kwargs))

    def __init__(self, model: torch.nn.Module, processor: Any, name_or_path: str, **kwargs: Any):
        super().__init__(model, processor, name_or_path, **kwargs)
        # installed once on these instances, like the fast paths (the classes are untouched)
        processor._process_audio = per_clip(processor._process_audio)
        thinker = model.model
        thinker.get_audio_features = by_chunk_length(
            thinker.get_audio_features, thinker.config.audio_config.n_window
        )
