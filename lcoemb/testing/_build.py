"""The shared pipeline of the tiny checkpoints in :mod:`lcoemb.testing`.

Train a deterministic byte-level BPE tokenizer on a small built-in corpus, append the family's
special tokens at fixed ids, build the model config with token ids taken from that tokenizer,
randomly initialise the model from ``seed``, and save model, generation config and processor
(with chat template) into one folder. A family module (:mod:`lcoemb.testing.qwen2_5`, ...)
supplies a :class:`Family`, its config and its processor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import GenerationConfig, Qwen2Tokenizer, WhisperFeatureExtractor

from lcoemb.inputs import TARGET_SAMPLING_RATE

if TYPE_CHECKING:
    from transformers import (
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        ProcessorMixin,
    )

# Qwen2's pre-tokenisation regex (transformers' tokenization_qwen2.PRETOKENIZE_REGEX), so the
# trained merges match how Qwen2Tokenizer splits text when it rebuilds itself on load.
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The BPE trainer's target size. The 256-symbol byte alphabet is always included, so the
# corpus below decides how many merges actually fit (a few hundred).
BPE_VOCAB_SIZE = 768

# Small built-in English corpus: the tokenizer is trained on it so words the tests and the
# prompt templates use ("user", "assistant", "Summarize the above image in one word:") become
# short token sequences, like with a real vocabulary.
CORPUS = """\
system user assistant system user assistant system user assistant
You are a helpful assistant. You are Qwen, a virtual human developed by the Qwen Team,
Alibaba Group, capable of perceiving auditory and visual inputs, as well as generating text
and speech.
Summarize the above text in one word: Summarize the above image in one word:
Summarize the above video in one word: Summarize the above audio in one word:
The quick brown fox jumps over the lazy dog. A small cat sleeps on a warm red chair.
An embedding model maps text, images, audio and video into one shared vector space, where
similar things lie close together and different things lie far apart. We train the model
with a contrastive loss: each query is pulled towards its positive document and pushed away
from the other documents in the same batch. The language model reads the whole input and
its last hidden state becomes the embedding.
Language models learn from large amounts of text. Vision encoders cut each picture into
small patches, and audio encoders turn sound into a sequence of mel spectrogram frames.
A video is a stack of frames over time, often with a sound track that plays along.
The weather today is sunny with a light wind from the north. Tomorrow it will rain in the
morning and clear up in the afternoon. People walk their dogs in the park, children play
football on the grass, and an old man reads a newspaper on a bench near the river.
Music fills the room: a piano, a violin and a soft voice singing about the sea.
Please describe the picture. What is shown in this image? Where was this photo taken?
How many people can you hear in the recording? Which animal makes this sound?
Find the document that answers the question. Retrieve the passage that best matches the
query. Classify the sentiment of the review as positive, negative or neutral.
This movie was wonderful and the actors were great. The food was cold and the service was
slow, so I will not come back. The book is long but worth reading until the very end.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 100 2025 3.14 and 42.
One two three four five six seven eight nine ten. Monday Tuesday Wednesday Thursday Friday.
Red green blue yellow black white orange purple brown grey.
hello world, hello there, good morning, good night, thank you, you are welcome.
"""

# Shared Qwen-style chat template: a default system turn when the conversation has none,
# one placeholder block per multimodal content item, ``<|im_end|>`` after every message and
# ``<|im_start|>assistant`` for ``add_generation_prompt``. Filled in per family by
# ``chat_template`` (``@@SYSTEM@@`` and ``@@ITEM@@`` are replaced there).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n@@SYSTEM@@<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}@@ITEM@@{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """What differs between the model families: tokens, prompt defaults, model class."""

    # Special tokens in id order; the first one is ``<|endoftext|>`` (eos/pad/unk).
    special_tokens: tuple[str, ...]
    # Tokenizer attribute name -> token (e.g. ``image_token``), read by the processors.
    named_tokens: dict[str, str]
    default_system_prompt: str
    # Content item type (``image``/``video``/``audio``) -> placeholder text in the prompt.
    media_placeholders: dict[str, str]


def chat_template(family: Family) -> str:
    """Render the shared Jinja chat template for one family.

    A content item counts as a medium when its ``type`` says so or when it carries the medium
    under its own key (``{"image": ...}``), as in the shipped Qwen templates; any other item
    with a ``text`` key contributes its text.
    """
    item = ""
    for kind, placeholder in family.media_placeholders.items():
        keyword = "elif" if item else "if"
        item += f"{{% {keyword} content['type'] == '{kind}' or '{kind}' in content %}}{placeholder}"
    item += "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    template = CHAT_TEMPLATE.replace("@@SYSTEM@@", family.default_system_prompt)
    return template.replace("@@ITEM@@", item)


def train_bpe(
    *,
    pre_tokenizer: pre_tokenizers.PreTokenizer,
    initial_alphabet: list[str],
    normalizer: normalizers.Normalizer | None = None,
    decoder: decoders.Decoder | None = None,
    corpus: str = CORPUS,
) -> Tokenizer:
    """Train a deterministic BPE (no unknown token, no subword affixes, merges seen twice or
    more, at most :data:`BPE_VOCAB_SIZE` symbols) on the lines of ``corpus``."""
    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix=""))
    if normalizer is not None:
        bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizer
    if decoder is not None:
        bpe.decoder = decoder
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=initial_alphabet,
        special_tokens=[],
    )
    bpe.train_from_iterator(corpus.splitlines(keepends=True), trainer=trainer)
    return bpe


def train_byte_level_bpe(
    split_regex: str, *, normalizer: normalizers.Normalizer | None = None, corpus: str = CORPUS
) -> Tokenizer:
    """:func:`train_bpe` as a GPT-2-style byte-level BPE: text split by ``split_regex`` (Qwen2's
    or Llama 3's pre-tokenisation regex), then mapped to the 256-symbol byte alphabet."""
    return train_bpe(
        normalizer=normalizer,
        pre_tokenizer=pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        ),
        decoder=decoders.ByteLevel(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        corpus=corpus,
    )


def learned_vocab(bpe: Tokenizer) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """A trained BPE's vocabulary (token -> id) and merges (pairs), as slow tokenizers take them."""
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return dict(model["vocab"]), merges


def train_tokenizer(family: Family) -> Qwen2Tokenizer:
    """Train a deterministic byte-level BPE on ``CORPUS`` and wrap it as a ``Qwen2Tokenizer``.

    The BPE uses Qwen2's exact normaliser and pre-tokeniser, so the saved folder reloads to the
    same tokenisation. Special tokens get explicit ids right after the learned vocabulary (in
    ``family.special_tokens`` order), and the processor-facing names (``image_token``, ...) are
    registered as model-specific special tokens so they survive ``save``/``from_pretrained``.
    """
    vocab, merges = learned_vocab(
        train_byte_level_bpe(PRETOKENIZE_REGEX, normalizer=normalizers.NFC())
    )
    # explicit ids: adding a token already in the vocab as special keeps its id
    for token in family.special_tokens:
        vocab[token] = len(vocab)

    eos = family.special_tokens[0]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=eos,
        eos_token=eos,
        pad_token=eos,
        extra_special_tokens=dict(family.named_tokens),
    )
    named = set(family.named_tokens.values())
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [t for t in family.special_tokens[1:] if t not in named]},
        replace_extra_special_tokens=False,
    )
    tokenizer.chat_template = chat_template(family)
    for token in family.special_tokens:
        if tokenizer.convert_tokens_to_ids(token) != vocab[token]:
            raise RuntimeError(f"special token {token!r} did not keep id {vocab[token]}")
    return tokenizer


def mrope_section(head_dim: int) -> list[int]:
    """Split a text head's rotary half-dimension into (t, h, w) sections like Qwen's [16, 24, 24].

    Qwen2.5's multimodal RoPE gives a quarter of the rotary frequencies to time and splits the
    rest between height and width; the sections must sum to ``head_dim // 2``.
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"text head_dim must be even and >= 6 for M-RoPE, got {head_dim}")
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def check_sizes(hidden_size: int, num_attention_heads: int, num_key_value_heads: int) -> int:
    """Validate the shared width knobs and return the head dimension.

    The vision tower reuses ``hidden_size``/``num_attention_heads``; its 2-D axial RoPE needs a
    head dimension divisible by 4.
    """
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size {hidden_size} not divisible by {num_attention_heads} heads")
    if num_attention_heads % num_key_value_heads:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    head_dim = hidden_size // num_attention_heads
    if head_dim % 4:
        raise ValueError(f"head_dim {head_dim} must be divisible by 4 (axial vision RoPE)")
    return head_dim


def padded(n: int, multiple: int = 64) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """Embedding rows covering every token id, padded to a multiple of 64 as Qwen does."""
    return padded(len(tokenizer))


def text_config(
    tokenizer: Qwen2Tokenizer,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
) -> dict[str, Any]:
    """Language-model sub-config shared by both families (Qwen2.5 decoder with M-RoPE)."""
    head_dim = check_sizes(hidden_size, num_attention_heads, num_key_value_heads)
    return {
        "vocab_size": vocab_size(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": 32768,
        "max_window_layers": num_hidden_layers,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": mrope_section(head_dim),
        },
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }


def vision_config(
    *, hidden_size: int, num_attention_heads: int, intermediate_size: int, depth: int
) -> dict[str, Any]:
    """Vision-tower sub-config shared by both families (Qwen2.5 ViT with window attention).

    The last block uses full attention, as in the real models; ``out_hidden_size`` feeds the
    language model.
    """
    return {
        "depth": depth,
        "hidden_size": hidden_size,
        "num_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "out_hidden_size": hidden_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [depth - 1],
        "in_channels": 3,
    }


# Pixel bounds of the shipped Qwen2.5-VL / Qwen2.5-Omni / Qwen3-Omni image processors
# (preprocessor_config).
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 12_845_056


def image_processor_kwargs(max_pixels: int | None, *, patch_size: int = 14) -> dict[str, Any]:
    """Qwen2-VL image-processor geometry: ``patch_size`` px patches (Qwen2/2.5's 14, Qwen3-Omni's
    16), 2x2 merge, 2-frame tubelets.

    Without ``max_pixels`` the pixel bounds are the shipped Qwen ones; with it, images are
    capped at ``max_pixels`` (and the floor lowered to fit) so tests stay cheap.
    """
    merged = 2 * patch_size
    if max_pixels is not None and max_pixels < merged * merged:
        raise ValueError(
            f"max_pixels must cover one {merged}x{merged} merged patch, got {max_pixels}"
        )
    cap = QWEN_MAX_PIXELS if max_pixels is None else max_pixels
    return {
        "patch_size": patch_size,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": min(QWEN_MIN_PIXELS, cap),
        "max_pixels": cap,
    }


def video_processor_kwargs(max_pixels: int | None) -> dict[str, Any]:
    """Same geometry for videos; per-frame pixel bounds only change when ``max_pixels`` is set.

    (``Qwen2_5OmniProcessor`` passes its own class-level video ``size`` at call time, so for
    the Omni folder the saved video bounds only matter to code that uses the video processor
    directly.)
    """
    kwargs = image_processor_kwargs(max_pixels)
    if max_pixels is None:
        del kwargs["min_pixels"], kwargs["max_pixels"]
    return kwargs


def spread_weights(model: torch.nn.Module, std: float) -> None:
    """Redraw every linear, embedding and convolution weight from N(0, std).

    With transformers' default init (std 0.02) a tiny random model maps every input to nearly
    the same last-token state (cosine ~0.99 between unrelated texts), so a parity test could not
    tell a right prompt from a wrong one. A wider init makes the states input-dependent.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(
                module,
                (
                    torch.nn.Linear,
                    torch.nn.Embedding,
                    torch.nn.Conv1d,
                    torch.nn.Conv2d,
                    torch.nn.Conv3d,
                ),
            ):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()


def spread_experts(model: torch.nn.Module, std: float) -> None:
    """Redraw the stacked MoE expert weights and the routers of a Qwen3 MoE decoder from
    N(0, std).

    They are bare parameters, not the Linears :func:`spread_weights` redraws; left at
    transformers' init (std 0.02) every expert would add almost nothing and the router would
    pick the same experts for every token (or by rounding noise).
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".mlp.experts." in name or name.endswith(".mlp.gate.weight"):
                param.normal_(0.0, std)


def with_spread_experts(
    model_class: type[PreTrainedModel], std: float
) -> Callable[[PreTrainedConfig], PreTrainedModel]:
    """A model factory for :func:`seeded_model`: ``model_class`` with its experts spread (by
    :func:`spread_experts`, before :func:`spread_weights` redraws the rest)."""

    def build(config: PreTrainedConfig) -> PreTrainedModel:
        model = model_class(config)
        spread_experts(model, std)
        return model

    return build


def seeded_model(
    model_class: type[PreTrainedModel] | Callable[[PreTrainedConfig], PreTrainedModel],
    config: PreTrainedConfig,
    *,
    seed: int,
    init_std: float,
    then: Callable[[PreTrainedModel], None] | None = None,
) -> PreTrainedModel:
    """``model_class(config)`` with its weights spread (:func:`spread_weights`), and ``then``
    applied (further draws from the same RNG), under a forked RNG seeded with ``seed``: equal
    seeds give identical weights without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
        spread_weights(model, init_std)
        if then is not None:
            then(model)
    return model


def save_model(
    model: PreTrainedModel,
    path: str | Path,
    *,
    dtype: torch.dtype,
    bos_token_id: int,
    eos_token_id: list[int],
    pad_token_id: int,
) -> Path:
    """Cast ``model`` to ``dtype`` (recorded in its config), give it a greedy generation config
    with these token ids, and save it into the folder ``path``; return that folder."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(dtype).eval()
    model.config.dtype = dtype
    model.generation_config = GenerationConfig(
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    return out


def whisper_feature_extractor(**overrides: Any) -> WhisperFeatureExtractor:
    """The Qwen Omni audio front end: 128 mel bins of 16 kHz audio, 10 ms hops, 25 ms windows,
    clips up to 300 s, right padding with an attention mask (``overrides`` on top)."""
    return WhisperFeatureExtractor(
        **{
            "feature_size": 128,
            "sampling_rate": TARGET_SAMPLING_RATE,
            "hop_length": 160,
            "n_fft": 400,
            "chunk_length": 300,
            "padding_side": "right",
            "return_attention_mask": True,
            **overrides,
        }
    )


def write_checkpoint(
    path: str | Path,
    *,
    family: Family,
    build_config: Callable[[Qwen2Tokenizer], PreTrainedConfig],
    model_class: type[PreTrainedModel] | Callable[[PreTrainedConfig], PreTrainedModel],
    build_processor: Callable[[Qwen2Tokenizer, str], ProcessorMixin],
    seed: int,
    dtype: torch.dtype,
    init_std: float,
) -> Path:
    """Shared folder writer: tokenizer -> config -> seeded random model -> save everything.

    The random init runs under a forked, seeded RNG (:func:`seeded_model`) so equal ``seed``
    gives identical weights without disturbing the caller's global RNG state.
    """
    tokenizer = train_tokenizer(family)
    model = seeded_model(model_class, build_config(tokenizer), seed=seed, init_std=init_std)
    out = save_model(
        model,
        path,
        dtype=dtype,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    processor = build_processor(tokenizer, tokenizer.chat_template)
    processor.save_pretrained(out)
    return out
