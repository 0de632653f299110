"""Gemma 3n: text, image and audio (no video).

Gemma 3n differs from the Qwen families in ways that shape the choices here:

* **Prompt.** Its chat template starts with ``<bos>`` and ``GemmaTokenizer`` adds another one
  on encode; like transformers' own ``apply_chat_template(tokenize=True)``, prompts that already
  start with ``<bos>`` are tokenised without special tokens, so the model reads one ``<bos>``.
  The 300-token text cut counts the text's own tokens (no ``<bos>``). The template trims every
  text item, so the one-word suffix follows the text with no line break: that is the
  checkpoint's own formatting, kept as is.
* **Media.** Every image is resized to one square (768 pixels shipped) and becomes 256 soft
  tokens; ``max_image_pixels`` picks a smaller square. Every audio clip (16 kHz mono, cut at
  30 s) becomes 188 soft tokens, its shorter encoding padded with one embedding; the audio
  tower's output for a clip does not depend on the other clips of its batch.
* **Hidden states.** Each decoder layer carries four AltUp streams ``(4, B, n, d)``; the model's
  output averages them (after re-scaling) and applies the final norm. The pooled state is that
  ``last_hidden_state``. With ``all_layers``, a layer's state is its active AltUp stream (the
  one its attention and MLP update: index ``altup_active_idx``), starting from the merged input
  embeddings, and the last entry is the final-norm output, so it equals the pooled state.
* **Fast paths.** :mod:`lcoemb.backbones.fastpath` rebuilds a Qwen2.5 layer from its parts; a
  Gemma 3n layer (AltUp predict/correct, LAuReL, per-layer inputs, q/k/v norms, sliding-window
  layers, KV sharing) is something else, and its vision tower has no ``patch_embed``, so none is
  installed: the stock forward runs.
* **LoRA.** Every Linear of the language model except AltUp's (its router and its 4x4 and 4x16
  coefficient maps: LoRA on them is full rank, and in training AltUp applies the correction
  map's base weight directly, so an adapter there would be bypassed while training).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import Gemma3nConfig, Gemma3nForConditionalGeneration, Gemma3nProcessor

from lcoemb.backbones.base import HFChatBackbone
from lcoemb.inputs import LoadedItem
from lcoemb.pooling import HiddenStates, last_token_positions

__all__ = ["Gemma3nBackbone"]

#: MobileNetV5's total stride: image sides are kept multiples of it
_VISION_STRIDE = 32


class Gemma3nBackbone(HFChatBackbone):
    family = "gemma3n"
    model_types = ("gemma3n",)
    modalities = frozenset({"text", "image", "audio"})
    model_class = Gemma3nForConditionalGeneration
    processor_class = Gemma3nProcessor
    processor_args: ClassVar[dict[str, str]] = {"image": "images", "audio": "audio"}

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
        """Load as :meth:`HFChatBackbone.from_pretrained`, then restore the vision config's
        timm ``model_args``: timm's builder consumes a ``block_args`` list in place (a custom
        MobileNetV5, as in lcoemb's tiny checkpoints), which would leave the loaded config
        unsaveable."""
        backbone = super().from_pretrained(
            name_or_path,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            **kwargs,
        )
        saved = Gemma3nConfig.from_pretrained(os.fspath(name_or_path)).vision_config.model_args
        backbone.model.config.vision_config.model_args = copy.deepcopy(saved)
        return backbone

    def lora_target_modules(self, only: Sequence[str] | None = None) -> list[str]:
        """The language model's Linears, without AltUp's router and coefficient maps."""
        return [name for name in super().lora_target_modules(only) if ".altup." not in name]

    def _media_kwargs(self, items: list[LoadedItem]) -> dict[str, Any]:
        """As :meth:`HFChatBackbone._media_kwargs`, with ``max_image_pixels`` as the square the
        processor resizes every image to (it takes no pixel bound): the largest multiple of
        MobileNetV5's stride (32) whose square fits, never above the checkpoint's size."""
        kwargs = super()._media_kwargs(items)
        kwargs.pop("images_kwargs", None)
        if "images" in kwargs and self.max_image_pixels is not None:
            size = self.processor.image_processor.size
            side = max(1, math.isqrt(self.max_image_pixels) // _VISION_STRIDE) * _VISION_STRIDE
            side = min(side, size["height"], size["width"])
            kwargs["images_kwargs"] = {"size": {"height": side, "width": side}}
        return kwargs

    def model_inputs(self, texts: list[str], items: list[LoadedItem]) -> dict[str, Any]:
        """The processor's output for the prompts and media; no second ``<bos>`` when the
        templated prompts bring their own."""
        bos = self.tokenizer.bos_token
        own_bos = bos is not None and all(text.startswith(bos) for text in texts)
        with self._tokenizer_lock:
            batch = self.processor(
                text=texts,
                padding=True,
                return_tensors="pt",
                add_special_tokens=not own_bos,
                **self._media_kwargs(items),
            )
        return batch.to(self.device)

    def forward(self, inputs: dict[str, Any], *, all_layers: bool = False) -> HiddenStates:
        """The final-norm states; with ``all_layers`` the merged input embeddings, each layer's
        active AltUp stream, and the final-norm states in place of the last layer's."""
        if not all_layers:
            return super().forward(inputs)
        out = self.transformers_model.model(
            **inputs, output_hidden_states=True, use_cache=False, return_dict=True
        )
        active = self.text_config.altup_active_idx
        states = (*(h[active] for h in out.hidden_states[:-1]), out.last_hidden_state)
        return HiddenStates(states, last_token_positions(inputs["attention_mask"]))
