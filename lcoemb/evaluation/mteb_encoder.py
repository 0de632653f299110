"""mteb integration: :class:`MTEBEncoder` makes an :class:`~lcoemb.OmniEncoder` an mteb model.

mteb (2.x) hands a model a ``DataLoader`` of column batches (``text``, ``image``, ``audio``,
``video`` and bookkeeping columns such as ``id``). Each row becomes one encoder item: a single
part when one modality column is filled, a composite ``{"image": ..., "text": ...}`` when
several are (laid out and prompted as mteb's own ``LCOEmbedding`` does), so evaluation through
this wrapper is the reference recipe. Audio arrives as arrays or torchcodec decoders, video as
torchcodec decoders or frame tensors; video frames are sampled by the encoder's own rule
(:func:`lcoemb.inputs.frame_indices`: 2 fps, at most 64 frames), which is mteb's
``FramesCollator`` rule.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.types import PromptType
from tqdm.auto import tqdm

from lcoemb import __version__
from lcoemb.inputs import MODALITIES, Audio, InputError, Video, frame_indices

if TYPE_CHECKING:
    from mteb import TaskMetadata
    from torch.utils.data import DataLoader

    from lcoemb.encoder import OmniEncoder

CITATION = """@misc{xiao2025scalinglanguagecentricomnimodalrepresentation,
  title={Scaling Language-Centric Omnimodal Representation Learning},
  author={Chenghao Xiao and Hou Pong Chan and Hao Zhang and Weiwen Xu and Mahani Aljunied
          and Yu Rong},
  year={2025},
  eprint={2510.11693},
  archivePrefix={arXiv},
  primaryClass={cs.CL},
  url={https://arxiv.org/abs/2510.11693},
}"""


def model_name(name_or_path: str | os.PathLike[str]) -> str:
    """An mteb model name (``organization/model``) for a hub id, a local folder or an embedded
    default: hub ids stay as they are; local folders become ``local/<folder>``; ``lco-mini``
    becomes ``lcoemb/lco-mini``."""
    text = os.fspath(name_or_path)
    if os.path.exists(text):
        return f"local/{os.path.basename(os.path.normpath(os.path.abspath(text)))}"
    if "/" in text:
        return text
    return f"lcoemb/{text}"


def build_model_meta(
    encoder: OmniEncoder, name: str, adapter: str | os.PathLike[str] | None = None
) -> ModelMeta:
    """The mteb ``ModelMeta`` of ``encoder``: its modalities come from the backbone, scores are
    cosine similarities, and a loaded adapter is recorded as the experiment (so mteb keeps its
    results apart from the base model's)."""
    params = list(encoder.backbone.model.parameters())
    n_parameters = sum(p.numel() for p in params)
    memory = sum(p.numel() * p.element_size() for p in params) / 2**20
    return ModelMeta(
        loader=None,
        name=name,
        revision=f"lcoemb-{__version__}",  # results are kept per lcoemb version
        release_date=None,
        languages=None,
        n_parameters=n_parameters,
        memory_usage_mb=round(memory, 1),
        max_tokens=getattr(encoder.backbone, "max_text_tokens", None),
        embed_dim=encoder.embedding_dim,
        license=None,
        open_weights=True,
        public_training_code="https://github.com/lcoemb/lcoemb",
        public_training_data=None,
        framework=["PyTorch"],
        similarity_fn_name="cosine",
        use_instructions=True,
        training_datasets=None,
        modalities=sorted(encoder.modalities),
        citation=CITATION,
        experiment_kwargs={"adapter": os.path.basename(os.fspath(adapter))} if adapter else None,
    )


def _audio(value: Any) -> Audio:
    """An mteb audio cell (``{"array", "sampling_rate"}`` or a torchcodec ``AudioDecoder``)."""
    if hasattr(value, "get_all_samples"):
        samples = value.get_all_samples()
        return Audio(samples.data.numpy(), sampling_rate=int(samples.sample_rate))
    if isinstance(value, Mapping) and "array" in value:
        return Audio(np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]))
    raise TypeError(f"unsupported audio value {type(value).__name__}")


def _video(value: Any, encoder: OmniEncoder) -> Video:
    """An mteb video cell: a torchcodec ``VideoDecoder`` (sampled here by the encoder's rule, so
    only the kept frames are decoded) or ``(T, C, H, W)`` frames a collator already sampled."""
    if hasattr(value, "get_frames_at"):
        meta = value.metadata
        if meta.num_frames is None or meta.end_stream_seconds is None:
            raise ValueError("video has no frame count or duration metadata")
        keep = frame_indices(meta.num_frames, meta.end_stream_seconds, encoder.limits)
        value = value.get_frames_at(keep).data
    frames = np.asarray(value)
    if frames.ndim != 4:
        raise ValueError(f"video frames must be (T, C, H, W), got shape {frames.shape}")
    if frames.shape[1] == 3 and frames.shape[-1] != 3:
        frames = frames.transpose(0, 2, 3, 1)
    return Video(np.ascontiguousarray(frames))


def _image(value: Any) -> PIL.Image.Image:
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        return PIL.Image.open(source)
    raise TypeError(f"unsupported image value {type(value).__name__}")


def row_items(batch: Mapping[str, list[Any]], encoder: OmniEncoder) -> list[Any]:
    """The encoder items of one mteb batch: one item per row, a composite when a row fills
    several modality columns. Empty cells (``None``, ``""``) are absent parts."""
    columns = [m for m in MODALITIES if m in batch]
    if not columns:
        raise ValueError(f"batch has no modality column; columns are {sorted(batch)}")
    n = len(batch[columns[0]])
    convert = {
        "text": lambda v: v,
        "image": _image,
        "audio": _audio,
        "video": lambda v: _video(v, encoder),
    }
    items = []
    for i in range(n):
        parts = {}
        for m in columns:
            value = batch[m][i]
            if value is None or (isinstance(value, str) and not value):
                continue
            try:
                parts[m] = convert[m](value)
            except (TypeError, ValueError) as error:
                raise InputError(i, f"{m}: {error}") from error
        if not parts:
            raise InputError(i, f"row has no value in any of the columns {columns}")
        items.append(next(iter(parts.values())) if len(parts) == 1 else parts)
    return items


class MTEBEncoder(AbsEncoder):
    """An :class:`~lcoemb.OmniEncoder` behind mteb's ``EncoderProtocol``.

    >>> import mteb
    >>> from lcoemb import OmniEncoder
    >>> from lcoemb.evaluation import MTEBEncoder
    >>> model = MTEBEncoder(OmniEncoder.from_pretrained("lco-mini"))
    >>> mteb.evaluate(model, mteb.get_tasks(["STS12"]))  # doctest: +SKIP

    A task instruction, where mteb supplies one (the task's prompt, for queries and for
    symmetric tasks, never for retrieval documents), goes before the item on its own line; the
    reference wrapper ignores instructions, so ``use_instructions=False`` reproduces it exactly.
    """

    def __init__(
        self,
        encoder: OmniEncoder,
        name: str | None = None,
        *,
        adapter: str | os.PathLike[str] | None = None,
        use_instructions: bool = True,
        batch_size: int | None = None,
    ):
        self.model = encoder
        self.use_instructions = use_instructions
        self.batch_size = batch_size
        self.mteb_model_meta = build_model_meta(
            encoder, name or "lcoemb/unnamed-encoder", adapter=adapter
        )

    def instruction_for(
        self, task_metadata: TaskMetadata, prompt_type: PromptType | None
    ) -> str | None:
        """The instruction of a task for one side (None: no instruction)."""
        if not self.use_instructions or prompt_type == PromptType.document:
            return None
        return self.get_instruction(task_metadata, prompt_type) or None

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        instruction = self.instruction_for(task_metadata, prompt_type)
        show = kwargs.get("show_progress_bar", True)
        out: list[np.ndarray] = []
        seen = 0
        for batch in tqdm(inputs, desc=f"{task_metadata.name} ({hf_subset})", disable=not show):
            try:
                items = row_items(batch, self.model)
                vectors = self.model.encode(
                    items, batch_size=self.batch_size or len(items), instruction=instruction
                )
            except InputError as error:  # name the row in the whole split, and the split
                row = None if error.index is None else seen + error.index
                raise InputError(
                    row, f"{task_metadata.name} ({hf_subset}/{hf_split}): {error.reason}"
                ) from error
            out.append(vectors)
            seen += len(items)
        return np.concatenate(out) if out else np.zeros((0, self.model.embedding_dim), np.float32)
