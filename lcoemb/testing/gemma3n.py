"""Tiny Gemma 3n checkpoints (``model_type`` ``gemma3n``): text, image and audio.

The folder mimics the shipped ``google/gemma-3n-E*B-it`` ones at toy widths:

* a ``GemmaTokenizer`` (BPE with byte fallback, spaces as ``▁``, ``<bos>`` added on encode)
  trained on :data:`lcoemb.testing._build.CORPUS`, with Gemma's id layout: ``<pad>`` 0,
  ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, the turn and media-start tokens, the 256 byte tokens,
  the learned pieces, then the vision vocabulary (``<end_of_image>``, ``<image_soft_token>``,
  ...) and the audio vocabulary (``<end_of_audio>``, ``<audio_soft_token>``, ...) above the text
  vocabulary, where ``Gemma3nModel`` embeds them with ``embed_vision``/``embed_audio``;
* Gemma 3n's own chat template (``{{ bos_token }}``, ``<start_of_turn>user`` ... ``<end_of_turn>``,
  ``<start_of_turn>model`` as generation prompt, text items trimmed, no default system turn);
* a text model with every Gemma 3n part: AltUp, LAuReL, per-layer embeddings, sliding-window and
  full-attention layers, the statistical top-k activation sparsity of its first layer, and
  optionally KV-cache sharing (``num_kv_shared_layers``);
* a timm MobileNetV5 encoder (``mobilenetv5_300m_enc`` with a tiny ``block_args``: the same
  edge-residual, universal-inverted-residual and multi-query-attention blocks and the
  multi-scale fusion adapter, a few channels wide) and a USM conformer audio tower;
* ``Gemma3nProcessor`` with a SigLIP image processor (square resize, rescale, no normalisation)
  and ``Gemma3nAudioFeatureExtractor`` (16 kHz, 128 mel bins, clips padded or cut to 30 s and
  always 188 audio soft tokens).

The vision tower needs the ``timm`` package (transformers builds it with ``TimmWrapperModel``):
without it no ``Gemma3nForConditionalGeneration`` can be built at all, text-only or not.
"""

from __future__ import annotations

import copy
import math
import string
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import (
    Gemma3nAudioFeatureExtractor,
    Gemma3nConfig,
    Gemma3nForConditionalGeneration,
    Gemma3nProcessor,
    GemmaTokenizer,
    SiglipImageProcessor,
)

from lcoemb.inputs import TARGET_SAMPLING_RATE
from lcoemb.testing._build import (
    check_sizes,
    learned_vocab,
    padded,
    save_model,
    seeded_model,
    train_bpe,
)

__all__ = [
    "AUDIO_SOFT_TOKENS",
    "GEMMA3N_CHAT_TEMPLATE",
    "SHIPPED_IMAGE_SIZE",
    "make_tiny_gemma3n",
    "train_gemma_tokenizer",
]

#: The shipped Gemma 3n chat template (``chat_template.jinja`` of the ``-it`` checkpoints): a
#: system message becomes a prefix of the first user turn, every text item is trimmed, each
#: image or audio item is one soft token the processor expands.
GEMMA3N_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'audio' -%}
                {{ '<audio_soft_token>' }}
            {%- elif item['type'] == 'image' -%}
                {{ '<image_soft_token>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

#: Tokens at the start of the vocabulary, in id order (Gemma's first ids; the turn and
#: media-start tokens sit in the text vocabulary as in the real one).
_LEADING_TOKENS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<start_of_audio>",
)
#: Gemma's byte-fallback pieces
_BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
#: The first ids of the vision and audio vocabularies (``vocab_offset`` of each tower's config)
_VISION_TOKENS = ("<end_of_image>", "<image_soft_token>")
_AUDIO_TOKENS = ("<end_of_audio>", "<audio_soft_token>")
#: The processor-facing token names (tokenizer attributes ``Gemma3nProcessor`` reads)
_NAMED_TOKENS = {
    "image_token": "<image_soft_token>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "audio_token": "<audio_soft_token>",
    "boa_token": "<start_of_audio>",
    "eoa_token": "<end_of_audio>",
}

#: Audio soft tokens per clip: the shipped value, what a 30 s clip gives after the audio tower's
#: 4x convolutional and 4x conformer reductions of 10 ms mel frames; shorter clips are padded.
AUDIO_SOFT_TOKENS = 188
#: The square the shipped image processor resizes every image to.
SHIPPED_IMAGE_SIZE = 768
#: MobileNetV5's total stride: its smallest useful input side.
_VISION_STRIDE = 32

#: A MobileNetV5 shaped like ``mobilenetv5_300m_enc`` (edge-residual stage, universal inverted
#: residual stages, multi-query attention with strided keys/values in stage 2 and without in
#: stage 3, each stage ending in an inverted residual) at a few channels; strings in timm's
#: ``decode_arch_def`` notation.
_TINY_MOBILENETV5 = (
    ("er_r1_k3_s2_e4_c16",),
    ("uir_r1_a3_k5_s2_e6_c16",),
    ("uir_r1_a5_k5_s2_e6_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"),
    ("uir_r1_a5_k5_s2_e6_c32", "mqa_r1_k3_h2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"),
)
#: The MobileNetV5 encoder's output channels, fixed by timm (``vision_config.hidden_size``).
_MOBILENETV5_FEATURES = 2048


def train_gemma_tokenizer(
    *, vision_vocab_size: int = 4, audio_vocab_size: int = 4
) -> tuple[GemmaTokenizer, int]:
    """Train a deterministic BPE on ``CORPUS`` and wrap it as a ``GemmaTokenizer`` with Gemma
    3n's special tokens; return it and the text vocabulary size (the vision vocabulary starts
    there, the audio one ``vision_vocab_size`` later).

    The pieces are learned within words (each starting at its ``▁``), as SentencePiece does;
    ``GemmaTokenizer`` rebuilds the same normaliser and byte fallback from ``vocab``/``merges``
    on load, so the saved folder tokenises identically. Unused ids are filled with
    ``<unused…>`` tokens so every id the model can emit decodes.
    """
    learned_ids, merges = learned_vocab(
        train_bpe(
            normalizer=normalizers.Replace(" ", "▁"),
            pre_tokenizer=pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next"),
            initial_alphabet=sorted(set(string.printable) - set(" \t\r\x0b\x0c") | {"▁"}),
        )
    )
    learned = sorted(learned_ids, key=learned_ids.__getitem__)

    tokens = [*_LEADING_TOKENS, *_BYTE_TOKENS, *learned]
    text_vocab_size = padded(len(tokens))
    tokens += [f"<unused{i}>" for i in range(text_vocab_size - len(tokens))]
    tokens += [*_VISION_TOKENS, *(f"<unused_vision{i}>" for i in range(vision_vocab_size - 2))]
    tokens += [*_AUDIO_TOKENS, *(f"<unused_audio{i}>" for i in range(audio_vocab_size - 2))]
    vocab = {token: i for i, token in enumerate(tokens)}

    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens=dict(_NAMED_TOKENS),
    )
    # every other non-piece token is special too (never split, skipped when decoding)
    plain = {*learned, *_BYTE_TOKENS, *_LEADING_TOKENS[:5], *_NAMED_TOKENS.values()}
    extra = [t for t in tokens if t not in plain]
    tokenizer.add_special_tokens(
        {"extra_special_tokens": extra}, replace_extra_special_tokens=False
    )
    tokenizer.chat_template = GEMMA3N_CHAT_TEMPLATE
    for token, i in vocab.items():
        if tokenizer.convert_tokens_to_ids(token) != i:
            raise RuntimeError(f"token {token!r} did not keep id {i}")
    return tokenizer, text_vocab_size


def _image_size(max_pixels: int | None) -> int:
    """The processor's square side: the shipped 768, or the largest multiple of the tower's
    stride whose square holds at most ``max_pixels`` (at least one stride)."""
    if max_pixels is None:
        return SHIPPED_IMAGE_SIZE
    return max(1, math.isqrt(max_pixels) // _VISION_STRIDE) * _VISION_STRIDE


def tiny_mobilenetv5_block_args() -> list[list[dict[str, Any]]]:
    """timm's decoded block arguments of the tiny MobileNetV5 (JSON-ready). timm's builder
    consumes them in place, so each model must get its own copy."""
    from timm.models._efficientnet_builder import decode_arch_def

    return decode_arch_def([list(stage) for stage in _TINY_MOBILENETV5])


def make_tiny_gemma3n(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    hidden_size_per_layer_input: int = 16,
    laurel_rank: int = 8,
    sliding_window: int = 32,
    num_kv_shared_layers: int = 0,
    audio_layers: int = 1,
    image_tokens: int = 16,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random Gemma 3n checkpoint folder and return its path.

    It loads offline with ``Gemma3nForConditionalGeneration`` and ``Gemma3nProcessor`` (timm
    required, see the module docstring). Layers alternate sliding-window and full attention,
    ending with a full one (the shipped models have four sliding layers per full one);
    ``sliding_window`` is small so prompts cross it. The last ``num_kv_shared_layers`` layers
    reuse the keys and values of the last earlier layer of their type, as in the shipped models
    (it must leave one layer of each type before them). Each image gives ``image_tokens`` soft
    tokens (a square number; 256 shipped), each audio clip 188. Images are resized to a
    768-pixel square as shipped, or with ``max_pixels`` to the largest multiple of 32 pixels
    whose square fits it. The audio tower reuses ``hidden_size``/``num_attention_heads``.
    Weights come from a ``seed``-ed random init in float32, cast to ``dtype`` before saving, so
    equal arguments give identical files.
    """
    head_dim = check_sizes(hidden_size, num_attention_heads, num_key_value_heads)
    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise ValueError(f"image_tokens must be a square number, got {image_tokens}")
    layer_types = [
        "full_attention" if (num_hidden_layers - 1 - i) % 2 == 0 else "sliding_attention"
        for i in range(num_hidden_layers)
    ]
    vision_vocab_size = audio_vocab_size = 4
    tokenizer, text_vocab = train_gemma_tokenizer(
        vision_vocab_size=vision_vocab_size, audio_vocab_size=audio_vocab_size
    )
    ids = tokenizer.convert_tokens_to_ids
    block_args = tiny_mobilenetv5_block_args()
    config = Gemma3nConfig(
        text_config={
            "vocab_size": text_vocab + vision_vocab_size + audio_vocab_size,
            "vocab_size_per_layer_input": text_vocab,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "head_dim": head_dim,
            "hidden_size_per_layer_input": hidden_size_per_layer_input,
            "laurel_rank": laurel_rank,
            "altup_num_inputs": 4,
            "num_kv_shared_layers": num_kv_shared_layers,
            "layer_types": layer_types,
            "sliding_window": sliding_window,
            # the shipped models sparsify their first 10 of 30-35 layers; here the first one
            "activation_sparsity_pattern": [0.95] + [0.0] * (num_hidden_layers - 1),
            "max_position_embeddings": 32_768,
            "pad_token_id": ids("<pad>"),
            "bos_token_id": ids("<bos>"),
            "eos_token_id": [ids("<eos>"), ids("<end_of_turn>")],
        },
        vision_config={
            "architecture": "mobilenetv5_300m_enc",
            "hidden_size": _MOBILENETV5_FEATURES,
            "vocab_size": vision_vocab_size,
            "vocab_offset": text_vocab,
            "model_args": {
                "block_args": block_args,
                "stem_size": 16,
                "msfa_output_resolution": side,
            },
        },
        audio_config={
            "hidden_size": hidden_size,
            "input_feat_size": 128,
            "conf_num_attention_heads": num_attention_heads,
            "conf_num_hidden_layers": audio_layers,
            "sscp_conv_channel_size": [16, 8],
            "vocab_size": audio_vocab_size,
            "vocab_offset": text_vocab + vision_vocab_size,
        },
        audio_soft_tokens_per_image=AUDIO_SOFT_TOKENS,
        vision_soft_tokens_per_image=image_tokens,
        boi_token_id=ids("<start_of_image>"),
        eoi_token_id=ids("<end_of_image>"),
        image_token_id=ids("<image_soft_token>"),
        boa_token_id=ids("<start_of_audio>"),
        eoa_token_id=ids("<end_of_audio>"),
        audio_token_id=ids("<audio_soft_token>"),
        tie_word_embeddings=True,
    )

    def open_altup(model: Gemma3nForConditionalGeneration) -> None:
        with torch.no_grad():
            # AltUp's output scale starts at zero, which would switch off the per-layer inputs
            for layer in model.model.language_model.layers:
                layer.altup.correct_output_scale.normal_(0.0, init_std)

    pristine = copy.deepcopy(config.vision_config.model_args)
    model = seeded_model(
        Gemma3nForConditionalGeneration, config, seed=seed, init_std=init_std, then=open_altup
    )
    # timm's builder consumed the block arguments in place; save the ones it was given
    model.config.vision_config.model_args = pristine
    out = save_model(
        model,
        path,
        dtype=dtype,
        bos_token_id=ids("<bos>"),
        eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
        pad_token_id=ids("<pad>"),
    )

    size = _image_size(max_pixels)
    processor = Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(sampling_rate=TARGET_SAMPLING_RATE),
        image_processor=SiglipImageProcessor(
            size={"height": size, "width": size},
            resample=2,  # bilinear
            do_rescale=True,
            do_normalize=False,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tokenizer,
        chat_template=GEMMA3N_CHAT_TEMPLATE,
        audio_seq_length=AUDIO_SOFT_TOKENS,
        image_seq_length=image_tokens,
    )
    processor.save_pretrained(out)
    return out
