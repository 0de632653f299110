"""Tiny SmolVLM (SmolVLM2, ``model_type`` ``smolvlm``) and Idefics3 (SmolVLM v1, ``idefics3``)
checkpoints.

Both are a SigLIP vision tower, a pixel-shuffle connector and a Llama (SmolLM2) decoder; they
differ in their transformers classes, their processor (SmolVLM's also handles video) and their
chat template. The folders mimic the shipped SmolVLM ones: SmolLM2's special tokens
(``<|im_start|>``, ``<end_of_utterance>``, ``<global-img>``, the 36 ``<row_i_col_j>`` tile
tokens, ``<fake_token_around_image>``, ``<image>``), the ``User:...<end_of_utterance>\\n
Assistant:`` template without a system turn, images split into square tiles plus a global view.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
)

from lcoemb.testing._build import (
    Family,
    check_sizes,
    save_model,
    seeded_model,
    train_tokenizer,
    vocab_size,
)

__all__ = [
    "IDEFICS3",
    "IDEFICS3_CHAT_TEMPLATE",
    "SMOLVLM",
    "SMOLVLM_CHAT_TEMPLATE",
    "make_tiny_smolvlm",
]

#: The tile-position tokens of an image split into up to 6 x 6 tiles.
_TILE_TOKENS = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))

#: SmolVLM-256M/500M-Instruct's template (``idefics3``): no system turn, the role capitalised,
#: ``:`` right before a leading image and ``: `` otherwise, ``Assistant:`` as generation prompt.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

#: SmolVLM2's template (``smolvlm``, transformers' ``processing_smolvlm.DEFAULT_CHAT_TEMPLATE``):
#: the same, plus string contents and ``<video>``.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# SmolLM2's vocabulary order: <|endoftext|> <|im_start|> <|im_end|> first, then the VLM's added
# tokens (<global-img>, the tile tokens, <fake_token_around_image>, <image>, <end_of_utterance>).
# ``default_system_prompt`` and ``media_placeholders`` feed _build's Qwen-style template, which
# the builder replaces by the SmolVLM one.
IDEFICS3 = Family(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<global-img>",
        *_TILE_TOKENS,
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
    ),
    named_tokens={},  # Idefics3Processor hard-codes its token strings
    default_system_prompt="",
    media_placeholders={"image": "<image>"},
)

SMOLVLM = Family(
    special_tokens=(*IDEFICS3.special_tokens, "<video>"),
    # read by SmolVLMProcessor from the tokenizer
    named_tokens={
        "image_token": "<image>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<end_of_utterance>",
        "video_token": "<video>",
    },
    default_system_prompt="",
    media_placeholders={"image": "<image>", "video": "<video>"},
)

#: SigLIP's normalisation as shipped with SmolVLM (mean and std 0.5)
_IMAGE_MEAN_STD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _longest_edge(image_size: int, max_pixels: int | None) -> int:
    """The processor's resize target: 4 tiles per side as shipped, or the largest multiple of a
    tile whose square holds at most ``max_pixels`` (at least one tile)."""
    if max_pixels is None:
        return 4 * image_size
    return max(1, math.isqrt(max_pixels) // image_size) * image_size


def make_tiny_smolvlm(
    path: str | Path,
    *,
    idefics3: bool = False,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_hidden_size: int = 32,
    vision_depth: int = 1,
    image_size: int = 32,
    patch_size: int = 8,
    scale_factor: int = 2,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random SmolVLM2 checkpoint folder (or with ``idefics3`` a SmolVLM v1 one)
    and return its path.

    It loads offline with ``SmolVLMForConditionalGeneration``/``SmolVLMProcessor`` (or
    ``Idefics3ForConditionalGeneration``/``Idefics3Processor``). Images are split into
    ``image_size`` square tiles plus a global view; each tile gives
    ``(image_size / patch_size)**2 / scale_factor**2`` image tokens (4 by default). Without
    ``max_pixels`` images are resized to a longest edge of 4 tiles, as shipped; with it, to the
    largest whole number of tiles whose square fits ``max_pixels``. Weights come from a
    ``seed``-ed random init in float32 cast to ``dtype``, so equal arguments give equal files.
    """
    check_sizes(hidden_size, num_attention_heads, num_key_value_heads)
    grid = image_size // patch_size
    if image_size % patch_size or grid % scale_factor:
        raise ValueError(
            f"image_size {image_size} must be a multiple of patch_size {patch_size} times "
            f"scale_factor {scale_factor}"
        )
    family = IDEFICS3 if idefics3 else SMOLVLM
    tokenizer = train_tokenizer(family)
    # SmolVLM's roles: a turn ends with <end_of_utterance> (eos), padding is <|im_end|>
    tokenizer.add_special_tokens(
        {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|im_end|>"}
    )
    ids = tokenizer.convert_tokens_to_ids
    text_config: dict[str, Any] = {
        "model_type": "llama",
        "vocab_size": vocab_size(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100_000.0},
        "bos_token_id": ids("<|im_start|>"),
        "eos_token_id": ids("<end_of_utterance>"),
        "pad_token_id": ids("<|im_end|>"),
        "tie_word_embeddings": False,
    }
    vision_config = {
        "hidden_size": vision_hidden_size,
        "intermediate_size": 2 * vision_hidden_size,
        "num_hidden_layers": vision_depth,
        "num_attention_heads": num_attention_heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    config_class, model_class = (
        (Idefics3Config, Idefics3ForConditionalGeneration)
        if idefics3
        else (SmolVLMConfig, SmolVLMForConditionalGeneration)
    )
    config = config_class(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids("<image>"),
        scale_factor=scale_factor,
        pad_token_id=ids("<|im_end|>"),
        tie_word_embeddings=False,
    )
    out = save_model(
        seeded_model(model_class, config, seed=seed, init_std=init_std),
        path,
        dtype=dtype,
        bos_token_id=ids("<|im_start|>"),
        eos_token_id=[ids("<end_of_utterance>"), ids("<|im_end|>")],
        pad_token_id=ids("<|im_end|>"),
    )

    image_kwargs = {
        "size": {"longest_edge": _longest_edge(image_size, max_pixels)},
        "max_image_size": {"longest_edge": image_size},
        **_IMAGE_MEAN_STD,
    }
    image_seq_len = grid**2 // scale_factor**2
    if idefics3:
        tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
        processor = Idefics3Processor(
            image_processor=Idefics3ImageProcessor(**image_kwargs),
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=IDEFICS3_CHAT_TEMPLATE,
        )
    else:
        tokenizer.chat_template = SMOLVLM_CHAT_TEMPLATE
        processor = SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(**image_kwargs),
            video_processor=SmolVLMVideoProcessor(
                size={"longest_edge": image_size},
                max_image_size={"longest_edge": image_size},
                **_IMAGE_MEAN_STD,
            ),
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=SMOLVLM_CHAT_TEMPLATE,
        )
    processor.save_pretrained(out)
    return out
