"""The geometry of an encoder's embedding space, per layer and per modality (``lcoemb analyze``).

The paper's first two claims are measured here on paired data (media item, its caption):

* **anisotropy** (:func:`lcoemb.analysis.metrics.anisotropy`) of each modality's last-token
  states at every layer: generative MLLMs are highly anisotropic, and text-only contrastive
  training lowers it for every modality;
* **kernel alignment** between each media modality and its captions at every layer:
  mutual k-NN (Huh et al. 2024) by default, CKA and CKNNA on request; text-only training
  raises it.

One forward pass per batch gives every layer's last-token state (the embedding output is layer
0; the last entry is the final layer after the final norm, i.e. exactly what
:meth:`~lcoemb.OmniEncoder.encode` returns, so the final anisotropy equals the one of the
encoder's vectors).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lcoemb.analysis import metrics
from lcoemb.analysis.plots import layer_curves
from lcoemb.inputs import InputError, item_from_record
from lcoemb.synthetic import as_input, dataset

MEDIA = ("image", "audio", "video")
ALIGNMENT_METRICS: dict[str, Callable[..., float]] = {
    "mutual_knn": metrics.mutual_knn,
    "cka": metrics.cka,
    "cknna": metrics.cknna,
}
#: generator kind of each media modality in the project's offline pairs
OFFLINE_KINDS = {"image": "scene", "audio": "speech", "video": "clip"}


@dataclass
class Pairs:
    """Paired items per media modality: ``media[m][i]`` is described by ``texts[m][i]``."""

    media: dict[str, list[Any]]
    texts: dict[str, list[str]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.media.values())


def read_pairs(path: str | Path) -> Pairs:
    """Pairs from a JSONL file of ``{"text": ..., "image"|"audio"|"video": path}`` lines.
    Relative paths resolve against the file's folder; every error names ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    media: dict[str, list[Any]] = {}
    texts: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(None, f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise InputError(None, f"{where}: expected a JSON object")
        kinds = [m for m in MEDIA if m in record]
        text = record.get("text")
        if len(kinds) != 1 or not isinstance(text, str) or not text.strip():
            raise InputError(
                None,
                f"{where}: a pair needs a non-empty 'text' and exactly one of "
                f"{', '.join(MEDIA)}; got keys {sorted(record)}",
            )
        (kind,) = kinds
        extra = {k: v for k, v in record.items() if k in ("sampling_rate", "fps")}
        item = item_from_record({kind: record[kind], **extra}, where, path.parent)
        media.setdefault(kind, []).append(item)
        texts.setdefault(kind, []).append(text)
    if not media:
        raise InputError(None, f"{path}: no pairs")
    return Pairs(media, texts)


def offline_pairs(n: int = 200, modalities: Sequence[str] = MEDIA) -> Pairs:
    """``n`` held-out generated pairs per modality: scenes and captions, espeak-ng speech and its
    text, clips and their descriptions (:mod:`lcoemb.synthetic`, ``test`` split)."""
    media: dict[str, list[Any]] = {}
    texts: dict[str, list[str]] = {}
    for modality in modalities:
        samples = dataset(OFFLINE_KINDS[modality], "test", n)
        media[modality] = [as_input(s) for s in samples]
        texts[modality] = [s.text for s in samples]
    return Pairs(media, texts)


def layer_states(encoder: Any, items: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
    """Every layer's last-token state of every item: float32 ``(layers + 1, n, d)``."""
    out: np.ndarray | None = None
    for batch, states in encoder.iter_hidden_states(
        items, batch_size=batch_size, show_progress=True, all_layers=True
    ):
        states = states.float().cpu().numpy()
        if out is None:
            out = np.zeros((states.shape[0], len(items), states.shape[-1]), dtype=np.float32)
        out[:, batch] = states
    assert out is not None
    return out


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``all``, ``last`` or comma-separated indices (negative count from the end) → sorted layer
    indices in ``0..n_layers-1``, always ending with the final layer."""
    final = n_layers - 1
    if spec == "all":
        return list(range(n_layers))
    if spec == "last":
        return [final]
    chosen = set()
    for part in spec.split(","):
        try:
            index = int(part)
        except ValueError:
            raise ValueError(f"--layers: {part!r} is not a layer index (or all, last)") from None
        if not -n_layers <= index < n_layers:
            raise ValueError(f"--layers: {index} is out of range for {n_layers} layers")
        chosen.add(index % n_layers)
    return sorted(chosen | {final})


def _finite(values: list[float]) -> list[float | None]:
    """NaN (a metric undefined at a layer, e.g. CKA where every state is equal) → null."""
    return [None if math.isnan(v) else v for v in values]


def analyze(
    encoder: Any,
    pairs: Pairs,
    *,
    layers: str = "all",
    k: int = 10,
    alignment: Sequence[str] = ("mutual_knn",),
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Anisotropy per modality and alignment per media-text pair, at each selected layer."""
    unknown = [m for m in alignment if m not in ALIGNMENT_METRICS]
    if unknown:
        raise ValueError(f"unknown alignment metric(s) {unknown}; known: {list(ALIGNMENT_METRICS)}")
    all_texts = [t for m in pairs.media for t in pairs.texts[m]]
    text_states = layer_states(encoder, all_texts, batch_size)
    chosen = parse_layers(layers, text_states.shape[0])
    result: dict[str, Any] = {
        "layers": chosen,
        "n_pairs": {m: len(v) for m, v in pairs.media.items()},
        "k": k,
        "anisotropy": {"text": [metrics.anisotropy(text_states[i]) for i in chosen]},
    }
    for name in alignment:
        result[name] = {}
    start = 0
    for modality, items in pairs.media.items():
        media_states = layer_states(encoder, items, batch_size)
        texts = text_states[:, start : start + len(items)]
        start += len(items)
        result["anisotropy"][modality] = [metrics.anisotropy(media_states[i]) for i in chosen]
        # where every item has the same state (the embedding layer: all end on the same prompt
        # token) neighbours are ties and alignment is undefined, not 1
        degenerate = [
            a > 1 - 1e-6 or t > 1 - 1e-6
            for a, t in zip(result["anisotropy"][modality], result["anisotropy"]["text"])
        ]
        for name in alignment:
            fn = ALIGNMENT_METRICS[name]
            kw = {} if name == "cka" else {"k": k}
            scores = [
                math.nan if flat else fn(media_states[i], texts[i], **kw)
                for i, flat in zip(chosen, degenerate)
            ]
            result[name][f"{modality}-text"] = _finite(scores)
    return result


def write_report(
    result: dict[str, Any],
    output: str | Path,
    compare: dict[str, Any] | None = None,
    labels: tuple[str, str] = ("before", "after"),
) -> list[Path]:
    """``analysis.json`` (with ``compare`` under its own key) and one layer-curve PNG per
    measure, ``compare`` overlaid dashed."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(result)
    if compare is not None:
        report["compare"] = compare
        report["labels"] = list(labels)
    (out / "analysis.json").write_text(json.dumps(report, indent=2) + "\n")
    plots = []
    layers = result["layers"]
    measures = ["anisotropy"] + [m for m in ALIGNMENT_METRICS if m in result]
    for measure in measures:
        series = {key: _nan(v) for key, v in result[measure].items()}
        other = None if compare is None else {key: _nan(v) for key, v in compare[measure].items()}
        ylabel = "mean pairwise cosine" if measure == "anisotropy" else measure.replace("_", " ")
        path = layer_curves(
            series,
            out / f"{measure}.png",
            title=f"{measure.replace('_', ' ')} per layer"
            + ("" if measure == "anisotropy" else f" (k={result['k']})"),
            ylabel=ylabel,
            compare=other,
            labels=labels,
            x=layers,
        )
        plots.append(path)
    return plots


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]
