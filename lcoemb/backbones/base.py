"""The backbone interface, and its implementation for Hugging Face chat MLLMs.

A backbone knows one model family: how to turn decoded items into processor inputs, how to run
the forward pass to hidden states, and how to generate. It knows nothing about pooling into
vectors, losses or indexes; those live in :mod:`lcoemb.encoder` and :mod:`lcoemb.training`.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from lcoemb.backbones import fastpath
from lcoemb.inputs import InputError, LoadedItem, Modality
from lcoemb.prompts import build_messages

#: Reference text cap: more token ids than this and the text is cut (mteb ``LCOEmbedding``).
DEFAULT_MAX_TEXT_TOKENS = 300


class ModalityError(InputError):
    """The backbone has no tower for a modality the item contains."""


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 much faster than float32: CUDA with bf16 support, or a
    CPU with AMX or AVX-512 bf16 (several times faster there, through autocast)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch._C._cpu
    return device.type == "cpu" and (
        cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()
    )


class Backbone(ABC):
    """One MLLM family behind a uniform interface.

    Subclasses set :attr:`family`, :attr:`model_types` (config ``model_type`` values they load)
    and :attr:`modalities`, and implement :meth:`prepare`, :meth:`forward` and :meth:`generate`.
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    modalities: ClassVar[frozenset[Modality]]

    model: torch.nn.Module
    name_or_path: str
    tokenizer: Any
    max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS

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
    def hidden_size(self) -> int: ...

    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    def truncate_text(self, text: str) -> str:
        """Cut ``text`` to :attr:`max_text_tokens` token ids, decoding the kept prefix (as the
        reference does, so the cut text is templated again like any other)."""
        if self.max_text_tokens is None:
            return text
        ids = self.tokenizer(text).input_ids
        if len(ids) <= self.max_text_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_text_tokens])

    def truncate_item(self, item: LoadedItem) -> LoadedItem:
        """``item`` with every text part cut by :meth:`truncate_text`."""
        if self.max_text_tokens is None:
            return item
        parts = [(m, self.truncate_text(v) if m == "text" else v) for m, v in item.parts]
        return LoadedItem(parts, item.interleaved)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (training); disables the KV cache."""
        self.model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        self.model.config.use_cache = False

    @property
    @abstractmethod
    def language_model(self) -> Any:
        """The decoder (a transformers ``PreTrainedModel``) whose Linears LoRA adapts."""

    def use_float32_attention(self) -> None:
        """Compute the language model's attention in float32 (see
        :mod:`lcoemb.backbones.attention`): the fast choice for bf16 training on CPU."""
        from lcoemb.backbones.attention import register_float32_sdpa

        self.language_model.set_attn_implementation(register_float32_sdpa())

    @abstractmethod
    def lora_target_modules(self) -> list[str]:
        """Names of the modules LoRA adapts: every Linear of the language model except the LM
        head. Vision and audio towers and their projectors stay frozen (the reference recipe)."""

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
    def prepare(self, items: list[LoadedItem], instruction: str | None = None) -> dict[str, Any]:
        """Processor inputs (tensors on :attr:`device`) for a batch of items."""

    @abstractmethod
    def forward(self, inputs: dict[str, Any], *, all_layers: bool = False) -> torch.Tensor:
        """Last-token hidden states: ``(B, d)`` from the final layer (after the final norm), or
        ``(num_layers + 1, B, d)`` for the embedding output and every layer with ``all_layers``."""

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
    #: where the language model's decoder lives inside ``model``
    language_model_prefix: ClassVar[str] = "model.language_model."
    #: processor argument name for each media modality
    processor_args: ClassVar[dict[str, str]] = {"image": "images", "video": "videos"}

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
            dtype=dtype if dtype is not None else torch.bfloat16,
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
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def language_model(self) -> Any:
        return self.model.model.language_model

    def lora_target_modules(self) -> list[str]:
        names = []
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.Linear) or ".lora_" in name:
                continue
            name = name.removesuffix(".base_layer")  # already adapted by peft
            if name.startswith(self.language_model_prefix):
                names.append(name)
        return names

    def _template(self, messages: list[dict[str, Any]]) -> str:
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
                kwargs["videos_kwargs"]["max_pixels"] = self.max_video_pixels
        if "images" in kwargs and self.max_image_pixels is not None:
            kwargs["images_kwargs"] = {"max_pixels": self.max_image_pixels}
        return kwargs

    def _processor_inputs(self, texts: list[str], items: list[LoadedItem]) -> dict[str, Any]:
        with self._tokenizer_lock:
            batch = self.processor(
                text=texts, padding=True, return_tensors="pt", **self._media_kwargs(items)
            )
        return batch.to(self.device)

    def truncate_text(self, text: str) -> str:
        with self._tokenizer_lock:
            return super().truncate_text(text)

    def prepare(self, items: list[LoadedItem], instruction: str | None = None) -> dict[str, Any]:
        texts = [
            self._template(build_messages(self.truncate_item(item), instruction)) for item in items
        ]
        return self._processor_inputs(texts, items)

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

    def forward(self, inputs: dict[str, Any], *, all_layers: bool = False) -> torch.Tensor:
        # The inner multimodal model: merges media embeddings and computes (M-)RoPE positions,
        # but skips the LM head, whose vocabulary-sized logits an embedding never needs.
        if self.fast_text_path and not all_layers:
            with fastpath.last_token_only():
                out = self.model.model(**inputs, use_cache=False, return_dict=True)
            return out.last_hidden_state[:, -1]
        out = self.model.model(
            **inputs, output_hidden_states=all_layers, use_cache=False, return_dict=True
        )
        if all_layers:
            return torch.stack([h[:, -1] for h in out.hidden_states])
        return out.last_hidden_state[:, -1]

    def generate(
        self, items: list[LoadedItem], prompt: str, *, max_new_tokens: int = 32, **kwargs: Any
    ) -> list[str]:
        texts = []
        for item in items:
            content = [
                {"type": "text", "text": v} if m == "text" else {"type": m, m: "placeholder"}
                for m, v in item.parts
            ]
            content.append({"type": "text", "text": prompt})
            texts.append(self._template([{"role": "user", "content": content}]))
        inputs = self._processor_inputs(texts, items)
        kwargs.setdefault("do_sample", False)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def save_pretrained(self, path: str | os.PathLike[str], *, merged: bool = False) -> None:
        super().save_pretrained(path, merged=merged)
        self.processor.save_pretrained(path)
