"""SmolVLM / Idefics3: text and image.

One backbone for both model types: SmolVLM2 checkpoints (``smolvlm``) and SmolVLM v1 /
Idefics3 ones (``idefics3``, e.g. SmolVLM-256M-Instruct) share the architecture (a SigLIP tower,
a pixel-shuffle connector, a Llama/SmolLM2 decoder under ``model.text_model``) and the prompt
format, and differ in their transformers classes, which :meth:`SmolVLMBackbone.from_pretrained`
picks from the config.

The processors split each image into square tiles plus a global view and take a batch's images
as one list per prompt (:meth:`SmolVLMBackbone._media_kwargs`). SmolVLM2 can also read video;
this backbone encodes text and images only.

The decoder is Llama's: positions count each row's real tokens
(:attr:`~lcoemb.backbones.HFChatBackbone.positions_from_mask`), and the text fast path of
:mod:`lcoemb.backbones.fastpath` applies; there is no Qwen vision tower for the other one.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import torch
from transformers import (
    AutoConfig,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    SmolVLMForConditionalGeneration,
    SmolVLMProcessor,
)

from lcoemb.backbones.base import HFChatBackbone
from lcoemb.inputs import LoadedItem

__all__ = ["Idefics3Backbone", "SmolVLMBackbone"]


class SmolVLMBackbone(HFChatBackbone):
    """SmolVLM2 checkpoints, and the dispatcher for both model types (``load_backbone`` picks
    this class for either)."""

    family = "smolvlm"
    model_types = ("smolvlm", "idefics3")
    modalities = frozenset({"text", "image"})
    model_class = SmolVLMForConditionalGeneration
    processor_class = SmolVLMProcessor
    positions_from_mask = True
    language_model_prefix = "model.text_model."
    processor_args: ClassVar[dict[str, str]] = {"image": "images"}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> SmolVLMBackbone:
        """Load with the transformers classes of the checkpoint's ``model_type``: an
        ``idefics3`` one as :class:`Idefics3Backbone`."""
        model_type = AutoConfig.from_pretrained(os.fspath(name_or_path)).model_type
        target = Idefics3Backbone if model_type == "idefics3" else SmolVLMBackbone
        return super(SmolVLMBackbone, target).from_pretrained(
            name_or_path,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            **kwargs,
        )

    @property
    def language_model(self) -> Any:
        return self.model.model.text_model

    def _media_kwargs(self, items: list[LoadedItem]) -> dict[str, Any]:
        """The images as one list per prompt (empty for a text-only one): SmolVLM's processor
        reads a flat list as the images of a single prompt.

        ``max_image_pixels`` caps the longest edge the processor resizes an image to (before
        cutting it into tiles) at ``sqrt(max_image_pixels)``, rounded down to whole tiles and at
        least one: these processors bound an image by its longest edge, not its pixels.
        """
        images = [item.of("image") for item in items]
        if not any(images):
            return {}
        kwargs: dict[str, Any] = {"images": images}
        if self.max_image_pixels is not None:
            tile = self.processor.image_processor.max_image_size["longest_edge"]
            edge = max(1, math.isqrt(self.max_image_pixels) // tile) * tile
            kwargs["images_kwargs"] = {"size": {"longest_edge": edge}}
        return kwargs


class Idefics3Backbone(SmolVLMBackbone):
    """SmolVLM v1 / Idefics3 checkpoints (``model_type`` ``idefics3``): the same recipe with
    the Idefics3 classes. :meth:`SmolVLMBackbone.from_pretrained` returns one for them."""

    model_types = ("idefics3",)
    model_class = Idefics3ForConditionalGeneration
    processor_class = Idefics3Processor
