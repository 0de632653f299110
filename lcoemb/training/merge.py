"""Deployment: merge a LoRA adapter into its backbone, and average adapters into a model soup."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lcoemb.encoder import OmniEncoder, locate

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def merge_adapter(
    model: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Fold ``adapter`` into the backbone weights (``merge_and_unload``) and save a plain
    checkpoint with its processor, loadable by transformers and by mteb's reference wrapper
    (an LCO-Mini folder carries its merged LM layers, and loads with lcoemb).

    ``model`` may be an embedded name. ``adapter`` ``None`` merges the adapter the model
    carries: ``lco-mini``'s, or that of a folder saved with ``merge=False``. A model that
    carries one refuses another, since which of the two was meant would be a guess.

    ``dtype`` defaults to the checkpoint's own: merging a float32 base in bf16 would round the
    merged weights.
    """
    carried = locate(model).adapter
    if adapter is not None and carried is not None:
        raise ValueError(
            f"{os.fspath(model)!r} already carries the adapter {os.fspath(carried)!r}; merge "
            "another one into its base (lco-mini-base for lco-mini), or leave the adapter out "
            "to merge the one it carries"
        )
    if adapter is None and carried is None:
        raise ValueError(f"{os.fspath(model)!r} carries no adapter: name the one to merge")
    encoder = OmniEncoder.from_pretrained(
        model, adapter=adapter, device="cpu", dtype=dtype or "auto"
    )
    out = Path(output)
    encoder.save_pretrained(out)  # merges
    return out


def soup_adapters(
    adapters: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    weights: Sequence[float] | None = None,
) -> Path:
    """Average LoRA adapters trained on different data (a "model soup"), optionally weighted.

    The adapters must share their configuration (rank, alpha, target modules); the LoRA A and B
    matrices are averaged tensor by tensor, as the reference's soup does.
    """
    paths = [Path(a) for a in adapters]
    if len(paths) < 2:
        raise ValueError("a soup needs at least two adapters")
    weights = list(weights) if weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weights given for {len(paths)} adapters")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    for p in paths:
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (p / name).is_file():
                raise FileNotFoundError(f"{p}: missing {name}; is it a peft adapter folder?")

    def shape(cfg: dict) -> dict:
        keys = ("r", "lora_alpha", "target_modules", "peft_type", "base_model_name_or_path")
        return {k: cfg.get(k) for k in keys}

    configs = [json.loads((p / ADAPTER_CONFIG).read_text()) for p in paths]
    for p, cfg in zip(paths[1:], configs[1:]):
        if shape(cfg) != shape(configs[0]):
            raise ValueError(
                f"{p} is not compatible with {paths[0]}: {shape(cfg)} vs {shape(configs[0])}"
            )
    total = sum(weights)
    states = [load_file(str(p / ADAPTER_WEIGHTS)) for p in paths]
    for p, state in zip(paths[1:], states[1:]):
        if state.keys() != states[0].keys():
            raise ValueError(f"{p} has different tensors from {paths[0]}")
    soup = {
        k: sum(w / total * s[k].double() for w, s in zip(weights, states)).to(states[0][k].dtype)
        for k in states[0]
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    save_file(soup, str(out / ADAPTER_WEIGHTS))
    shutil.copy(paths[0] / ADAPTER_CONFIG, out / ADAPTER_CONFIG)
    return out
