"""Digit samples: scikit-learn's handwritten digits, upscaled and coloured.

``digit``: scikit-learn's ``load_digits`` (1797 8x8 images, the only data file read, kept in
memory after first use): upscaled to 150-224 px (bilinear or nearest), placed at a random offset
in 224x224, white on black or a palette colour on a contrasting grey. ``text`` is the digit's
name (``"seven"``). The 1797 source images are split once (fixed permutation): 360 test, 1437
train, so the two splits never share a source image; each split cycles through its source
images in a new shuffled order per pass.
"""

from __future__ import annotations

import functools

import numpy as np
import PIL.Image
from sklearn.datasets import load_digits

from lcoemb.synthetic.descriptions import COLOURS, DIGIT_NAMES
from lcoemb.synthetic.samples import IMAGE_SIZE, Sample
from lcoemb.synthetic.seeds import (
    SOURCE_STREAM,
    balanced_index,
    check_sample,
    choice,
    sample_rng,
    uniform,
)

#: How many of the 1797 source images only the test split uses.
DIGIT_TEST_SOURCES = 360


@functools.lru_cache(maxsize=1)
def digit_sources() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``load_digits``' images (float32 in [0, 1]), their digits, and the source image indices
    of each split (``{"train": ..., "test": ...}``, disjoint)."""
    data = load_digits()
    images = np.asarray(data.images, dtype=np.float32) / 16.0
    targets = np.asarray(data.target, dtype=np.int64)
    order = sample_rng("digit", "train", 0, SOURCE_STREAM).permutation(len(images))
    sources = {"test": order[:DIGIT_TEST_SOURCES], "train": order[DIGIT_TEST_SOURCES:]}
    return images, targets, sources


def digit(index: int, split: str = "train") -> Sample:
    """Digit ``index`` of ``split``: an upscaled ``load_digits`` image; ``text`` its name."""
    check_sample("digit", split, index)
    images, targets, sources = digit_sources()
    pool = sources[split]
    source = int(pool[balanced_index("digit", split, index, len(pool))])
    rng = sample_rng("digit", split, index)
    size = int(rng.integers(150, IMAGE_SIZE + 1))
    resample = choice(rng, (PIL.Image.Resampling.BILINEAR, PIL.Image.Resampling.NEAREST))
    glyph = PIL.Image.fromarray(np.rint(images[source] * 255).astype(np.uint8), mode="L")
    alpha = np.asarray(glyph.resize((size, size), resample), dtype=np.float32)[..., None] / 255
    if rng.random() < 0.5:
        ink, background = np.array([255.0, 255, 255]), np.array([0.0, 0, 0])
        colour = "white"
    else:
        colour = choice(rng, [c for c in COLOURS if c not in ("white", "black")])
        ink = np.array(COLOURS[colour], dtype=np.float32)
        dark = 0.299 * ink[0] + 0.587 * ink[1] + 0.114 * ink[2] > 128
        background = np.full(3, uniform(rng, 20, 60) if dark else uniform(rng, 200, 240))
    canvas = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    canvas[:] = background
    x, y = (int(v) for v in rng.integers(IMAGE_SIZE - size + 1, size=2))
    canvas[y : y + size, x : x + size] = background * (1 - alpha) + ink * alpha
    image = PIL.Image.fromarray(np.rint(canvas).astype(np.uint8))
    value = int(targets[source])
    meta = {"kind": "digit", "split": split, "index": int(index), "source": source}
    meta |= {"size": size, "offset": (x, y), "ink": colour}
    return Sample(image, DIGIT_NAMES[value], {"kind": "digit", "digit": value}, meta)
