"""Generated data (lcoemb.synthetic): determinism, split disjointness, texts that match the
media, the one font lookup and the one sample → item conversion."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections import Counter

import numpy as np
import PIL.Image
import pytest
from scipy import ndimage

from lcoemb import synthetic as data
from lcoemb.inputs import Audio, Video
from lcoemb.synthetic import fonts, pages

IMAGE_KINDS = ("scene", "ocr", "digit")


def _digest(sample) -> str:
    if isinstance(sample, data.Sample):
        raw = sample.image.tobytes()
    elif isinstance(sample, data.ClipSample):
        raw = b"".join(f.tobytes() for f in sample.frames)
    else:
        raw = sample.wave.tobytes()
    return hashlib.sha256(raw).hexdigest()


def _mask(image: np.ndarray, colour: str) -> np.ndarray:
    return np.all(image == np.array(data.COLOURS[colour], dtype=np.uint8), axis=-1)


# --- determinism and splits ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [*IMAGE_KINDS, "clip"])
def test_same_index_same_sample_and_different_indices_differ(kind):
    generate = data.TASKS[kind].generate
    for split in data.SPLITS:
        a, b, c = generate(7, split), generate(7, split), generate(8, split)
        assert _digest(a) == _digest(b)
        assert (a.text, a.attrs, a.meta) == (b.text, b.attrs, b.meta)
        assert _digest(a) != _digest(c)


@pytest.mark.parametrize("kind", [*IMAGE_KINDS, "clip"])
def test_train_and_test_never_share_media(kind):
    train = {_digest(s) for s in data.dataset(kind, "train", 200)}
    test = {_digest(s) for s in data.dataset(kind, "test", 200)}
    assert len(train) == len(test) == 200  # no repeats within a split either
    assert not train & test


def test_digit_splits_use_disjoint_source_images():
    _, _, sources = data.digit_sources()
    train, test = set(sources["train"].tolist()), set(sources["test"].tolist())
    assert len(test) == data.DIGIT_TEST_SOURCES
    assert not train & test and len(train | test) == 1797
    used = {s.meta["source"] for s in data.dataset("digit", "test", 400)}
    assert used == test  # the first pass over the test split visits every test source once


@pytest.mark.parametrize(("kind", "combinations"), [("scene", 600), ("clip", 160)])
def test_attribute_combinations_are_balanced(kind, combinations):
    """Each pass of C indices holds every combination once: the first C captions are distinct.

    Both splits share the attribute space (no combination is held out), so captions overlap.
    """
    generate = data.TASKS[kind].generate
    for split in data.SPLITS:
        captions = [generate(i, split).text for i in range(combinations)]
        assert len(set(captions)) == combinations
    assert generate(0, "train").text in captions  # same caption space in train and test


def test_split_and_index_are_checked():
    with pytest.raises(ValueError, match="split"):
        data.scene(0, "validation")
    with pytest.raises(ValueError, match="index"):
        data.ocr(-1)
    with pytest.raises(ValueError, match="kind"):
        data.dataset("smell", "train", 1)


def test_dataset_is_a_window_of_the_generator():
    window = data.dataset("scene", "test", 3, start=5)
    assert [s.text for s in window] == [data.scene(i, "test").text for i in (5, 6, 7)]
    assert data.dataset("ocr", "train", 0) == []
    assert set(data.TASKS) == set(data.KINDS) == {t.name for t in data.TASKS.values()}
    assert data.DATA_VERSION == "1"


# --- scenes ------------------------------------------------------------------------------


def test_scene_captions_match_the_pixels():
    seen = Counter()
    for index in range(60):
        sample = data.scene(index, "test")
        attrs = sample.attrs
        image = np.asarray(sample.image)
        assert sample.image.mode == "RGB" and image.shape == (224, 224, 3)
        assert sample.text == data.canonical(attrs)
        assert data.parse_description(sample.text) == attrs
        mask = _mask(image, attrs["colour"])
        _, components = ndimage.label(mask, structure=np.ones((3, 3)))
        assert components == attrs["count"], sample.text
        ys, xs = np.nonzero(mask)
        assert data.position_of(xs.mean(), ys.mean()) == attrs["position"], sample.text
        for other in set(data.COLOURS) - {attrs["colour"]}:  # one colour only
            assert not _mask(image, other).any()
        seen.update([attrs["count"], attrs["position"]])
    assert all(seen[v] for v in (*data.COUNTS, *data.POSITIONS))


def test_scene_objects_do_not_overlap_and_stay_inside():
    for index in range(200):
        objects = data.scene(index, "train").meta["objects"]
        for x, y, r in objects:
            assert r <= x <= 224 - r and r <= y <= 224 - r
        for (x1, y1, r1), (x2, y2, r2) in itertools.combinations(objects, 2):
            assert np.hypot(x1 - x2, y1 - y2) >= r1 + r2


# --- OCR and digits ------------------------------------------------------------------------


def test_ocr_text_is_rendered():
    fonts = Counter()
    for index in range(150):
        sample = data.ocr(index, "train")
        assert sample.text and sample.text == sample.text.strip()
        words = sample.text.split(" ")
        assert 1 <= len(words) <= 4 and all(w.lower() in data.WORDS for w in words)
        assert data.parse_description(sample.text) == sample.attrs
        image = np.asarray(sample.image).astype(int)
        background = np.array(sample.meta["background"])
        ink = np.abs(image - background).sum(axis=-1) > 120
        assert ink.sum() > 40, sample.text
        ys, xs = np.nonzero(ink)  # nothing cut off at the border
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < 223 and ys.max() < 223
        fonts[sample.meta["font"]] += 1
    assert set(fonts) == set(data.FONTS)


def test_word_list():
    assert len(data.WORDS) >= 300 and len(set(data.WORDS)) == len(data.WORDS)
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 8 for w in data.WORDS)
    assert not set(data.WORDS) & set(data.DIGIT_NAMES)


def test_digit_text_is_the_digit_name():
    names = set()
    for index in range(40):
        sample = data.digit(index, "train")
        assert sample.image.size == (224, 224) and sample.image.mode == "RGB"
        assert sample.text == data.DIGIT_NAMES[sample.attrs["digit"]]
        assert data.parse_description(sample.text) == sample.attrs
        names.add(sample.text)
    assert len(names) == 10


# --- clips -------------------------------------------------------------------------------


def test_clip_motion_matches_the_caption():
    for index in range(40):
        sample = data.clip(index, "test")
        assert sample.fps == 4.0 and len(sample.frames) == 8
        assert all(f.shape == (112, 112, 3) and f.dtype == np.uint8 for f in sample.frames)
        assert data.parse_description(sample.text) == sample.attrs
        centroids = []
        for frame in sample.frames:
            ys, xs = np.nonzero(_mask(frame, sample.attrs["colour"]))
            assert len(xs) > 0
            centroids.append((xs.mean(), ys.mean()))
        dx, dy = np.subtract(centroids[-1], centroids[0])
        expected = data.DIRECTION_VECTORS[sample.attrs["direction"]]
        moved = (int(np.sign(dx)), 0) if abs(dx) > abs(dy) else (0, int(np.sign(dy)))
        assert moved == expected, sample.text
        assert max(abs(dx), abs(dy)) > 0.3 * 112


# --- speech --------------------------------------------------------------------------------


def test_speech_is_16k_float32_plausible_and_deterministic():
    for index in range(6):
        sample = data.speech(index, "train")
        again = data.speech(index, "train")
        assert sample.sampling_rate == 16_000
        assert sample.wave.dtype == np.float32 and sample.wave.ndim == 1
        assert 0.3 <= sample.duration <= 6.0, sample.text
        assert 0.05 < np.abs(sample.wave).max() <= 1.0
        assert sample.wave.tobytes() == again.wave.tobytes() and sample.text == again.text
        assert data.parse_description(sample.text) == sample.attrs and sample.attrs
        assert sample.meta["speed"] % 2 == 0  # odd speeds are the test split's
    assert data.speech(0, "test").meta["speed"] % 2 == 1
    assert data.speech(0, "train").wave.tobytes() != data.speech(1, "train").wave.tobytes()


def test_voices_differ():
    waves = {v: data.synthesize("a red circle", voice=v).tobytes() for v in data.VOICES}
    assert len(set(waves.values())) == len(data.VOICES)


# --- text triplets and descriptions -------------------------------------------------------------


def test_triplets_positive_paraphrases_and_negative_changes_one_attribute():
    kinds = Counter()
    changed = Counter()
    for split in data.SPLITS:
        for index in range(400):
            triplet = data.text_triplet(index, split)
            assert triplet == data.text_triplet(index, split)
            anchor, positive, negative = triplet
            assert len({anchor, positive, negative}) == 3
            a, p, n = (data.parse_description(t) for t in triplet)
            assert a, anchor
            assert p == a, (anchor, positive)
            diff = data.attribute_diff(a, n)
            assert len(diff) == 1, (anchor, negative)
            kinds[a["kind"]] += 1
            changed[diff[0] if not diff[0].startswith("word_") else "word"] += 1
    assert set(kinds) == set(data.TRIPLET_MIX)
    assert set(changed) == {"count", "colour", "shape", "position", "direction", "digit", "word"}
    assert data.text_triplet(0, "train") != data.text_triplet(0, "test")


def test_every_template_parses_back():
    attrs = [
        {"kind": "scene", "count": 1, "colour": "orange", "shape": "cross", "position": "left"},
        {"kind": "scene", "count": 3, "colour": "white", "shape": "circle", "position": "centre"},
        {"kind": "clip", "colour": "orange", "shape": "star", "direction": "up"},
        {"kind": "digit", "digit": 7},
        {"kind": "ocr", "word_0": "apple", "word_1": "river"},
    ]
    for a in attrs:
        texts = set()
        for template, choices in itertools.product(
            range(len(data.TEMPLATES[a["kind"]])), itertools.product(range(4), repeat=4)
        ):
            text = data.describe(a, template, choices)
            assert data.parse_description(text) == a, text
            texts.add(text)
        assert len(texts) >= len(data.TEMPLATES[a["kind"]])
    assert data.canonical(attrs[0]) == "an orange cross on the left"
    assert data.canonical(attrs[2]) == "an orange star moving up"
    assert data.parse_description("there is two red circles on the left") == {}
    assert data.parse_description("hello there") == {}


def test_as_input():
    assert isinstance(data.as_input(data.scene(0)), PIL.Image.Image)
    clip = data.clip(0)
    video = data.as_input(clip)
    assert isinstance(video, Video) and video.fps == clip.fps
    # all_frames: as already sampled (no fps), every frame reaches the model, as in stage 1
    every = data.as_input(clip, all_frames=True)
    assert isinstance(every, Video) and every.fps is None and len(every.source) == 8
    audio = data.as_input(data.AudioSample(np.zeros(160, np.float32), 16_000, "a"))
    assert isinstance(audio, Audio) and audio.sampling_rate == 16_000


def test_task_table_covers_every_generator_once():
    from lcoemb.config import PRETRAIN_TASKS

    closed = ["scene", "ocr", "digit", "speech", "clip"]
    wide = ["scene_wide", "clip_wide", "scene_styled", "clip_styled"]
    assert list(data.TASKS) == [*closed, "utterance", "words", *wide]
    assert list(data.TASKS) == list(PRETRAIN_TASKS)  # the command line checks against these
    assert {t.modality for t in data.TASKS.values()} == {"image", "audio", "video"}
    rows = [row for t in data.TASKS.values() for row in t.retrieval]
    rows += [row for s in data.OOD_SETS.values() for row in s.retrieval]
    assert len(rows) == len(set(rows))  # one row name per retrieval direction
    assert {t.name for t in data.TASKS.values() if t.grsl} == {"scene", "ocr", "speech"}
    assert {t.name for t in data.TASKS.values() if t.corpus} == {"utterance", "words"}
    assert [s.kind for s in data.OOD_SETS.values()] == [
        "ood_scene", "ood_ocr", "ood_speech", "ood_clip"
    ]  # fmt: skip


def test_ood_sets_have_distinct_texts_and_share_none_with_training():
    """Each OOD set's first 40 items have 40 distinct texts, and none of those texts is among
    the first 300 training texts of any generator of its modality."""
    for ood in data.OOD_SETS.values():
        samples = ood.samples(40)
        texts = [s.text.lower() for s in samples]
        assert len(set(texts)) == 40 and ood.held_out
        assert {s.attrs["kind"] for s in samples} == {ood.kind}
        for task in data.TASKS.values():
            if task.modality == ood.modality and task.name not in ("utterance", "speech"):
                seen = {s.text.lower() for s in data.dataset(task.name, "train", 300)}
                assert not seen & set(texts), (ood.name, task.name)


# --- fonts -------------------------------------------------------------------------------


def test_font_dir_is_searched_first_by_ocr_and_pages(tmp_path, monkeypatch):
    """LCOEMB_FONT_DIR comes before the system folders, for OCR lines and pages alike: a serif
    font placed there as DejaVuSans.ttf changes what is drawn in DejaVu Sans."""
    shutil.copy(fonts.font_path("DejaVuSerif.ttf"), tmp_path / "DejaVuSans.ttf")
    sans = next(i for i in range(100) if data.ocr(i).meta["font"] == "DejaVuSans.ttf")
    ocr_before = data.ocr(sans).image.tobytes()
    pages_before = [pages.page("eng", i).image.tobytes() for i in range(8)]
    monkeypatch.setenv("LCOEMB_FONT_DIR", str(tmp_path))
    fonts.font_path.cache_clear()
    fonts.font.cache_clear()
    try:
        assert fonts.font_dirs()[0] == tmp_path
        assert fonts.font_path("DejaVuSans.ttf") == str(tmp_path / "DejaVuSans.ttf")
        assert data.ocr(sans).image.tobytes() != ocr_before
        after = [pages.page("eng", i).image.tobytes() for i in range(8)]
        assert after != pages_before
    finally:
        fonts.font_path.cache_clear()
        fonts.font.cache_clear()


def test_missing_font_names_its_package_and_the_variable():
    with pytest.raises(FileNotFoundError, match=r"fonts-dejavu-core\) or set LCOEMB_FONT_DIR"):
        fonts.font_path("NoSuchFont.ttf")
