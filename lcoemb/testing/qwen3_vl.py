"""Tiny Qwen3-VL checkpoints, dense and MoE (the architecture of Qwen3-VL-Embedding)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from lcoemb.testing._build import (
    check_sizes,
    vocab_size,
    with_spread_experts,
    write_checkpoint,
)
from lcoemb.testing.qwen2_5 import VL, vision_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, ProcessorMixin

__all__ = ["QWEN3_VL", "chat_template", "make_tiny_qwen3_vl", "mrope_section"]

#: Qwen2.5-VL's tokens, placeholders and processor-facing names plus the reasoning tokens
QWEN3_VL = replace(
    VL,
    special_tokens=(*VL.special_tokens, "<think>", "</think>"),
    # Qwen3-VL's template adds no system turn of its own (see `chat_template`)
    default_system_prompt="",
)

# Pixel bounds of the shipped Qwen3-VL processors (preprocessor_config.json,
# video_preprocessor_config.json): an image's own, and a video's for the whole clip.
IMAGE_MIN_PIXELS = 65_536
IMAGE_MAX_PIXELS = 16_777_216
VIDEO_MIN_PIXELS = 4_096
VIDEO_MAX_PIXELS = 25_165_824
# Qwen3-VL normalises pixels to [-1, 1], not with CLIP's statistics as Qwen2-VL does
PIXEL_MEAN = [0.5, 0.5, 0.5]
PIXEL_STD = [0.5, 0.5, 0.5]


def chat_template(default_system_prompt: str | None = None) -> str:
    """Qwen3-VL's chat template, reduced to what embedding and generation use.

    As in the shipped Qwen3-VL-Instruct template, a system turn appears only when the
    conversation starts with one (its content a string or text parts), each image or video
    part becomes ``<|vision_start|><|image_pad|><|vision_end|>`` (``<|video_pad|>``), every
    message ends with ``<|im_end|>``, and the generation prompt is ``<|im_start|>assistant``.
    ``default_system_prompt`` adds a system turn to conversations without one, as an embedding
    checkpoint's template may (Qwen3-VL-Embedding's instruction, "Represent the user's input.").
    """
    image, video = QWEN3_VL.media_placeholders["image"], QWEN3_VL.media_placeholders["video"]
    default = "" if default_system_prompt is None else default_system_prompt.replace("'", "\\'")
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{- content -}}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
        f"{{{{- '{image}' -}}}}"
        "{%- elif part['type'] == 'video' or 'video' in part -%}"
        f"{{{{- '{video}' -}}}}"
        "{%- elif 'text' in part -%}{{- part['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        "{%- if messages[0]['role'] == 'system' -%}"
        "{{- '<|im_start|>system\\n' + render(messages[0]['content']) + '<|im_end|>\\n' -}}"
        + (
            f"{{%- else -%}}{{{{- '<|im_start|>system\\n{default}<|im_end|>\\n' -}}}}"
            if default_system_prompt is not None
            else ""
        )
        + "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if not (loop.first and message['role'] == 'system') -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + render(message['content'])"
        " + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def mrope_section(head_dim: int) -> list[int]:
    """Qwen3-VL's interleaved M-RoPE sections (t, h, w) for a text head of ``head_dim``.

    The frequencies interleave t, h, w, with ``3 * h`` of them shared out and the rest
    temporal; Qwen3-VL's [24, 20, 20] gives h and w 20/64 of the rotary half-dimension each,
    which this keeps at any width.
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"text head_dim must be even and >= 6 for M-RoPE, got {head_dim}")
    half = head_dim // 2
    spatial = max(1, half * 20 // 64)
    return [half - 2 * spatial, spatial, spatial]


def make_tiny_qwen3_vl(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    deepstack_visual_indexes: tuple[int, ...] = (0,),
    moe: bool = False,
    num_experts: int = 4,
    num_experts_per_tok: int = 2,
    moe_intermediate_size: int = 64,
    default_system_prompt: str | None = None,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random Qwen3-VL checkpoint folder and return its path.

    The folder loads offline with ``Qwen3VLForConditionalGeneration`` (``model_type``
    ``qwen3_vl``), or with ``moe`` with ``Qwen3VLMoeForConditionalGeneration`` (``qwen3_vl_moe``:
    every decoder layer a sparse MoE block of ``num_experts`` experts, ``num_experts_per_tok``
    routed per token), and ``Qwen3VLProcessor``. It has what sets Qwen3-VL apart from Qwen2.5-VL:
    per-head q/k RMSNorm in attention, interleaved M-RoPE, 16 px patches with a learned position
    grid, DeepStack (the vision blocks in ``deepstack_visual_indexes`` feed the first decoder
    layers' outputs at the visual positions), videos with frame timestamps in the prompt, and a
    chat template without a default system turn (``default_system_prompt`` adds one, see
    :func:`chat_template`).

    The vision tower reuses ``hidden_size``/``num_attention_heads``/``intermediate_size``.
    ``max_pixels`` caps the pixels per image (and lowers the image floor to fit); a video frame
    is then capped likewise (``max_video_tokens``, with ``cap_pixels_per_frame``). Without it the
    shipped bounds are saved. Equal arguments give identical files.
    """
    head_dim = check_sizes(hidden_size, num_attention_heads, num_key_value_heads)
    if any(not 0 <= i < vision_depth for i in deepstack_visual_indexes):
        raise ValueError(f"deepstack_visual_indexes {deepstack_visual_indexes} outside the tower")
    if len(deepstack_visual_indexes) > num_hidden_layers:
        raise ValueError("more DeepStack features than decoder layers to receive them")
    template = chat_template(default_system_prompt)

    def build_config(tokenizer: Qwen2Tokenizer) -> PreTrainedConfig:
        ids = tokenizer.convert_tokens_to_ids
        text: dict[str, Any] = {
            "vocab_size": vocab_size(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 262_144,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope_section(head_dim),
                "mrope_interleaved": True,
            },
            "attention_bias": False,
            "bos_token_id": tokenizer.eos_token_id,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False,
        }
        if moe:
            text |= {
                "num_experts": num_experts,
                "num_experts_per_tok": num_experts_per_tok,
                "moe_intermediate_size": moe_intermediate_size,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
            }
        vision = {
            "depth": vision_depth,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_heads": num_attention_heads,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": hidden_size,
            "num_position_embeddings": 64,  # an 8x8 learned grid, resampled to each image
            "deepstack_visual_indexes": list(deepstack_visual_indexes),
        }
        config_class = Qwen3VLMoeConfig if moe else Qwen3VLConfig
        return config_class(
            text_config=text,
            vision_config=vision,
            **vision_token_ids(tokenizer),
            tie_word_embeddings=False,
        )

    def build_processor(tokenizer: Qwen2Tokenizer, _template: str) -> ProcessorMixin:
        tokenizer.chat_template = template
        image_bounds = {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS}
        video_bounds = {"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS}
        video_cap: dict[str, Any] = {}
        if max_pixels is not None:
            if max_pixels < 32 * 32:
                raise ValueError(f"max_pixels must cover one 32x32 merged patch, got {max_pixels}")
            image_bounds = {
                "shortest_edge": min(IMAGE_MIN_PIXELS, max_pixels),
                "longest_edge": max_pixels,
            }
            video_cap = {"cap_pixels_per_frame": True, "max_video_tokens": max_pixels // (32 * 32)}
        geometry = {"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2}
        pixels = {"image_mean": PIXEL_MEAN, "image_std": PIXEL_STD}
        return Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(size=image_bounds, **geometry, **pixels),
            video_processor=Qwen3VLVideoProcessor(
                size=video_bounds, **geometry, **pixels, **video_cap
            ),
            tokenizer=tokenizer,
            chat_template=template,
        )

    return write_checkpoint(
        path,
        family=QWEN3_VL,
        build_config=build_config,
        model_class=(
            with_spread_experts(Qwen3VLMoeForConditionalGeneration, init_std)
            if moe
            else Qwen3VLForConditionalGeneration
        ),
        build_processor=build_processor,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )
