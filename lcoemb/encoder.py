"""``OmniEncoder``: one embedding model for text, images, audio, video and interleaved inputs.

The encoder owns everything between a list of user items and a matrix of vectors: validation,
grouping by modality, length-sorted batching, the forward pass under ``inference_mode``, error
handling, LoRA adapters (loading one, attaching a new one for training, merging) and save/load.
It pools and normalises with :mod:`lcoemb.pooling`, the one place that defines both. The model
family specifics (prompt template, inputs, the forward pass to hidden states and the position to
pool, generation) live in :mod:`lcoemb.backbones`; embedded model names resolve in
:mod:`lcoemb.mini.registry`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm

from lcoemb import pooling
from lcoemb.backbones import Backbone, load_backbone
from lcoemb.backbones.base import DEFAULT_MAX_TEXT_TOKENS
from lcoemb.devices import warn_if_slow
from lcoemb.inputs import InputError, Limits, LoadedItem, inspect_item, load_item
from lcoemb.mini.registry import backbone_path, base_name, resolve
from lcoemb.prompts import SUFFIXES

CONFIG_NAME = "lcoemb.json"
#: ``on_error(index, error)``: told of each item that cannot be encoded, instead of raising
ErrorHandler = Callable[[int, InputError], None]


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """A torch dtype from its name; ``"auto"`` (the checkpoint's own) passes through."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(
            f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16', 'float32' or 'auto'"
        )
    return value


class ModelLocation(NamedTuple):
    """What :func:`locate` finds: where the backbone loads from (a folder or a Hugging Face id),
    the adapter folder the model carries (or None), and its saved encoder settings."""

    backbone: str
    adapter: Path | None
    settings: dict[str, Any]


def locate(name_or_path: str | os.PathLike[str]) -> ModelLocation:
    """Where a model's backbone and the adapter it carries are, and its saved encoder settings,
    without loading anything.

    ``name_or_path`` is an embedded name (``"lco-mini"`` carries the LCO adapter), a Hugging Face
    id, or a folder. A folder written by :meth:`OmniEncoder.save_pretrained` holds either merged
    weights (a plain checkpoint), or only an adapter and a ``lcoemb.json`` naming its base; one
    written by earlier versions holds the base weights with the adapter in a subfolder.
    """
    embedded = resolve(name_or_path)
    if embedded is not None:
        return ModelLocation(os.fspath(embedded.backbone), embedded.adapter, {})
    folder = Path(os.fspath(name_or_path))
    settings: dict[str, Any] = {}
    if (folder / CONFIG_NAME).is_file():
        settings = json.loads((folder / CONFIG_NAME).read_text())
    adapter = folder / settings["adapter"] if settings.get("adapter") else None
    base = settings.get("base")
    if base is None:
        return ModelLocation(os.fspath(name_or_path), adapter, settings)
    return ModelLocation(backbone_path(base), adapter, settings)


def _portable_name(name_or_path: str) -> str:
    """How a saved adapter names its base: an embedded name stays a name, a local folder
    becomes absolute (the adapter folder may be read from anywhere), a hub id stays an id."""
    if os.path.exists(name_or_path):
        return base_name(name_or_path) or os.path.abspath(name_or_path)
    return name_or_path


class OmniEncoder:
    """Embeds text, images, audio, video and interleaved lists with a multimodal LLM.

    Use :meth:`from_pretrained` to build one. Vectors are the final layer's last-token state
    after the chat template and a one-word-summary prompt, L2-normalised (the LCO-EMB recipe).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        limits: Limits | None = None,
        adapter: str | os.PathLike[str] | None = None,
    ):
        self.backbone = backbone
        self.limits = limits or Limits()
        self.peft_model: Any = None
        if adapter is not None:
            self.load_adapter(adapter)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        adapter: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        attn_implementation: str | None = None,
        max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS,
        max_image_pixels: int | None = None,
        max_video_pixels: int | None = None,
        limits: Limits | None = None,
        prompt_suffixes: Mapping[str, str] | None = None,
    ) -> OmniEncoder:
        """Load a backbone and optionally a peft LoRA adapter.

        ``name_or_path`` is a Hugging Face id, a local folder, or an embedded default:
        ``"lco-mini"`` (LCO-Mini with its text-only LCO adapter) or ``"lco-mini-base"``
        (generative stage only).

        ``dtype`` defaults to bfloat16, the precision of the reference recipe, where the device
        computes it fast (CUDA, Apple's MPS, a CPU with AMX or AVX-512 bf16) and to float32 on
        other CPUs, whose bf16 kernels run several times slower
        (:func:`~lcoemb.devices.default_dtype`); ``"auto"`` keeps the checkpoint's own. The
        caps default to the reference's: ``max_text_tokens`` 300;
        ``max_image_pixels``/``max_video_pixels`` ``None`` keep the processor's own per-image and
        per-frame bounds; ``limits`` sets audio length and video frame sampling. A folder written
        by :meth:`save_pretrained` restores its settings, and its adapter if it kept one apart
        (an explicit ``adapter`` takes the place of the one a model carries).

        ``prompt_suffixes`` replaces some of the one-word-summary suffixes, keyed like
        :data:`lcoemb.prompts.SUFFIXES` (``{"text": "\\nSummary above sentence in one word:"}``):
        each family has its default (:attr:`~lcoemb.backbones.Backbone.suffixes`, the LCO-EMB
        wording unless its published embedders use another), and a saved folder keeps its own.
        """
        unknown = sorted(set(prompt_suffixes or {}) - set(SUFFIXES))
        if unknown:
            raise ValueError(
                f"prompt_suffixes: unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(SUFFIXES)}"
            )
        source, carried, saved = locate(name_or_path)
        adapter = adapter if adapter is not None else carried
        max_text_tokens = saved.get("max_text_tokens", max_text_tokens)
        max_image_pixels = saved.get("max_image_pixels", max_image_pixels)
        max_video_pixels = saved.get("max_video_pixels", max_video_pixels)
        if limits is None and "limits" in saved:
            limits = Limits(**saved["limits"])
        backbone = load_backbone(
            source,
            device=device,
            dtype=parse_dtype(dtype),
            attn_implementation=attn_implementation,
            max_text_tokens=max_text_tokens,
            max_image_pixels=max_image_pixels,
            max_video_pixels=max_video_pixels,
        )
        warn_if_slow(backbone.device, backbone.language_model.dtype)
        backbone.suffixes = {
            **backbone.suffixes,
            **saved.get("prompt_suffixes", {}),
            **(prompt_suffixes or {}),
        }
        return cls(backbone, limits=limits or Limits(), adapter=adapter)

    def load_adapter(self, adapter: str | os.PathLike[str]) -> None:
        """Inject a peft LoRA adapter folder into the backbone (unmerged, so it can be removed)."""
        if self.peft_model is not None:
            raise ValueError("an adapter is already loaded; load a fresh encoder for another one")
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"no peft adapter (adapter_config.json) in {os.fspath(adapter)!r}"
            )
        self.peft_model = PeftModel.from_pretrained(self.backbone.model, os.fspath(adapter))
        self.peft_model.eval()

    def add_lora(
        self,
        *,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        seed: int = 0,
        targets: Sequence[str] | None = None,
    ) -> Any:
        """Attach a new LoRA adapter for training and return the peft model (also kept as
        :attr:`peft_model`, which :meth:`save_pretrained` then saves or merges).

        It adapts :meth:`~lcoemb.backbones.Backbone.lora_target_modules` (every Linear of the
        language model, no bias) with rank ``r``, ``lora_alpha`` ``alpha`` and ``dropout``;
        ``targets`` narrows that to the Linears whose own name (the last part of the module path,
        such as ``q_proj``) is listed, and raises ``ValueError`` naming the available names for
        one that matches nothing. Its
        initial weights depend on ``seed`` alone, not on the global random state (left as it
        was), so every process and every run of a seed starts from the same adapter. The model
        stays in the mode it was in; call ``.train()`` on what this returns to train it.
        """
        if self.peft_model is not None:
            raise ValueError("an adapter is already loaded; train from a model without one")
        lora = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=self.backbone.lora_target_modules(targets),
            bias="none",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.peft_model = get_peft_model(self.backbone.model, lora)
        return self.peft_model

    def save_pretrained(self, path: str | os.PathLike[str], *, merge: bool = True) -> None:
        """Write the encoder to ``path`` so that :meth:`from_pretrained` gives it back.

        By default a loaded adapter is merged into the weights (``merge_and_unload``) first, so
        the folder is a plain checkpoint and every loader (transformers, mteb's ``LCOEmbedding``)
        gets the adapted model; a bare base beside a separate adapter would load as the base,
        without a word. The merge happens in this encoder too: it then holds the merged weights
        and no removable adapter, and so keeps producing exactly the vectors the folder will.
        It runs in the encoder's dtype: in bf16 each merged weight is rounded after the
        adapter's change is added, which loses the part of a small adapter's change below bf16's
        resolution (``lco-mini``'s vectors move to cosine 0.97 merged in bf16, against 0.998 in
        float32); load in float32 to merge exactly.

        ``merge=False`` keeps the adapter apart instead: the folder holds only the peft adapter
        files and ``lcoemb.json`` naming the base, and no ``config.json``, so that nothing can
        load it as a finished model; :meth:`from_pretrained` loads the base with the adapter.
        Without an adapter, ``merge`` changes nothing.
        """
        out = Path(path)
        apart = self.peft_model is not None and not merge
        # a folder holding both a checkpoint and an adapter loads as whichever a loader looks for
        other = "config.json" if apart else "adapter_config.json"
        if (out / other).exists():
            raise ValueError(
                f"{out} already holds {other} from an earlier save of the other kind; save into "
                "an empty folder"
            )
        out.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {"family": self.backbone.family}
        if apart:
            self.peft_model.save_pretrained(out)
            settings["base"] = _portable_name(self.backbone.name_or_path)
            settings["adapter"] = "."
        else:
            merged = self.peft_model is not None
            if merged:
                self.backbone.model = self.peft_model.merge_and_unload()
                self.peft_model = None
            self.backbone.save_pretrained(out, merged=merged)
        settings |= {
            "max_text_tokens": getattr(self.backbone, "max_text_tokens", None),
            "max_image_pixels": getattr(self.backbone, "max_image_pixels", None),
            "max_video_pixels": getattr(self.backbone, "max_video_pixels", None),
            "limits": dataclasses.asdict(self.limits),
            "prompt_suffixes": dict(self.backbone.suffixes),
        }
        (out / CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n")

    # ------------------------------------------------------------------ properties

    @property
    def embedding_dim(self) -> int:
        return self.backbone.hidden_size

    @property
    def default_batch_size(self) -> int:
        """Items per batch when a caller gives none: the backbone's
        :attr:`~lcoemb.backbones.Backbone.default_batch_size`."""
        return self.backbone.default_batch_size

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self.backbone.modalities)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the language model computes in (the default depends on the device: see
        :meth:`from_pretrained`)."""
        return self.backbone.language_model.dtype

    # ------------------------------------------------------------------ encoding

    def plan_batches(
        self,
        inputs: Sequence[Any],
        batch_size: int | None = None,
        on_error: ErrorHandler | None = None,
    ) -> list[list[int]]:
        """Validate every item, then group indices by modality and sort each group by size
        (longest first, so an out-of-memory shows up at once), cut into batches of
        ``batch_size`` (``None``: :attr:`default_batch_size`). An invalid item raises, or with
        ``on_error`` is reported to it and left out of every batch."""
        if batch_size is None:
            batch_size = self.default_batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        groups: dict[str, list[tuple[float, int]]] = {}
        for i, item in enumerate(inputs):
            try:
                info = inspect_item(item, i)
            except InputError as error:
                if on_error is None:
                    raise
                on_error(i, error)
                continue
            groups.setdefault(info.group, []).append((info.cost, i))
        batches = []
        for members in groups.values():
            order = [i for _, i in sorted(members, key=lambda ci: (-ci[0], ci[1]))]
            batches += [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        return batches

    def _load_one(self, inputs: Sequence[Any], i: int) -> LoadedItem:
        item = load_item(inputs[i], i, self.limits)
        self.backbone.check_item(item, i)
        return item

    def _load(self, inputs: Sequence[Any], batch: list[int]) -> list[LoadedItem]:
        return [self._load_one(inputs, i) for i in batch]

    def embed(self, items: Sequence[Any], instruction: str | None = None) -> torch.Tensor:
        """Differentiable last-token states ``(B, d)`` for one batch, unnormalised, in input order.

        The training path: the same loading, prompting and pooling as :meth:`encode`, but with
        autograd enabled (when the caller enables it) and no sorting or batching of its own.
        """
        loaded = self._load(items, list(range(len(items))))
        return pooling.last_token(self.backbone.forward(self.backbone.prepare(loaded, instruction)))

    def iter_hidden_states(
        self,
        inputs: Sequence[Any],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        instruction: str | None = None,
        all_layers: bool = False,
        on_error: ErrorHandler | None = None,
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield ``(indices, last-token states)`` batch by batch, in planned (not input) order.

        States are ``(B, d)``, or ``(num_layers + 1, B, d)`` with ``all_layers``; they stay in
        the model's dtype. This is the single forward path behind :meth:`encode` and the
        analyses.

        Without ``on_error`` the first item that cannot be encoded raises. With it, each such
        item is reported as ``on_error(index, InputError)`` and left out of the indices yielded,
        and the others are encoded: items that fail to decode are dropped from their batch, and a
        batch the model itself rejects is retried item by item to find the culprit (one bad file
        in a collection must not cost the whole run).
        """
        batches = self.plan_batches(inputs, batch_size, on_error)
        bar = tqdm(total=len(inputs), desc="Encoding", unit="item", disable=not show_progress)
        with bar:
            for batch in batches:
                yield from self._forward_batch(inputs, batch, instruction, all_layers, on_error)
                bar.update(len(batch))

    def _forward_batch(
        self,
        inputs: Sequence[Any],
        batch: list[int],
        instruction: str | None,
        all_layers: bool,
        on_error: ErrorHandler | None,
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        if on_error is None:
            yield batch, self._states(self._load(inputs, batch), instruction, all_layers)
            return
        kept, items = [], []
        for i in batch:
            try:
                items.append(self._load_one(inputs, i))
                kept.append(i)
            except InputError as error:
                on_error(i, error)
        if len(kept) > 1:
            try:
                states = self._states(items, instruction, all_layers)
            except Exception:  # retried one at a time below, to name the item at fault
                pass
            else:
                yield kept, states
                return
        for i, item in zip(kept, items):
            try:
                states = self._states([item], instruction, all_layers)
            except Exception as error:
                on_error(i, InputError(i, f"cannot encode: {error}"))
                continue
            yield [i], states

    def _states(
        self, items: list[LoadedItem], instruction: str | None, all_layers: bool
    ) -> torch.Tensor:
        with torch.inference_mode():
            inputs = self.backbone.prepare(items, instruction)
            return pooling.last_token(self.backbone.forward(inputs, all_layers=all_layers))

    def encode(
        self,
        inputs: Sequence[Any] | Any,
        batch_size: int | None = None,
        show_progress: bool = False,
        normalize: bool = True,
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
        on_error: ErrorHandler | None = None,
    ) -> np.ndarray:
        """Embed items (``str``, ``PIL.Image.Image``, :class:`~lcoemb.Audio`,
        :class:`~lcoemb.Video`, or a ``list`` of these for one interleaved item).

        Returns a float32 array ``(n, d)`` in input order. ``batch_size`` ``None`` takes the
        model's own default (:attr:`default_batch_size`: 32 for ``lco-mini``, 8 otherwise).
        ``instruction`` is prepended to every item, for query-side task instructions. A single
        non-list item gives shape ``(1, d)``.
        ``dimensions`` keeps the first N components of each vector (the shorter vectors of a
        Matryoshka-trained model), re-normalised when ``normalize``.

        An item that cannot be encoded raises :class:`~lcoemb.InputError` naming its index; with
        ``on_error`` it is reported as ``on_error(index, error)`` instead, the others are
        encoded, and its row is NaN, so that it cannot pass for a vector.
        """
        width = self.embedding_dim if dimensions is None else dimensions
        if not 1 <= width <= self.embedding_dim:
            raise ValueError(
                f"dimensions must be between 1 and the model's {self.embedding_dim}, "
                f"got {dimensions}"
            )
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        out = np.full((len(inputs), width), np.nan, dtype=np.float32)
        for batch, states in self.iter_hidden_states(
            inputs,
            batch_size=batch_size,
            show_progress=show_progress,
            instruction=instruction,
            on_error=on_error,
        ):
            vectors = pooling.normalize(states, width) if normalize else states.float()[:, :width]
            out[batch] = vectors.cpu().numpy()
        return out

    def generate(
        self, inputs: Sequence[Any], prompt: str, *, max_new_tokens: int = 32, batch_size: int = 8
    ) -> list[str]:
        """Generate text for each item followed by ``prompt`` (used to score generation ability)."""
        results: list[str] = [""] * len(inputs)
        for batch in self.plan_batches(inputs, batch_size):
            items = self._load(inputs, batch)
            texts = self.backbone.generate(items, prompt, max_new_tokens=max_new_tokens)
            for i, text in zip(batch, texts):
                results[i] = text
        return results
