"""One encoder, several threads: concurrent encodes give what sequential ones give.

A server or a thread pool shares one loaded model between requests; the backbone must not keep
per-call state on the model (it once swapped the language model's ``forward`` around each call,
and two threads then removed each other's).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest

from lcoemb import Audio
from tests.conftest import tone

THREADS = 4
ROUNDS = 3


def _inputs() -> list[list]:
    """A different list per thread: texts of several lengths (the fast path with a shared
    prefix), and media, so the towers run concurrently too."""
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8))
    audio = Audio(tone(1.0, 16_000)[0], 16_000)
    return [
        [f"thread {t} item {i}: " + "word " * (3 * i + t) for i in range(6)]
        + ([image] if t % 2 else [audio])
        for t in range(THREADS)
    ]


@pytest.mark.parametrize("backbone", ["omni", "vl"])
def test_concurrent_encodes_equal_sequential_ones(backbone, omni_encoder, vl_path):
    from lcoemb import OmniEncoder

    if backbone == "omni":
        encoder, inputs = omni_encoder, _inputs()
    else:
        encoder = OmniEncoder.from_pretrained(vl_path, device="cpu")
        inputs = [[x for x in items if not isinstance(x, Audio)] for items in _inputs()]
    assert encoder.backbone.fast_text_path  # the path that used to patch the model per call
    expected = [encoder.encode(items, batch_size=3) for items in inputs]
    start = threading.Barrier(THREADS)

    def run(items: list) -> np.ndarray:
        start.wait()  # all threads enter the model together
        return encoder.encode(items, batch_size=3)

    with ThreadPoolExecutor(THREADS) as pool:
        for _ in range(ROUNDS):
            results = list(pool.map(run, inputs))
            for got, want in zip(results, expected):
                np.testing.assert_allclose(got, want, atol=1e-6)
