"""Out-of-distribution visual evaluation: scenes and clips rendered and worded unlike anything
the model trained on.

Evaluating on the training grammar cannot tell generalisation from memorisation. These sets keep
the *concepts* of the wide grammar (:mod:`~lcoemb.synthetic.wide`: its colours, shapes, counts,
positions, relations and motions, so the model can know them) and change everything else:

* **rendering**: shapes are never solid: outlined, striped, dotted along the edge or
  checker-filled (:data:`~lcoemb.synthetic.styles.OOD_STYLES`, none of them a training style:
  see :mod:`~lcoemb.synthetic.styles`); scene objects have a circumradius of 0.028-0.04 of the
  side (three or four in a group) or 0.099-0.143 (the others), never the wide grammar's
  0.045-0.094 (a layout that does not fit shrinks its objects by 10 %, which no sample among
  the first thousand needs); a clip object's starting circumradius is 0.14-0.17 of the side
  alone or 0.085-0.1 beside another (training: 0.09-0.13 and 0.06-0.08); backgrounds are grey
  noise, a checkerboard or stripes (:data:`~lcoemb.synthetic.styles.OOD_BACKGROUNDS`), never a
  training background; clip noise is drawn afresh every frame;
* **wording**: templates and phrases that no training generator uses (compass directions,
  ``"-coloured"``, ``"three-sided shapes"``, ``"drifts westward"``, ``"swells in size"``...).
  Every caption has five or more words and contains at least one word that no training caption
  contains, so :func:`~lcoemb.synthetic.descriptions.parse_description` never reads one.

``ood_scene``: one group of 1-4 shapes at one of nine positions, or two groups of 1-2 in a
relation; ``ood_clip``: 8 frames of 112x112 at 4 fps, one or two objects with any wide motion.
Attributes use the wide grammar's keys with ``kind`` ``ood_scene`` / ``ood_clip``. Seeds:
``sample_rng("ood_scene" | "ood_clip", split, index)``; evaluation uses the ``test`` split.
:func:`ood_visual_set` takes the first samples with distinct captions and distinct attributes,
so retrieval over the set has one right answer per query.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import PIL.Image

from lcoemb.synthetic.clips import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE
from lcoemb.synthetic.samples import IMAGE_SIZE, AnySample, ClipSample, Sample
from lcoemb.synthetic.seeds import choice, sample_rng, uniform
from lcoemb.synthetic.styles import OOD_BACKGROUNDS, OOD_STYLES, background, paint_shape
from lcoemb.synthetic.wide import (
    MOTION_VECTORS,
    WIDE_COLOURS,
    clip_attrs,
    clip_boxes,
    clip_objects,
    fix_articles,
    motion_track,
    scene_attrs,
    scene_layout,
)

# --- words: none of these phrasings occurs in a training generator -------------------------

_COUNT_WORDS = {
    1: ("a lone", "a solitary", "exactly one"),
    2: ("a couple of", "exactly two", "2"),
    3: ("exactly three", "3"),
    4: ("exactly four", "4"),
}
_SHAPE_WORDS = {  # (singular, plural) per synonym
    "circle": (("round blob", "round blobs"), ("circular disk", "circular disks")),
    "square": (("square block", "square blocks"), ("four-sided tile", "four-sided tiles")),
    "triangle": (("three-sided shape", "three-sided shapes"),),
    "star": (("five-pointed star", "five-pointed stars"), ("star shape", "star shapes")),
    "cross": (("plus-shaped mark", "plus-shaped marks"),),
    "hexagon": (("six-sided shape", "six-sided shapes"), ("hexagonal tile", "hexagonal tiles")),
    "diamond": (("diamond-shaped tile", "diamond-shaped tiles"), ("lozenge", "lozenges")),
    "heart": (("heart-shaped figure", "heart-shaped figures"),),
    "arrow": (("arrow-shaped figure", "arrow-shaped figures"),),
}
_COLOURED = ("{count} {colour}-coloured {shape}", "{count} {shape} in a {colour} hue")
_POSITION_WORDS = {
    "left": ("along the left-hand edge", "toward the western side"),
    "right": ("along the right-hand edge", "toward the eastern side"),
    "top": ("along the upper edge", "toward the northern side"),
    "bottom": ("along the lower edge", "toward the southern side"),
    "centre": ("at the very middle of the frame", "dead centre"),
    "top left": ("in the upper-left region", "toward the north-west"),
    "top right": ("in the upper-right region", "toward the north-east"),
    "bottom left": ("in the lower-left region", "toward the south-west"),
    "bottom right": ("in the lower-right region", "toward the south-east"),
}
_RELATION_WORDS = {
    "left of": ("positioned west of", "further left than"),
    "right of": ("positioned east of", "further right than"),
    "above": ("positioned north of", "higher up than"),
    "below": ("positioned south of", "lower down than"),
}
_SCENE_TEMPLATES = (
    "{p}, one can make out {g}",
    "this frame contains {g} located {p}",
    "we see {g} sitting {p}",
)
_RELATION_TEMPLATES = (
    "{g} {r} {g2}",
    "this frame contains {g} {r} {g2}",
    "we see {g} {r} {g2}",
)
_SUBJECTS = (
    "the {colour}-coloured {shape}",
    "the {colour}-tinted {shape}",
    "the {shape} in {colour}",
)
_HEADINGS = {
    "left": ("westward", "toward the left-hand edge"),
    "right": ("eastward", "toward the right-hand edge"),
    "up": ("northward", "toward the upper edge"),
    "down": ("southward", "toward the lower edge"),
    "up left": ("to the north-west", "toward the upper-left corner"),
    "up right": ("to the north-east", "toward the upper-right corner"),
    "down left": ("to the south-west", "toward the lower-left corner"),
    "down right": ("to the south-east", "toward the lower-right corner"),
}
_DRIFT_VERBS = ("drifts", "glides", "creeps")
_CHANGES = {
    "grow": ("swells in size", "inflates", "balloons outward"),
    "shrink": ("dwindles in size", "deflates", "contracts inward"),
    "spin clockwise": ("twirls clockwise", "pivots clockwise"),
    "spin anticlockwise": ("twirls counter-clockwise", "pivots counter-clockwise"),
}
_CLIP_TEMPLATES = (
    "watch as {a} {m}",
    "footage in which {a} {m}",
    "{a} {m} over the course of the clip",
)
_TWO_CLIP_TEMPLATES = (
    "watch as {a} {m}, whereas {b} {m2}",
    "footage in which {a} {m}, and meanwhile {b} {m2}",
    "{a} {m}; at the same moment {b} {m2}",
)


def _group_words(rng: np.random.Generator, count: int, colour: str, shape: str) -> str:
    singular, plural = choice(rng, _SHAPE_WORDS[shape])
    return choice(rng, _COLOURED).format(
        count=choice(rng, _COUNT_WORDS[count]),
        colour=colour,
        shape=singular if count == 1 else plural,
    )


def _scene_words(rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    attrs = scene_attrs(
        rng, "ood_scene", relation_share=0.3, pair_counts=(1, 2), group_counts=(1, 2, 3, 4)
    )
    if "relation" in attrs:
        text = choice(rng, _RELATION_TEMPLATES).format(
            g=_group_words(rng, attrs["count"], attrs["colour"], attrs["shape"]),
            r=choice(rng, _RELATION_WORDS[attrs["relation"]]),
            g2=_group_words(rng, attrs["count_2"], attrs["colour_2"], attrs["shape_2"]),
        )
    else:
        text = choice(rng, _SCENE_TEMPLATES).format(
            g=_group_words(rng, attrs["count"], attrs["colour"], attrs["shape"]),
            p=choice(rng, _POSITION_WORDS[attrs["position"]]),
        )
    return attrs, fix_articles(text)


def _motion_words(rng: np.random.Generator, motion: str) -> str:
    if motion in MOTION_VECTORS:
        return f"{choice(rng, _DRIFT_VERBS)} {choice(rng, _HEADINGS[motion])}"
    return choice(rng, _CHANGES[motion])


def _clip_words(rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    attrs, objects = clip_attrs(rng, "ood_clip")
    slots = {}
    for (c, s, m), subject, verb in zip(objects, "ab", ("m", "m2"), strict=False):
        slots[subject] = choice(rng, _SUBJECTS).format(
            colour=c, shape=choice(rng, _SHAPE_WORDS[s])[0]
        )
        slots[verb] = _motion_words(rng, m)
    templates = _TWO_CLIP_TEMPLATES if len(objects) == 2 else _CLIP_TEMPLATES
    return attrs, choice(rng, templates).format(**slots)


# --- rendering (styles and backgrounds: lcoemb.synthetic.styles) --------------------------


def ood_scene(index: int, split: str = "test") -> Sample:
    """OOD scene ``index`` of ``split``: wide-grammar concepts in a shape style, size range,
    background and wording that training never shows."""
    rng = sample_rng("ood_scene", split, index)
    attrs, text = _scene_words(rng)
    size = IMAGE_SIZE
    style = choice(rng, OOD_STYLES)
    backdrop = choice(rng, OOD_BACKGROUNDS)
    canvas = background(rng, backdrop, size)
    if "relation" in attrs or attrs["count"] <= 2:
        radius = uniform(rng, 0.11, 0.13) * size
    else:
        radius = uniform(rng, 0.028, 0.036) * size
    objects = []
    for group, cx, cy, r in scene_layout(rng, attrs, radius, size):
        shape = attrs["shape_2" if group else "shape"]
        colour = attrs["colour_2" if group else "colour"]
        angle = math.radians(uniform(rng, -15, 15))
        paint_shape(canvas, shape, cx, cy, r, angle, WIDE_COLOURS[colour], style)
        objects.append((group, shape, colour, cx, cy, r, angle))
    meta = {
        "kind": "ood_scene",
        "split": split,
        "index": int(index),
        "style": style,
        "background": backdrop,
        "objects": objects,
    }
    return Sample(PIL.Image.fromarray(canvas), text, attrs, meta)


def ood_clip(
    index: int,
    split: str = "test",
    *,
    size: int = CLIP_SIZE,
    frames: int = CLIP_FRAMES,
    fps: float = CLIP_FPS,
) -> ClipSample:
    """OOD clip ``index`` of ``split``: wide-grammar motions with unseen shape styles, larger
    objects, textured (or per-frame noisy) backgrounds and unseen wording."""
    rng = sample_rng("ood_clip", split, index)
    attrs, text = _clip_words(rng)
    style = choice(rng, OOD_STYLES)
    backdrop = choice(rng, OOD_BACKGROUNDS)
    objects = clip_objects(attrs)
    fraction = (0.14, 0.17) if len(objects) == 1 else (0.085, 0.1)
    tracks = [
        motion_track(rng, motion, box, uniform(rng, *fraction) * size, frames)
        for (_, _, motion), box in zip(objects, clip_boxes(rng, len(objects), size), strict=True)
    ]
    still = background(rng, backdrop, size)
    out = []
    for k in range(frames):
        canvas = background(rng, backdrop, size) if backdrop == "noise" else still.copy()
        for (colour, shape, _), track in zip(objects, tracks, strict=True):
            cx, cy, r, angle = track[k]
            paint_shape(canvas, shape, cx, cy, r, angle, WIDE_COLOURS[colour], style)
        out.append(canvas)
    meta = {
        "kind": "ood_clip",
        "split": split,
        "index": int(index),
        "style": style,
        "background": backdrop,
        "tracks": tracks,
    }
    return ClipSample(out, float(fps), text, attrs, meta)


def _attribute_key(attrs: Mapping[str, Any]) -> tuple:
    """What a sample states, independent of phrasing: ``A left of B`` is ``B right of A``, and
    the two objects of a clip can be named in either order."""
    if "motion" in attrs:
        return tuple(sorted(clip_objects(attrs)))
    if "position" in attrs:
        return (attrs["count"], attrs["colour"], attrs["shape"], attrs["position"])
    first = (attrs["count"], attrs["colour"], attrs["shape"])
    second = (attrs["count_2"], attrs["colour_2"], attrs["shape_2"])
    flipped = {"right of": "left of", "below": "above"}
    if attrs["relation"] in flipped:
        return (second, flipped[attrs["relation"]], first)
    return (first, attrs["relation"], second)


_VISUAL_SETS: dict[str, Callable[[int, str], AnySample]] = {
    "ood_scene": ood_scene,
    "ood_clip": ood_clip,
}


def ood_visual_set(kind: str, n: int = 40) -> list[AnySample]:
    """The first ``n`` test samples of ``kind`` (``ood_scene`` or ``ood_clip``) with pairwise
    distinct captions and distinct attributes, so a retrieval query has exactly one right
    answer among them; the same list on every call."""
    if kind not in _VISUAL_SETS:
        raise ValueError(f"kind must be one of {tuple(_VISUAL_SETS)}, got {kind!r}")
    generate = _VISUAL_SETS[kind]
    out: list[AnySample] = []
    captions: set[str] = set()
    keys: set[tuple] = set()
    index = 0
    while len(out) < n:
        sample = generate(index, "test")
        key = _attribute_key(sample.attrs)
        if sample.text not in captions and key not in keys:
            out.append(sample)
            captions.add(sample.text)
            keys.add(key)
        index += 1
    return out
