"""Qwen3-VL, dense and MoE: text, image and video (the backbone of Qwen3-VL-Embedding).

What differs from Qwen2.5-VL, and how this module handles it:

* Two transformers classes, one per ``model_type``: ``qwen3_vl`` loads as
  ``Qwen3VLForConditionalGeneration``, ``qwen3_vl_moe`` (every decoder MLP a sparse mixture of
  experts) as ``Qwen3VLMoeForConditionalGeneration``; both with ``Qwen3VLProcessor``.
* The text fast path of :mod:`lcoemb.backbones.fastpath` does not fit, so it is not installed:
  Qwen3 attention normalises each head's queries and keys (``q_norm``/``k_norm``), which the
  fast path's own attention skips; DeepStack adds vision-tower features to the outputs of the
  first decoder layers at the visual positions, which the fast path would drop; and a MoE block
  takes ``(batch, seq, d)`` states, not the fast path's packed ``(tokens, d)``. The ViT patch
  embedding is the same ``Conv3d`` (with a bias) as Qwen2.5's, so ``patch_embed_as_grid`` is.
* LoRA adapts the language model's Linears: with MoE those are the attention projections only
  (the experts are stacked 3-D parameters and the router a bare weight, not Linears).
* A video's prompt holds a timestamp per frame pair (``<0.2 seconds>``), which the processor
  computes from the clip's frame rate; see :data:`FRAME_RATE`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torchvision.transforms.v2 import functional as tvF
from transformers import (
    AutoConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from lcoemb.backbones.base import HFChatBackbone
from lcoemb.devices import default_device, default_dtype
from lcoemb.inputs import Limits, LoadedItem

#: The frame rate the processor is told a clip's frames have, for the timestamps in the prompt.
#: :mod:`lcoemb.inputs` samples every video at ``Limits.video_fps`` (2 fps, mteb's
#: ``LCOEmbedding``) before the backbone sees it, so the sampled frames are that far apart, unless
#: the frame cap thinned a long clip or the frames came already sampled (``Video(frames)``
#: without ``fps``). Left unset, the processor assumes 24 fps: timestamps twelve times too small.
FRAME_RATE = Limits.video_fps


class Qwen3VLBackbone(HFChatBackbone):
    family = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    modalities = frozenset({"text", "image", "video"})
    #: the transformers class for each of :attr:`model_types` (in place of ``model_class``)
    model_classes: ClassVar[dict[str, Any]] = {
        "qwen3_vl": Qwen3VLForConditionalGeneration,
        "qwen3_vl_moe": Qwen3VLMoeForConditionalGeneration,
    }
    processor_class = Qwen3VLProcessor

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> Qwen3VLBackbone:
        """As :meth:`HFChatBackbone.from_pretrained`, with the model class the checkpoint's
        ``model_type`` names (:attr:`model_classes`)."""
        path = os.fspath(name_or_path)
        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type not in cls.model_classes:
            raise ValueError(
                f"{path!r} is a {model_type!r} checkpoint, not Qwen3-VL "
                f"({', '.join(cls.model_classes)})"
            )
        processor = cls.processor_class.from_pretrained(path)
        model = cls.model_classes[model_type].from_pretrained(
            path,
            dtype=dtype if dtype is not None else default_dtype(device),
            attn_implementation=attn_implementation or "sdpa",
        )
        model.to(device if device is not None else default_device()).eval()
        backbone = cls(model, processor, path, **kwargs)
        backbone.enable_fast_path()
        return backbone

    def _media_kwargs(self, items: list[LoadedItem]) -> dict[str, Any]:
        """As the base, plus each clip's frame rate (:data:`FRAME_RATE`) for its timestamps, and
        ``max_video_pixels`` applied per frame (Qwen3-VL's video processor budgets whole clips,
        so the frames are fitted here and its own resize is skipped).

        A clip shorter than a tubelet (one frame: under half a second at 2 fps) gets its last
        frame repeated, as the processor pads any odd clip, and the repeated frame the last
        one's index, so its timestamp stays the real frame's: the processor's resize refuses
        such clips."""
        kwargs = super()._media_kwargs(items)
        if "videos" not in kwargs:
            return kwargs
        videos_kwargs = kwargs["videos_kwargs"]
        videos_kwargs.pop("size", None)  # the base's per-frame cap; Qwen3-VL's is per clip
        tubelet = self.processor.video_processor.temporal_patch_size
        videos, metadata = [], []
        for video in kwargs["videos"]:
            indices = list(range(len(video)))
            if len(video) < tubelet:
                repeat = tubelet - len(video)
                video = torch.cat([video, video[-1:].expand(repeat, -1, -1, -1)])
                indices += indices[-1:] * repeat
            if self.max_video_pixels is not None:
                video = self._fit_frames(video, self.max_video_pixels)
            videos.append(video)
            metadata.append(
                {"total_num_frames": len(video), "fps": FRAME_RATE, "frames_indices": indices}
            )
        kwargs["videos"] = videos
        videos_kwargs["video_metadata"] = metadata
        if self.max_video_pixels is not None:
            videos_kwargs["do_resize"] = False
        return kwargs

    def _fit_frames(self, video: torch.Tensor, max_pixels: int) -> torch.Tensor:
        """``(T, 3, H, W)`` frames resized as Qwen2-VL sizes a frame: whole merged patches, at
        most ``max_pixels`` pixels (at least one merged patch), the aspect ratio kept."""
        processor = self.processor.video_processor
        factor = processor.patch_size * processor.merge_size
        height, width = smart_resize(
            video.shape[-2],
            video.shape[-1],
            factor=factor,
            min_pixels=factor * factor,
            max_pixels=max(max_pixels, factor * factor),
        )
        if (height, width) == tuple(video.shape[-2:]):
            return video
        return tvF.resize(
            video, [height, width], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True
        )
