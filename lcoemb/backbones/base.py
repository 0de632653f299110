"""The backbone interface, its shared behaviour, and its implementation for Hugging Face chat
MLLMs.

A backbone knows one model family: how a user turn (:func:`lcoemb.prompts.build_content`) is
templated, how decoded items become model inputs, how the forward pass runs to hidden states,
and how to generate. Its forward pass returns :class:`~lcoemb.pooling.HiddenStates`: the states
and the position of each row to pool. Pooling and normalisation themselves live in
:mod:`lcoemb.pooling` and are applied by :class:`~lcoemb.encoder.OmniEncoder`; losses and
indexes know nothing of backbones.

:class:`Backbone` holds what every family shares: text truncation, item checks, the prompt,
LoRA targets (every Linear under :attr:`Backbone.language_model_prefix`), gradient checkpointing
and the forward pass of a transformers decoder. A family module adds loading, saving, its chat
template, how media reach the model (:meth:`Backbone.model_inputs`) and generation;
:class:`HFChatBackbone` does that for transformers ``*ForConditionalGeneration`` checkpoints,
so a Qwen family is a dozen lines.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from lcoemb.backbones import fastpath
from lcoemb.backbones.attention import register_float32_sdpa
from lcoemb.devices import default_device, default_dtype
from lcoemb.inputs import InputError, LoadedItem, Modality
from lcoemb.pooling import HiddenStates, last_token_positions
from lcoemb.prompts import SUFFIXES, build_content

__all__ = [
    "DEFAULT_MAX_TEXT_TOKENS",
    "Backbone",
    "HFChatBackbone",
    "ModalityError",
]

#: Reference text cap: more token ids than this and the text is cut (mteb ``LCOEmbedding``).
DEFAULT_MAX_TEXT_TOKENS = 300

#: the processor attribute that handles each media modality's kwargs
_COMPONENTS = {"images": "image_processor", "videos": "video_processor"}


class ModalityError(InputError):
    """The backbone has no tower for a modality the item contains."""


class Backbone(ABC):
    """One MLLM family behind a uniform interface.

    Subclasses set :attr:`family`, :attr:`model_types` (config ``model_type`` values they load),
    :attr:`modalities` and :attr:`language_model_prefix`, and implement :meth:`from_pretrained`,
    :attr:`language_model`, :meth:`template`, :meth:`model_inputs` and :meth:`generate`.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    modalities: ClassVar[frozenset[Modality]]
    #: where the language model's decoder layers live inside :attr:`model`; LoRA adapts every
    #: Linear under it
    language_model_prefix: ClassVar[str]

    #: the one-word-summary suffix per modality (keys as :data:`lcoemb.prompts.SUFFIXES`): the
    #: LCO-EMB wording unless a family's published embedders use another (E5-V's on
    #: LLaVA-NeXT); an instance may override it (``OmniEncoder.from_pretrained(prompt_suffixes=)``)
    suffixes: Mapping[str, str] = SUFFIXES

    model: torch.nn.Module
    name_or_path: str
    tokenizer: Any
    max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS
    #: whether :meth:`forward` runs :func:`lcoemb.backbones.fastpath.last_token_states`, which a
    #: family installs on its text model where :func:`~lcoemb.backbones.fastpath.supports_fast_path`
    #: holds; off, the model's own forward runs (what a benchmark compares it with)
    fast_text_path: bool = False
    #: whether the fast text path also serves autograd (training); a family whose shipped
    #: weights were trained on the plain path keeps training there, so its recipes reproduce
    fast_path_with_grad: ClassVar[bool] = True
    #: items per batch when a caller does not say (:meth:`lcoemb.OmniEncoder.encode`, the CLI,
    #: index builds): 8 for the billion-parameter families, whose media batches fill a GPU's
    #: memory; a small model sets more (``lco-mini``: 32)
    default_batch_size: ClassVar[int] = 8

    @classmethod
    @abstractmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> Backbone: ...

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    @abstractmethod
    def language_model(self) -> Any:
        """The decoder (a transformers ``PreTrainedModel``) whose Linears LoRA adapts."""

    @property
    def transformers_model(self) -> Any:
        """The transformers ``PreTrainedModel`` this backbone runs, with its LM head: by default
        :attr:`model` itself. Its ``model`` attribute (the same without the head) gives the
        hidden states; it owns gradient checkpointing and the KV-cache setting."""
        return self.model

    @property
    def text_config(self) -> Any:
        """The language model's configuration (hidden size, number of layers)."""
        return self.language_model.config

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    def truncate_text(self, text: str) -> str:
        """Cut ``text`` to :attr:`max_text_tokens` token ids, decoding the kept prefix (as the
        reference does, so the cut text is templated again like any other)."""
        if self.max_text_tokens is None:
            return text
        # the text's own tokens: a tokenizer that adds a BOS would otherwise decode it into the
        # cut text, and the template adds its own
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= self.max_text_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_text_tokens])

    def truncate_item(self, item: LoadedItem) -> LoadedItem:
        """``item`` with every text part cut by :meth:`truncate_text`."""
        if self.max_text_tokens is None:
            return item
        parts = [(m, self.truncate_text(v) if m == "text" else v) for m, v in item.parts]
        return LoadedItem(parts, item.interleaved)

    # ------------------------------------------------------------------ training

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (training); disables the KV cache."""
        model = self.transformers_model
        # transformers 5.24 renamed it (the old name warns); earlier 5.x have only the old one
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)({"use_reentrant": False})
        model.config.use_cache = False

    def use_float32_attention(self) -> None:
        """Compute the language model's attention in float32 (see
        :mod:`lcoemb.backbones.attention`): the fast choice for bf16 training on CPU."""
        self.language_model.set_attn_implementation(register_float32_sdpa())

    def lora_target_modules(self, only: Sequence[str] | None = None) -> list[str]:
        """Names of the modules LoRA adapts: every Linear under :attr:`language_model_prefix`
        (the language model's, without the LM head). Vision and audio towers and their
        projectors stay frozen (the reference recipe). ``only`` keeps the Linears whose last
        name part is listed (``["q_proj", "v_proj"]``); a listed name that matches none of them
        is an error, since peft would otherwise train a smaller adapter than asked for."""
        names = []
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.Linear) or ".lora_" in name:
                continue
            name = name.removesuffix(".base_layer")  # already adapted by peft
            if name.startswith(self.language_model_prefix):
                names.append(name)
        if not only:
            return names
        available = sorted({name.rsplit(".", 1)[-1] for name in names})
        unknown = [target for target in only if target not in available]
        if unknown:
            raise ValueError(
                f"LoRA target(s) {unknown} name no Linear of the language model; "
                f"available: {available}"
            )
        return [name for name in names if name.rsplit(".", 1)[-1] in only]

    # ------------------------------------------------------------------ inputs

    def check_item(self, item: LoadedItem, index: int) -> None:
        """Raise an :class:`~lcoemb.inputs.InputError` naming ``index`` if this backbone cannot
        encode ``item``: a :class:`ModalityError` if it needs a tower this backbone lacks
        (subclasses add their own checks)."""
        missing = sorted(set(item.modalities) - self.modalities)
        if missing:
            raise ModalityError(
                index,
                f"{self.family} backbone {self.name_or_path!r} cannot encode {', '.join(missing)} "
                f"(it supports {', '.join(sorted(self.modalities))})",
            )

    @abstractmethod
    def template(self, messages: list[dict[str, Any]]) -> str:
        """The chat-templated text of ``messages`` with the generation prompt, each medium
        standing as this family's placeholder for it."""

    def prompt(
        self, item: LoadedItem, instruction: str | None = None, *, suffix: str | None = None
    ) -> str:
        """The templated text the model reads for ``item``: one user turn
        (:func:`lcoemb.prompts.build_content`; ``suffix`` is the generation prompt when
        generating) in this family's chat template."""
        content = build_content(item, instruction, suffix=suffix, suffixes=self.suffixes)
        return self.template([{"role": "user", "content": content}])

    @abstractmethod
    def model_inputs(self, texts: list[str], items: list[LoadedItem]) -> dict[str, Any]:
        """Model inputs (tensors on :attr:`device`, left-padded, with an ``attention_mask``) for
        templated prompts and the media of ``items``, in order: one prompt per item."""

    def prepare(self, items: list[LoadedItem], instruction: str | None = None) -> dict[str, Any]:
        """Model inputs for embedding a batch of items (texts cut to :attr:`max_text_tokens`)."""
        texts = [self.prompt(self.truncate_item(item), instruction) for item in items]
        return self.model_inputs(texts, items)

    # ------------------------------------------------------------------ running

    def forward(self, inputs: dict[str, Any], *, all_layers: bool = False) -> HiddenStates:
        """The final layer's hidden states (after the final norm), or with ``all_layers`` the
        embedding output and every layer's, and the position of each row to pool. With the fast
        text path (:attr:`fast_text_path`), the final layer is computed for the pooled token
        only, which the states then hold alone, at position 0."""
        # The model without its LM head (for a multimodal model, the part that merges media
        # embeddings and computes positions): an embedding never needs vocabulary-sized logits.
        model = self.transformers_model.model
        fast = self.fast_text_path and (self.fast_path_with_grad or not torch.is_grad_enabled())
        if fast and not all_layers:
            with fastpath.last_token_only():
                out = model(**inputs, use_cache=False, return_dict=True)
            states = out.last_hidden_state  # (B, 1, d)
            return HiddenStates(states, states.new_zeros(len(states), dtype=torch.long))
        out = model(**inputs, output_hidden_states=all_layers, use_cache=False, return_dict=True)
        states = out.hidden_states if all_layers else out.last_hidden_state
        return HiddenStates(states, last_token_positions(inputs["attention_mask"]))

    @abstractmethod
    def generate(
        self, items: list[LoadedItem], prompt: str, *, max_new_tokens: int = 32, **kwargs: Any
    ) -> list[str]:
        """Greedy text generation for each item followed by ``prompt``."""

    def save_pretrained(self, path: str | os.PathLike[str], *, merged: bool = False) -> None:
        """Write the model and its processor so :meth:`from_pretrained` can reload them.

        ``merged`` says a LoRA adapter was folded into the weights since loading. A full
        checkpoint holds every weight anyway; a backbone that saves only its trained parts
        (LCO-Mini rebuilds its LM from a GGUF file) must then write the changed weights too.
        """
        self.model.save_pretrained(path)


class HFChatBackbone(Backbone):
    """A transformers ``*ForConditionalGeneration`` model with a chat-template processor.

    Inputs follow the LCO-EMB recipe: one user turn (media placeholders, text, one-word suffix),
    the checkpoint's own chat template with ``add_generation_prompt=True``, left padding, and the
    last token of the last layer. Subclasses name their transformers classes and may add
    processor keyword arguments per modality.
    """

    model_class: ClassVar[Any]
    processor_class: ClassVar[Any]
    language_model_prefix: ClassVar[str] = "model.language_model."
    #: processor argument name for each media modality
    processor_args: ClassVar[dict[str, str]] = {"image": "images", "video": "videos"}
    #: give each row positions counted from its first real token. A 1-D RoPE decoder (Llama)
    #: otherwise numbers a left-padded row from the batch's first column: RoPE is relative, so
    #: nothing changes exactly, but in bf16 the other rotations round differently and a short
    #: row's vector depends on its batch (cosine ~0.9995). M-RoPE families compute their own.
    positions_from_mask: ClassVar[bool] = False

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        name_or_path: str,
        *,
        max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS,
        max_image_pixels: int | None = None,
        max_video_pixels: int | None = None,
    ):
        self.model = model
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.name_or_path = name_or_path
        self.max_text_tokens = max_text_tokens
        self.max_image_pixels = max_image_pixels
        self.max_video_pixels = max_video_pixels
        #: set by :meth:`enable_fast_path`
        self.fast_text_path = False
        # transformers' fast tokenizers set padding and truncation on the one shared Rust
        # tokenizer in every call, so two threads tokenizing at once pad to each other's lengths
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> HFChatBackbone:
        path = os.fspath(name_or_path)
        processor = cls.processor_class.from_pretrained(path)
        model = cls.model_class.from_pretrained(
            path,
            dtype=dtype if dtype is not None else default_dtype(device),
            attn_implementation=attn_implementation or "sdpa",
        )
        model.to(device if device is not None else default_device()).eval()
        backbone = cls(model, processor, path, **kwargs)
        backbone.enable_fast_path()
        return backbone

    @property
    def text_config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def language_model(self) -> Any:
        return self.model.model.language_model

    def template(self, messages: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _media_kwargs(self, items: list[LoadedItem]) -> dict[str, Any]:
        """Media lists and per-modality processor kwargs for a batch."""
        kwargs: dict[str, Any] = {}
        for modality, arg in self.processor_args.items():
            media = [v for item in items for v in item.of(modality)]  # type: ignore[arg-type]
            if media:
                kwargs[arg] = media
        if "videos" in kwargs:
            # Frames are already sampled (lcoemb.inputs). No fps is passed: the processor then
            # assumes 2 fps for the temporal positions, as in the reference wrapper.
            kwargs["videos_kwargs"] = {"do_sample_frames": False}
            if self.max_video_pixels is not None:
                kwargs["videos_kwargs"]["size"] = self._capped_size("videos", self.max_video_pixels)
        if "images" in kwargs and self.max_image_pixels is not None:
            kwargs["images_kwargs"] = {"size": self._capped_size("images", self.max_image_pixels)}
        return kwargs

    def _capped_size(self, modality: str, max_pixels: int) -> dict[str, int]:
        """The pixel bounds a Qwen-style processor applies to ``modality`` ("images" or
        "videos"), with the upper one set to ``max_pixels``.

        transformers 5.x deprecates ``max_pixels`` in a processor call for ``size``
        (``shortest_edge``/``longest_edge`` in pixels), and a ``size`` passed replaces the
        processor's whole, so the lower bound is the one the processor would use: its own
        defaults for the modality where it sets them (Qwen2.5-Omni sets the video bounds at
        the processor level, over the saved video processor's), else the component's."""
        own = getattr(self.processor, f"{modality}_kwargs", {}).get("size")
        size = own or getattr(self.processor, _COMPONENTS[modality]).size
        return {**dict(size), "longest_edge": max_pixels}  # a SizeDict lists only its set keys

    def model_inputs(self, texts: list[str], items: list[LoadedItem]) -> dict[str, Any]:
        """The processor's output for the prompts and the items' media."""
        with self._tokenizer_lock:
            batch = self.processor(
                text=texts, padding=True, return_tensors="pt", **self._media_kwargs(items)
            )
        return batch.to(self.device)

    def truncate_text(self, text: str) -> str:
        with self._tokenizer_lock:
            return super().truncate_text(text)

    def prepare(self, items: list[LoadedItem], instruction: str | None = None) -> dict[str, Any]:
        inputs = super().prepare(items, instruction)
        if self.positions_from_mask:
            inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return inputs

    def enable_fast_path(self) -> None:
        """Install the inference fast paths of :mod:`lcoemb.backbones.fastpath` on this model
        instance, once (the class and any other model are untouched). Afterwards the model is
        never modified per call, so one backbone can encode from several threads at once."""
        text = self.language_model
        self.fast_text_path = fastpath.supports_fast_path(text)
        if self.fast_text_path:
            fastpath.install_last_token_path(text)
        visual = getattr(self.model.model, "visual", None)
        if visual is not None:
            visual.patch_embed.forward = fastpath.patch_embed_as_grid(visual.patch_embed)

    def generate(
        self, items: list[LoadedItem], prompt: str, *, max_new_tokens: int = 32, **kwargs: Any
    ) -> list[str]:
        inputs = self.model_inputs([self.prompt(item, suffix=prompt) for item in items], items)
        kwargs.setdefault("do_sample", False)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def save_pretrained(self, path: str | os.PathLike[str], *, merged: bool = False) -> None:
        super().save_pretrained(path, merged=merged)
        self.processor.save_pretrained(path)
