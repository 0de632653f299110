"""The wide stage-1 grammar and the out-of-distribution visual sets (lcoemb.synthetic.wide,
lcoemb.synthetic.ood): determinism, a grammar that really is wider, captions that match the
pixels, and evaluation sets whose rendering and wording no training generator produces."""

from __future__ import annotations

import hashlib
import itertools
import re

import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
from scipy import ndimage

from lcoemb import synthetic as data
from lcoemb.synthetic import ood, styles, wide
from lcoemb.synthetic.scenes import draw_shape

GENERATORS = {
    "scene_wide": wide.scene_wide,
    "clip_wide": wide.clip_wide,
    "scene_styled": wide.scene_styled,
    "clip_styled": wide.clip_styled,
    "ood_scene": ood.ood_scene,
    "ood_clip": ood.ood_clip,
}


def _digest(sample) -> str:
    if isinstance(sample, data.Sample):
        raw = sample.image.tobytes()
    else:
        raw = b"".join(f.tobytes() for f in sample.frames)
    return hashlib.sha256(raw).hexdigest()


def _mask(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.array(colour, dtype=np.uint8), axis=-1)


def _groups(attrs) -> list[tuple[int, str, str]]:
    out = [(attrs["count"], attrs["colour"], attrs["shape"])]
    if "relation" in attrs:
        out.append((attrs["count_2"], attrs["colour_2"], attrs["shape_2"]))
    return out


# --- determinism and splits ----------------------------------------------------------------


@pytest.mark.parametrize("kind", GENERATORS)
def test_same_index_same_sample_and_splits_differ(kind):
    generate = GENERATORS[kind]
    a, b, c = generate(5, "train"), generate(5, "train"), generate(6, "train")
    assert _digest(a) == _digest(b) and (a.text, a.attrs) == (b.text, b.attrs)
    assert _digest(a) != _digest(c)
    train = {_digest(generate(i, "train")) for i in range(15)}
    test = {_digest(generate(i, "test")) for i in range(15)}
    assert len(train) == len(test) == 15 and not train & test


def test_wide_caption_is_the_sample_text_without_rendering():
    for i in range(20):
        assert wide.wide_caption("scene_wide", i, "test") == wide.scene_wide(i, "test").text
        assert wide.wide_caption("clip_wide", i) == wide.clip_wide(i).text
        assert wide.wide_caption("scene_styled", i) == wide.scene_styled(i).text
        assert wide.wide_caption("clip_styled", i, "test") == wide.clip_styled(i, "test").text
    with pytest.raises(ValueError, match="kind"):
        wide.wide_caption("scene", 0)


# --- the wide grammar ------------------------------------------------------------------------


def test_the_wide_grammar_is_wider_than_the_closed_one():
    scenes = [wide.scene_wide(i) for i in range(200)]
    groups = [g for s in scenes for g in _groups(s.attrs)]
    assert {c for _, c, _ in groups} == set(wide.WIDE_COLOURS)
    assert {s for _, _, s in groups} == set(wide.WIDE_SHAPES)
    assert {n for n, _, _ in groups} == set(wide.WIDE_COUNTS)
    assert {s.attrs["position"] for s in scenes if "position" in s.attrs} == set(
        wide.WIDE_POSITIONS
    )
    assert {s.attrs["relation"] for s in scenes if "relation" in s.attrs} == set(wide.RELATIONS)
    assert 30 <= sum("word" in s.attrs for s in scenes) <= 90
    assert len({s.text for s in scenes}) >= 195
    starts = {" ".join(s.text.split()[:2]) for s in scenes}
    assert {"a picture", "an image"} <= starts  # several templates, not one
    assert len(wide.WIDE_COLOURS) == 14 > len(data.COLOURS)
    assert len(wide.WIDE_SHAPES) == 9 > len(data.SHAPES)

    clips = [wide.clip_wide(i) for i in range(200)]
    motions = [m for c in clips for m in (c.attrs["motion"], c.attrs.get("motion_2")) if m]
    assert set(motions) == set(wide.MOTIONS)
    assert len({c.attrs["shape"] for c in clips}) == 9
    assert 50 <= sum("motion_2" in c.attrs for c in clips) <= 110
    assert len({c.text for c in clips}) >= 195
    spinning = [c for c in clips if c.attrs["motion"].startswith("spin")]
    assert spinning and all(c.attrs["shape"] != "circle" for c in spinning)


def test_wide_scene_pixels_match_the_attributes():
    for index in range(80):
        sample = wide.scene_wide(index, "test")
        attrs, image = sample.attrs, np.asarray(sample.image)
        groups = _groups(attrs)
        for name, rgb in wide.WIDE_COLOURS.items():  # one component per object, no stray colour
            _, components = ndimage.label(_mask(image, rgb), structure=np.ones((3, 3)))
            assert components == sum(n for n, c, _ in groups if c == name), sample.text
        centroids = []
        for group in range(len(groups)):
            objects = [o for o in sample.meta["objects"] if o[0] == group]
            w = np.array([o[5] for o in objects]) ** 2
            xy = np.array([o[3:5] for o in objects])
            centroids.append(w @ xy / w.sum())
            for _, _, colour, cx, cy, _, _ in objects:  # the object's centre has its colour
                assert _mask(image, wide.WIDE_COLOURS[colour])[int(cy), int(cx)]
        if "position" in attrs:
            assert wide.wide_position_of(*centroids[0]) == attrs["position"], sample.text
            continue
        (x1, y1), (x2, y2) = centroids
        along, across = {
            "left of": (x2 - x1, y2 - y1),
            "right of": (x1 - x2, y1 - y2),
            "above": (y2 - y1, x2 - x1),
            "below": (y1 - y2, x1 - x2),
        }[attrs["relation"]]
        assert along >= 44 and abs(across) <= 23, sample.text


def test_distractor_words_are_written_and_named():
    samples = [wide.scene_wide(i) for i in range(100)]
    written = [s for s in samples if "word" in s.attrs]
    assert len(written) >= 15
    for sample in written:
        word = sample.attrs["word"]
        assert re.search(rf"\bthe word {word}\b", sample.text)
        assert word in data.WORDS and word not in {*wide.WIDE_COLOURS, *wide.WIDE_SHAPES}
        image = np.asarray(sample.image)
        ink = _mask(image, sample.meta["ink"])
        x0, y0, x1, y1 = sample.meta["word_box"]
        inside = ink[y0:y1, x0:x1].sum()
        assert inside >= 10 and inside == ink.sum()  # fully opaque ink pixels only in the box
        for _, _, _, cx, cy, r, _ in sample.meta["objects"]:
            nearest = np.clip([cx, cy], [x0, y0], [x1, y1])
            assert np.hypot(*(nearest - [cx, cy])) > r
    plain = next(s for s in samples if "word" not in s.attrs)
    image = np.asarray(plain.image)
    assert not (_mask(image, (25, 25, 25)) | _mask(image, (235, 235, 235))).any()


def test_wide_clip_motions_are_visible():
    checked = 0
    for index in range(60):
        sample = wide.clip_wide(index, "test")
        assert len(sample.frames) == data.CLIP_FRAMES and sample.fps == data.CLIP_FPS
        assert all(f.shape == (data.CLIP_SIZE, data.CLIP_SIZE, 3) for f in sample.frames)
        if "motion_2" in sample.attrs:
            continue
        masks = [_mask(f, wide.WIDE_COLOURS[sample.attrs["colour"]]) for f in sample.frames]
        areas = np.array([m.sum() for m in masks])
        centres = np.array([[np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()] for m in masks])
        shift = centres[-1] - centres[0]
        motion = sample.attrs["motion"]
        if motion in wide.MOTION_VECTORS:
            vector = np.array(wide.MOTION_VECTORS[motion])
            assert np.all(np.where(vector != 0, shift * vector > 15, np.abs(shift) < 2)), motion
        elif motion == "grow":
            assert areas[-1] > 3 * areas[0]
        elif motion == "shrink":
            assert areas[0] > 3 * areas[-1]
        else:
            assert np.abs(shift).max() < 4 and not np.array_equal(masks[0], masks[1])
        checked += 1
    assert checked >= 25


# --- the out-of-distribution sets ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["ood_scene", "ood_clip"])
def test_ood_sets_have_one_answer_per_query(kind):
    first = ood.ood_visual_set(kind)
    assert len(first) == 40
    assert len({s.text for s in first}) == 40
    assert len({tuple(sorted(s.attrs.items())) for s in first}) == 40
    assert [_digest(s) for s in ood.ood_visual_set(kind, 5)] == [_digest(s) for s in first[:5]]
    assert all(s.meta["split"] == "test" for s in first)


def test_ood_set_counts_mirrored_relations_and_swapped_objects_once():
    a = {"kind": "ood_scene", "count": 1, "colour": "red", "shape": "star"}
    b = {"count_2": 2, "colour_2": "blue", "shape_2": "heart"}
    left = {**a, **b, "relation": "left of"}
    right = {
        "kind": "ood_scene",
        "count": 2,
        "colour": "blue",
        "shape": "heart",
        "relation": "right of",
        "count_2": 1,
        "colour_2": "red",
        "shape_2": "star",
    }
    assert ood._attribute_key(left) == ood._attribute_key(right)
    one = {"colour": "red", "shape": "star", "motion": "up"}
    two = {"colour_2": "red", "shape_2": "star", "motion_2": "up"}
    clip_a = {**one, **{"colour_2": "lime", "shape_2": "arrow", "motion_2": "grow"}}
    clip_b = {"colour": "lime", "shape": "arrow", "motion": "grow", **two}
    assert ood._attribute_key(clip_a) == ood._attribute_key(clip_b)
    with pytest.raises(ValueError, match="kind"):
        ood.ood_visual_set("scene")


def _closed_grammar_captions() -> set[str]:
    """Every caption the closed grammar writes, in every template with every synonym pick."""
    out = set()
    scene_attrs = itertools.product(data.COUNTS, data.COLOURS, data.SHAPES, data.POSITIONS)
    for count, colour, shape, position in scene_attrs:
        attrs = {"kind": "scene", "count": count, "colour": colour, "shape": shape}
        attrs["position"] = position
        for template, pick in itertools.product(range(len(data.TEMPLATES["scene"])), range(4)):
            out.add(data.describe(attrs, template, [pick] * 4))
    for colour, shape, direction in itertools.product(data.COLOURS, data.SHAPES, data.DIRECTIONS):
        attrs = {"kind": "clip", "colour": colour, "shape": shape, "direction": direction}
        for template, pick in itertools.product(range(len(data.TEMPLATES["clip"])), range(4)):
            out.add(data.describe(attrs, template, [pick] * 4))
    return out


def test_ood_captions_are_worded_unlike_any_training_caption():
    training = _closed_grammar_captions()
    kinds = ("scene_wide", "clip_wide", "scene_styled", "clip_styled")
    for kind, split in itertools.product(kinds, data.SPLITS):
        training |= {wide.wide_caption(kind, i, split) for i in range(3000)}
    vocabulary = {w for text in training for w in re.findall(r"[a-z]+", text)} | set(data.WORDS)
    for kind in ("ood_scene", "ood_clip"):
        for sample in ood.ood_visual_set(kind, 60):
            text = sample.text
            assert data.parse_description(text) == {}, text
            assert text not in training and len(text.split()) >= 5
            assert set(re.findall(r"[a-z]+", text)) - vocabulary, text  # some unseen word


def _texture(sample) -> float:
    """The share of neighbouring background pixels that differ by more than 3 levels: 0 for a
    smooth gradient, large for noise, checkerboards and stripes."""
    image = np.asarray(sample.image).astype(int)
    covered = _filled(sample).copy()
    if "word_box" in sample.meta:
        x0, y0, x1, y1 = sample.meta["word_box"]
        covered[y0:y1, x0:x1] = True
    covered = ndimage.binary_dilation(covered, iterations=2)
    steps = []
    for axis in (0, 1):
        jump = np.abs(np.diff(image, axis=axis)).max(axis=-1) > 3
        free = ~np.diff(covered, axis=axis) & ~np.delete(covered, 0, axis=axis)
        steps.append(jump[free].mean())
    return float(np.mean(steps))


def _filled(sample) -> np.ndarray:
    """The area every object of a scene would cover if drawn solid."""
    canvas = PIL.Image.new("L", sample.image.size, 0)
    draw = PIL.ImageDraw.Draw(canvas)
    for _, shape, _, cx, cy, r, angle in sample.meta["objects"]:
        draw_shape(draw, shape, cx, cy, r, angle, 255)
    return np.asarray(canvas) > 0


def _coloured_share(sample) -> float:
    """The share of the objects' solid area that is painted in their palette colours."""
    image = np.asarray(sample.image)
    painted = np.zeros(image.shape[:2], bool)
    for _, _, colour, *_ in sample.meta["objects"]:
        painted |= _mask(image, wide.WIDE_COLOURS[colour])
    area = _filled(sample)
    return float((painted & area).sum() / area.sum())


def test_ood_scenes_are_drawn_unlike_training_scenes():
    training = [wide.scene_wide(i) for i in range(30)]
    evaluation = [ood.ood_scene(i) for i in range(30)]
    assert all(_texture(s) < 0.002 for s in training)
    assert all(_texture(s) > 0.04 for s in evaluation)
    assert all(_coloured_share(s) > 0.99 for s in training)
    assert all(_coloured_share(s) < 0.8 for s in evaluation)
    closed = data.scene(0)
    smooth = np.abs(np.diff(np.asarray(closed.image).astype(int), axis=1)).max(axis=-1) > 3
    assert smooth.mean() < 0.01  # the closed grammar's gradient is smooth too
    styles = {s.meta["style"] for s in evaluation}
    assert styles == set(ood.OOD_STYLES)
    radii = [o[5] / data.IMAGE_SIZE for s in evaluation for o in s.meta["objects"]]
    assert not [r for r in radii if 0.045 <= r <= 0.094]  # outside the wide grammar's sizes


def test_styled_scenes_paint_the_captioned_colour_in_every_training_style():
    """Domain randomisation: every training style and background occurs, none is an OOD one,
    and whatever the style, most of each object's area is nearest to its caption's colour."""
    assert not set(styles.TRAIN_STYLES) & set(styles.OOD_STYLES)
    assert not set(styles.TRAIN_BACKGROUNDS) & set(styles.OOD_BACKGROUNDS)
    samples = [wide.scene_styled(i) for i in range(60)]
    assert {s.meta["style"] for s in samples} == set(styles.TRAIN_STYLES)
    assert {s.meta["background"] for s in samples} == set(styles.TRAIN_BACKGROUNDS)
    palette = np.array(list(wide.WIDE_COLOURS.values()), float)
    names = list(wide.WIDE_COLOURS)
    for sample in samples:
        image = np.asarray(sample.image).astype(float)
        for _, shape, colour, cx, cy, r, angle in sample.meta["objects"]:
            canvas = PIL.Image.new("L", sample.image.size, 0)
            draw_shape(PIL.ImageDraw.Draw(canvas), shape, cx, cy, r, angle, 255)
            pixels = image[np.asarray(canvas) > 0]
            nearest = np.argmin(((pixels[:, None] - palette[None]) ** 2).sum(-1), axis=1)
            share = (nearest == names.index(colour)).mean()
            # a ring leaves its middle to the background; every other style covers the area
            assert share > (0.45 if sample.meta["style"] == "ring" else 0.9), sample.meta


def test_styled_clips_keep_one_style_and_background_per_clip():
    clips = [wide.clip_styled(i) for i in range(20)]
    assert {c.meta["style"] for c in clips} <= set(styles.TRAIN_STYLES)
    assert len({c.meta["background"] for c in clips}) >= 3
    for c in clips:
        assert len(c.frames) == data.CLIP_FRAMES and c.frames[0].dtype == np.uint8
        corners = [f[:3, :3] for f in c.frames]  # the still background shows in a corner
        assert sum(np.array_equal(corners[0], k) for k in corners) >= len(corners) - 2


def test_ood_clips_are_textured_and_noise_changes_every_frame():
    samples = [ood.ood_clip(i) for i in range(20)]
    assert {s.meta["background"] for s in samples} == set(ood.OOD_BACKGROUNDS)
    for sample in samples:
        assert len(sample.frames) == data.CLIP_FRAMES and sample.fps == data.CLIP_FPS
        changed = np.any(sample.frames[0] != sample.frames[1], axis=-1).mean()
        # fresh noise changes most pixels; over a still texture only the objects change
        assert (changed > 0.5) == (sample.meta["background"] == "noise"), changed
