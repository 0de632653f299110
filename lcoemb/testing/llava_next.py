"""A tiny LLaVA-NeXT checkpoint (Llama-3 text model, CLIP vision tower): E5-V's backbone.

The folder has the layout of ``llava-hf/llama3-llava-next-8b-hf``, the transformers checkpoint
of the model E5-V (``royokong/e5-v``) fine-tunes: a Llama-3-style byte-level BPE tokenizer that
adds ``<|begin_of_text|>`` itself, ``<image>`` and ``<pad>`` tokens, ``LlavaNextProcessor`` with
``LlavaNextImageProcessor`` (its any-resolution grid scaled from 336 px to ``image_size``) and
that checkpoint's chat template: no system turn, every image first as ``<image>``, then every
text part as ``"\\n" + text + "<|eot_id|>"``. Weights are random (see
:mod:`lcoemb.testing._build`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken, processors
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from lcoemb.testing._build import (
    CORPUS,
    check_sizes,
    save_model,
    seeded_model,
    train_byte_level_bpe,
    vocab_size,
)

__all__ = ["LLAMA3_LLAVA_NEXT_CHAT_TEMPLATE", "SPECIAL_TOKENS", "make_tiny_llava_next"]

# Llama-3's pre-tokenisation regex (as in Meta's tokenizer.json): digits in groups of three.
LLAMA3_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Special tokens in id order, after the learned vocabulary.
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<image>",
    "<pad>",
)

#: The chat template of ``llava-hf/llama3-llava-next-8b-hf`` in structure: Llama-3 headers, no
#: default system turn, images hoisted before the texts, each text part closed by its own
#: ``<|eot_id|>``, no ``<|begin_of_text|>`` (the tokenizer adds it).
LLAMA3_LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}"
    "{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# E5-V's prompt words, so they tokenise compactly as with a real vocabulary.
_EXTRA_CORPUS = (
    "Summary above sentence in one word: Summary above image in one word:\n"
    "Summary above audio in one word: Summary above video in one word:\n"
    "Summary above input in one word: Describe the image. Describe:\n"
)


def train_llama3_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic Llama-3-style tokenizer: byte-level BPE with Llama-3's split regex,
    trained on the shared corpus, :data:`SPECIAL_TOKENS` at fixed ids after it, and a post
    processor that prepends ``<|begin_of_text|>`` (as Meta's ``tokenizer.json`` does). Padding
    is on the left: E5-V's wrapper pools position ``-1`` of a padded batch."""
    bpe = train_byte_level_bpe(LLAMA3_PRETOKENIZE_REGEX, corpus=CORPUS + _EXTRA_CORPUS)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    bos = SPECIAL_TOKENS[0]
    bos_id = bpe.token_to_id(bos)
    bpe.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, bos_id)],
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.chat_template = LLAMA3_LLAVA_NEXT_CHAT_TEMPLATE
    return tokenizer


def make_tiny_llava_next(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    image_size: int = 56,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
    max_pixels: int | None = None,
    chat_template: str = LLAMA3_LLAVA_NEXT_CHAT_TEMPLATE,
) -> Path:
    """Write a tiny random LLaVA-NeXT checkpoint folder and return its path.

    It loads offline with ``LlavaNextForConditionalGeneration`` and ``LlavaNextProcessor``
    (``model_type`` ``llava_next``) and with mteb's E5-V wrapper. The CLIP vision tower
    (``vision_depth`` layers, 14 px patches, ``image_size`` px tiles) reuses the text widths;
    as in the real model the features come from its second-to-last layer without the CLS
    token. The any-resolution grid is the real one (tiles of 1x2, 2x1, 2x2, 3x1, 1x3) at
    ``image_size``; ``max_pixels`` drops the grids of more pixels (the base tile always stays)
    so tests stay fast. ``chat_template`` replaces the checkpoint's (e.g. with E5-V's
    hand-built prompt, :data:`lcoemb.backbones.llava_next.E5V_CHAT_TEMPLATE`). Equal arguments
    give identical files.
    """
    check_sizes(hidden_size, num_attention_heads, num_key_value_heads)
    if image_size % 14:
        raise ValueError(f"image_size must be a multiple of the 14 px patch, got {image_size}")
    tiles = [(1, 2), (2, 1), (2, 2), (3, 1), (1, 3)]
    pinpoints = [[image_size * h, image_size * w] for h, w in tiles]
    if max_pixels is not None:
        pinpoints = [p for p in pinpoints if p[0] * p[1] <= max_pixels]
    pinpoints = pinpoints or [[image_size, image_size]]

    tokenizer = train_llama3_tokenizer()
    tokenizer.chat_template = chat_template
    ids = tokenizer.convert_tokens_to_ids
    eot, end = ids("<|eot_id|>"), ids("<|end_of_text|>")
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=vision_depth,
            num_attention_heads=num_attention_heads,
            image_size=image_size,
            patch_size=14,
            projection_dim=hidden_size,
        ).to_dict(),
        text_config=LlamaConfig(
            vocab_size=vocab_size(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 500_000.0},
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=eot,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        ).to_dict(),
        image_token_index=ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )

    def redraw_norms(model: LlavaNextForConditionalGeneration) -> None:
        # RMSNorm weights start at one, which makes a state before and after the final norm
        # point the same way; drawn around one, pooling the wrong one shows
        for module in model.model.language_model.modules():
            if isinstance(module, LlamaRMSNorm):
                module.weight.data.normal_(1.0, init_std)

    model = seeded_model(
        LlavaNextForConditionalGeneration, config, seed=seed, init_std=init_std, then=redraw_norms
    )
    out = save_model(
        model,
        path,
        dtype=dtype,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[eot, end],
        pad_token_id=tokenizer.pad_token_id,
    )
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_grid_pinpoints=pinpoints,
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    processor.save_pretrained(out)
    return out
