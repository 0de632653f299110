"""Tiny Qwen2.5-Omni (thinker) and Qwen2.5-VL checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from lcoemb.testing._build import (
    Family,
    image_processor_kwargs,
    text_config,
    video_processor_kwargs,
    vision_config,
    whisper_feature_extractor,
    write_checkpoint,
)

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel, ProcessorMixin

__all__ = [
    "OMNI",
    "VL",
    "make_tiny_qwen2_5_omni_thinker",
    "make_tiny_qwen2_5_vl",
    "vision_token_ids",
    "write_vl_checkpoint",
]

OMNI = Family(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|AUDIO|>",
        "<|audio_bos|>",
        "<|audio_eos|>",
        "<|vision_bos|>",
        "<|vision_eos|>",
        "<|IMAGE|>",
        "<|VIDEO|>",
    ),
    named_tokens={
        "image_token": "<|IMAGE|>",
        "audio_token": "<|AUDIO|>",
        "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>",
        "vision_eos_token": "<|vision_eos|>",
        "audio_bos_token": "<|audio_bos|>",
        "audio_eos_token": "<|audio_eos|>",
    },
    default_system_prompt=(
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
        "perceiving auditory and visual inputs, as well as generating text and speech."
    ),
    media_placeholders={
        "image": "<|vision_bos|><|IMAGE|><|vision_eos|>",
        "video": "<|vision_bos|><|VIDEO|><|vision_eos|>",
        "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>",
    },
)

VL = Family(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ),
    named_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    default_system_prompt="You are a helpful assistant.",
    media_placeholders={
        "image": "<|vision_start|><|image_pad|><|vision_end|>",
        "video": "<|vision_start|><|video_pad|><|vision_end|>",
    },
)


def vision_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    """The config's vision token ids in a tokenizer with :data:`VL`'s vision tokens."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _media_processors(max_pixels: int | None) -> dict[str, Any]:
    """Qwen2-VL image and video processors (14 px patches) capped at ``max_pixels``."""
    return {
        "image_processor": Qwen2VLImageProcessor(**image_processor_kwargs(max_pixels)),
        "video_processor": Qwen2VLVideoProcessor(**video_processor_kwargs(max_pixels)),
    }


def write_vl_checkpoint(
    path: str | Path,
    *,
    config_class: type[PreTrainedConfig],
    model_class: type[PreTrainedModel],
    processor_class: type[ProcessorMixin],
    text: dict[str, int],
    vision: dict[str, Any],
    max_pixels: int | None,
    seed: int,
    dtype: torch.dtype,
    init_std: float,
) -> Path:
    """Write a Qwen VL-family checkpoint (Qwen2-VL, Qwen2.5-VL): :data:`VL`'s tokenizer and
    template, a Qwen2.5 decoder of the sizes in ``text`` (see :func:`text_config`), the vision
    tower config ``vision``, the vision token ids, and ``processor_class`` with Qwen2-VL image
    and video processors capped at ``max_pixels``."""

    def build_config(tokenizer: Qwen2Tokenizer) -> PreTrainedConfig:
        return config_class(
            text_config=text_config(tokenizer, **text),
            vision_config=vision,
            **vision_token_ids(tokenizer),
        )

    def build_processor(tokenizer: Qwen2Tokenizer, chat_template: str) -> ProcessorMixin:
        return processor_class(
            **_media_processors(max_pixels), tokenizer=tokenizer, chat_template=chat_template
        )

    return write_checkpoint(
        path,
        family=VL,
        build_config=build_config,
        model_class=model_class,
        build_processor=build_processor,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )


def make_tiny_qwen2_5_omni_thinker(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 1,
    audio_layers: int = 1,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random Qwen2.5-Omni *thinker* checkpoint folder and return its path.

    The folder loads offline with ``Qwen2_5OmniThinkerForConditionalGeneration`` and
    ``Qwen2_5OmniProcessor`` (``model_type`` ``qwen2_5_omni_thinker``, the layout of the LCO
    embedding checkpoints), and with mteb's ``LCOEmbedding`` wrapper for text, image, audio and
    video. Vision and audio towers reuse ``hidden_size``/``num_attention_heads``/
    ``intermediate_size``; ``vision_depth``/``audio_layers`` set their depth. ``max_pixels``
    caps the pixels per image (and per frame in the saved video processor) so tests stay
    fast; without it the shipped Qwen bounds are saved. Weights come from a ``seed``-ed random
    init in float32, cast to ``dtype`` before saving, so equal arguments give identical files.
    """
    num_mel_bins = 128  # Qwen2.5-Omni's audio tower and feature extractor both use 128 mels

    def build_config(tokenizer: Qwen2Tokenizer) -> PreTrainedConfig:
        ids = tokenizer.convert_tokens_to_ids
        user_ids = tokenizer.encode("user", add_special_tokens=False)
        return Qwen2_5OmniThinkerConfig(
            text_config=text_config(
                tokenizer,
                hidden_size=hidden_size,
                num_hidden_layers=num_hidden_layers,
                num_attention_heads=num_attention_heads,
                num_key_value_heads=num_key_value_heads,
                intermediate_size=intermediate_size,
            ),
            vision_config=vision_config(
                hidden_size=hidden_size,
                num_attention_heads=num_attention_heads,
                intermediate_size=intermediate_size,
                depth=vision_depth,
            ),
            audio_config={
                "num_mel_bins": num_mel_bins,
                "encoder_layers": audio_layers,
                "encoder_attention_heads": num_attention_heads,
                "encoder_ffn_dim": intermediate_size,
                "d_model": hidden_size,
                "output_dim": hidden_size,
                "max_source_positions": 1500,
                "n_window": 100,
            },
            audio_token_index=ids("<|AUDIO|>"),
            image_token_index=ids("<|IMAGE|>"),
            video_token_index=ids("<|VIDEO|>"),
            audio_start_token_id=ids("<|audio_bos|>"),
            audio_end_token_id=ids("<|audio_eos|>"),
            # read by get_rope_index but not a declared field of the thinker config
            vision_start_token_id=ids("<|vision_bos|>"),
            vision_end_token_id=ids("<|vision_eos|>"),
            user_token_id=user_ids[0],
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=ids("<|im_end|>"),
        )

    def build_processor(tokenizer: Qwen2Tokenizer, chat_template: str) -> ProcessorMixin:
        return Qwen2_5OmniProcessor(
            **_media_processors(max_pixels),
            feature_extractor=whisper_feature_extractor(feature_size=num_mel_bins),
            tokenizer=tokenizer,
            chat_template=chat_template,
        )

    return write_checkpoint(
        path,
        family=OMNI,
        build_config=build_config,
        model_class=Qwen2_5OmniThinkerForConditionalGeneration,
        build_processor=build_processor,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )


def make_tiny_qwen2_5_vl(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 1,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint folder and return its path.

    The folder loads offline with ``Qwen2_5_VLForConditionalGeneration`` and
    ``Qwen2_5_VLProcessor`` (``model_type`` ``qwen2_5_vl``), uses Qwen2.5-VL's vision tokens
    and chat template, and is otherwise built like ``make_tiny_qwen2_5_omni_thinker`` (same
    tokenizer corpus, same knobs minus the audio tower).
    """

    return write_vl_checkpoint(
        path,
        config_class=Qwen2_5_VLConfig,
        model_class=Qwen2_5_VLForConditionalGeneration,
        processor_class=Qwen2_5_VLProcessor,
        text={
            "hidden_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "intermediate_size": intermediate_size,
        },
        vision=vision_config(
            hidden_size=hidden_size,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            depth=vision_depth,
        ),
        max_pixels=max_pixels,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )
