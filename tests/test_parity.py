"""Parity with the reference: mteb's ``LCOEmbedding`` wrapper on the same tiny Qwen2.5-Omni
thinker, fed through mteb's own input path (``datasets`` features, ``create_dataloader``, the
wrapper's collators), must give the same vectors as ``OmniEncoder.encode`` (cosine >= 0.9999).

mteb's wrapper only loads the Qwen2.5-Omni thinker, so Qwen2.5-VL is checked in
``test_encoder.py`` against a direct transformers forward pass written independently there.
"""

from __future__ import annotations

import datasets
import mteb
import numpy as np
import PIL.Image
import pytest
from mteb._create_dataloaders import create_dataloader
from mteb.models.model_implementations.lco_embedding_models import LCOEmbedding

from lcoemb import Audio, Video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(omni_path):
    return LCOEmbedding(str(omni_path), device="cpu")


def _metadata(modality: str):
    """Metadata of a real single-modality mteb task, so create_dataloader takes its real path."""
    task = mteb.get_tasks(modalities=[modality], exclusive_modality_filter=True)[0]
    return task.metadata


def _reference_vectors(model: LCOEmbedding, column: str, values, feature=None) -> np.ndarray:
    features = datasets.Features({column: feature}) if feature is not None else None
    ds = datasets.Dataset.from_dict({column: values}, features=features)
    meta = _metadata(column)
    loader = create_dataloader(ds, task_metadata=meta, batch_size=4)
    out = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    return np.asarray(out, dtype=np.float32)


def _assert_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, cos
    # The check has teeth only if different inputs give clearly different vectors.
    sims = ours @ ours.T / np.outer(np.linalg.norm(ours, axis=1), np.linalg.norm(ours, axis=1))
    assert sims[~np.eye(len(ours), dtype=bool)].max() < 0.99


def test_text_parity(omni_encoder, reference):
    rng = np.random.default_rng(0)
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat",
        "while",
        "dogs",
        "ran",
        "around",
        "parks",
        "under",
        "blue",
        "skies",
    ]
    texts = [" ".join(rng.choice(words, n)) for n in (3, 40, 1, 17, 9, 5)]
    texts.append("long " * 400)  # over the 300-token cap: cut and templated again
    ours = omni_encoder.encode(texts, batch_size=3)
    _assert_parity(ours, _reference_vectors(reference, "text", texts))


def test_image_parity(omni_encoder, reference):
    rng = np.random.default_rng(1)
    images = [
        PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for h, w in [(64, 64), (120, 90), (30, 200), (300, 280), (56, 112)]
    ]
    ours = omni_encoder.encode(images, batch_size=2)
    _assert_parity(ours, _reference_vectors(reference, "image", images, datasets.Image()))


def test_audio_parity(omni_encoder, reference, media, tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(2)
    paths = [str(media["wav16k"]), str(media["wav44k_stereo"])]
    for i, seconds in enumerate([0.7, 3.3, 5.0]):
        path = tmp_path / f"noise{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal(int(seconds * 22_050)), 22_050)
        paths.append(str(path))
    ours = omni_encoder.encode([Audio(p) for p in paths], batch_size=2)
    ref = _reference_vectors(reference, "audio", paths, datasets.Audio())
    _assert_parity(ours, ref)


def test_video_parity(omni_encoder, reference, media):
    paths = [str(media["mp4"]), str(media["mp4_long"])]
    ours = omni_encoder.encode([Video(p) for p in paths], batch_size=2)
    _assert_parity(ours, _reference_vectors(reference, "video", paths, datasets.Video()))
