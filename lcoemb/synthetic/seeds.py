"""Where every generated sample's random numbers come from.

A sample is a pure function of ``(kind, split, index)``: its generator draws from
``numpy.random.default_rng(SeedSequence([SALT, KIND_IDS[kind], SPLIT_IDS[split], stream,
index]))`` and nothing global, so any sample can be rebuilt on its own, in any order, in any
process. :data:`SALT` is fixed per :data:`DATA_VERSION`; whatever changes a sample bumps that
version (the offline benchmark and the stage-1 feature cache record it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DATA_VERSION = "1"
SPLITS = ("train", "test")

#: fixed for DATA_VERSION "1"
SALT = 0x1C0E_0001
#: the seed namespace of each generator (``triplet``: the text triplets)
KIND_IDS = {
    "scene": 1,
    "ocr": 2,
    "digit": 3,
    "speech": 4,
    "clip": 5,
    "triplet": 6,
    # open-vocabulary stage-1 tasks, the general text triplets and the out-of-distribution sets
    "utterance": 7,
    "words": 8,
    "scene_wide": 9,
    "clip_wide": 10,
    "ood_scene": 11,
    "ood_ocr": 12,
    "ood_speech": 13,
    "ood_clip": 14,
    "general": 15,
    # the wide grammar in other renderings (domain randomisation)
    "scene_styled": 16,
    "clip_styled": 17,
    # the dictionary entries among the general text triplets
    "definition": 18,
}
SPLIT_IDS = {"train": 0, "test": 1}
#: streams of one sample: its own draws, the shuffled order of a balanced pass, source images
SAMPLE_STREAM, ORDER_STREAM, SOURCE_STREAM = 0, 1, 2


def check_sample(kind: str, split: str, index: int) -> None:
    """Raise ``ValueError`` unless ``split`` is a split and ``index`` a non-negative integer."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    assert kind in KIND_IDS


def sample_rng(
    kind: str, split: str, index: int, stream: int = SAMPLE_STREAM
) -> np.random.Generator:
    """The random generator of sample ``index`` of ``kind`` in ``split`` (one ``stream``)."""
    check_sample(kind, split, index)
    seed = np.random.SeedSequence([SALT, KIND_IDS[kind], SPLIT_IDS[split], stream, int(index)])
    return np.random.default_rng(seed)


def balanced_index(kind: str, split: str, index: int, total: int) -> int:
    """Entry ``index`` of ``range(total)`` listed again in a new shuffled order per pass: indices
    ``[k*total, (k+1)*total)`` visit every entry exactly once."""
    epoch, position = divmod(int(index), total)
    order = sample_rng(kind, split, epoch, ORDER_STREAM).permutation(total)
    return int(order[position])


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from ``[low, high)``."""
    return low + (high - low) * float(rng.random())


def choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """One of ``items``, drawn uniformly."""
    return items[int(rng.integers(len(items)))]
