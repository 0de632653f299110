"""A wider scene and clip grammar for stage-1 pretraining.

The closed grammar of :mod:`~lcoemb.synthetic.scenes` and :mod:`~lcoemb.synthetic.clips` (600
and 160 attribute combinations, one caption each) is also what evaluation uses, so a model can
score by memorising it. Stage 1 trains on this wider grammar instead, and the
out-of-distribution sets (:mod:`~lcoemb.synthetic.ood`) draw their concepts from the same
vocabulary while rendering and wording them in ways no training generator does.

``scene_wide`` (224x224): one group of 1-5 shapes at one of nine positions (the thirds of the
image, corners included: the group's area-weighted centroid lies in that cell), or two groups of
1-3 shapes each in a relation (``"a red circle to the left of two blue squares"``: the groups'
centroids are at least 45 px apart along the relation's axis and at most 22 px apart across
it). Colours: :data:`WIDE_COLOURS` (14, far apart from each other and from the grey gradient),
shapes: :data:`WIDE_SHAPES` (9), circumradius 0.045-0.094 of the side, objects never overlap.
In 30 % of scenes a small word from :data:`DISTRACTOR_WORDS` is written away from the objects,
and the caption names it (``"... and the word lamp"``). Captions vary: several templates and
synonyms per slot.

``clip_wide`` (8 frames, 112x112, 4 fps, like :func:`~lcoemb.synthetic.clips.clip`): one shape,
or two shapes in separate halves of the frame, each with one of :data:`MOTIONS` (eight
straight-line directions, growing, shrinking, spinning either way; a circle never spins).

Every sample draws its attributes and words first, then its layout, from
``sample_rng("scene_wide" | "clip_wide", split, index)``; :func:`wide_caption` rebuilds just the
words, cheaply enough to scan thousands of captions. Attributes: ``kind``, ``colour``,
``shape``, then ``count`` and ``position`` (one group) or ``count``, ``relation``, ``count_2``,
``colour_2``, ``shape_2`` (two groups; the first group is the relation's subject), and ``word``
when one is written; clips ``colour``, ``shape``, ``motion`` and, for two objects,
``colour_2``, ``shape_2``, ``motion_2``. Combinations are drawn at random, not balanced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

from lcoemb.synthetic.clips import CLIP_FPS, CLIP_FRAMES, CLIP_SIZE
from lcoemb.synthetic.descriptions import COLOURS, SHAPES, WORDS
from lcoemb.synthetic.fonts import font
from lcoemb.synthetic.samples import IMAGE_SIZE, ClipSample, Sample
from lcoemb.synthetic.scenes import gradient
from lcoemb.synthetic.seeds import choice, sample_rng, uniform
from lcoemb.synthetic.styles import TRAIN_BACKGROUNDS, TRAIN_STYLES, background, paint_shape

#: The closed grammar's eight colours and six more, each at least 75 apart in RGB from every
#: other and at least 60 from any grey of :func:`~lcoemb.synthetic.scenes.gradient`.
WIDE_COLOURS: dict[str, tuple[int, int, int]] = {
    **COLOURS,
    "pink": (255, 110, 190),
    "brown": (130, 60, 0),
    "cyan": (40, 220, 230),
    "lime": (170, 245, 60),
    "navy": (10, 20, 140),
    "teal": (0, 130, 130),
}
WIDE_SHAPES = (*SHAPES, "hexagon", "diamond", "heart", "arrow")
WIDE_COUNTS = (1, 2, 3, 4, 5)
#: The nine cells of a 3x3 grid, named by (column, row).
WIDE_POSITIONS = (
    "left",
    "right",
    "top",
    "bottom",
    "centre",
    "top left",
    "top right",
    "bottom left",
    "bottom right",
)
#: How the first group of a two-group scene stands to the second.
RELATIONS = ("left of", "right of", "above", "below")
#: The unit step of each straight-line motion, in image coordinates (y grows downwards).
MOTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up left": (-1, -1),
    "up right": (1, -1),
    "down left": (-1, 1),
    "down right": (1, 1),
}
MOTIONS = (*MOTION_VECTORS, "grow", "shrink", "spin clockwise", "spin anticlockwise")

_CELLS = {
    "left": (0, 1),
    "right": (2, 1),
    "top": (1, 0),
    "bottom": (1, 2),
    "centre": (1, 1),
    "top left": (0, 0),
    "top right": (2, 0),
    "bottom left": (0, 2),
    "bottom right": (2, 2),
}
_POSITION_OF_CELL = {cell: name for name, cell in _CELLS.items()}

# --- words ---------------------------------------------------------------------------------

_COUNT_WORDS = {
    1: ("a", "one", "a single"),
    2: ("two", "a pair of"),
    3: ("three",),
    4: ("four",),
    5: ("five",),
}
_SHAPE_WORDS = {  # (singular, plural) per synonym
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "hexagon": (("hexagon", "hexagons"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "heart": (("heart", "hearts"),),
    "arrow": (("arrow", "arrows"),),
}
_POSITION_WORDS = {
    "left": ("on the left", "on the left side", "in the left third"),
    "right": ("on the right", "on the right side", "in the right third"),
    "top": ("at the top", "near the top", "in the top third"),
    "bottom": ("at the bottom", "near the bottom", "in the bottom third"),
    "centre": ("in the centre", "in the middle"),
    "top left": ("in the top left corner", "at the top left", "in the upper left"),
    "top right": ("in the top right corner", "at the top right", "in the upper right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right"),
}
_RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_SCENE_TEMPLATES = (
    "{g} {p}",
    "{p}, {g}",
    "there {be} {g} {p}",
    "an image with {g} {p}",
    "a picture showing {g} {p}",
    "{g}, placed {p}",
)
_RELATION_TEMPLATES = (
    "{g} {r} {g2}",
    "{g} {be} {r} {g2}",
    "an image with {g} {r} {g2}",
    "a picture showing {g} {r} {g2}",
)
_WORD_TEMPLATES = (" and the word {w}", ", with the word {w} written nearby", ", plus the word {w}")

_DIRECTION_WORDS = {
    "left": ("left", "to the left", "leftwards"),
    "right": ("right", "to the right", "rightwards"),
    "up": ("up", "upwards"),
    "down": ("down", "downwards"),
    "up left": ("up and to the left", "diagonally up and left", "towards the top left"),
    "up right": ("up and to the right", "diagonally up and right", "towards the top right"),
    "down left": ("down and to the left", "diagonally down and left", "towards the bottom left"),
    "down right": (
        "down and to the right",
        "diagonally down and right",
        "towards the bottom right",
    ),
}
_TRAVEL_VERBS = (("moving", "moves"), ("travelling", "travels"), ("sliding", "slides"))
_CHANGE_WORDS = {  # (participle, finite) per synonym
    "grow": (("growing", "grows"), ("getting bigger", "gets bigger")),
    "shrink": (("shrinking", "shrinks"), ("getting smaller", "gets smaller")),
    "spin clockwise": (
        ("spinning clockwise", "spins clockwise"),
        ("rotating clockwise", "rotates clockwise"),
    ),
    "spin anticlockwise": (
        ("spinning anticlockwise", "spins anticlockwise"),
        ("rotating counterclockwise", "rotates counterclockwise"),
    ),
}
_CLIP_TEMPLATES = ("{a} {a_ing}", "{a} {a_s}", "a video of {a} {a_ing}", "a clip where {a} {a_s}")
_TWO_CLIP_TEMPLATES = (
    "{a} {a_s} while {b} {b_s}",
    "{a} {a_ing} and {b} {b_ing}",
    "a video of {a} {a_ing} and {b} {b_ing}",
)

#: Words written into scenes as distractors: :data:`~lcoemb.synthetic.descriptions.WORDS`
#: without the ones a caption could mistake for an attribute (``heart``, ``yellow``...).
DISTRACTOR_WORDS: tuple[str, ...] = tuple(
    w
    for w in WORDS
    if w not in {*WIDE_COLOURS, *WIDE_SHAPES, "color", "left", "right", "top", "bottom"}
)

_AN = re.compile(r"\ba (?=[aeiou])")


def fix_articles(text: str) -> str:
    """``a`` becomes ``an`` before a vowel (``"an orange star"``)."""
    return _AN.sub("an ", text)


def _group_words(rng: np.random.Generator, count: int, colour: str, shape: str) -> str:
    singular, plural = choice(rng, _SHAPE_WORDS[shape])
    return f"{choice(rng, _COUNT_WORDS[count])} {colour} {singular if count == 1 else plural}"


def scene_attrs(
    rng: np.random.Generator,
    kind: str,
    *,
    relation_share: float,
    pair_counts: Sequence[int],
    group_counts: Sequence[int],
) -> dict[str, Any]:
    """A scene's attributes in the wide grammar's vocabulary, drawn from ``rng``: a relation
    between two different groups (``relation_share`` of the time, ``pair_counts`` each) or one
    group at a position (``group_counts``). The wide scenes and the OOD scenes draw the same way
    with their own shares and counts, and word the result their own ways."""
    attrs: dict[str, Any] = {
        "kind": kind,
        "colour": choice(rng, list(WIDE_COLOURS)),
        "shape": choice(rng, WIDE_SHAPES),
    }
    if rng.random() < relation_share:
        attrs["count"] = choice(rng, pair_counts)
        attrs["relation"] = choice(rng, RELATIONS)
        attrs["count_2"] = choice(rng, pair_counts)
        other = attrs["colour"], attrs["shape"]
        while other == (attrs["colour"], attrs["shape"]):
            other = choice(rng, list(WIDE_COLOURS)), choice(rng, WIDE_SHAPES)
        attrs["colour_2"], attrs["shape_2"] = other
    else:
        attrs["count"] = choice(rng, group_counts)
        attrs["position"] = choice(rng, WIDE_POSITIONS)
    return attrs


def _scene_words(
    index: int, split: str, kind: str
) -> tuple[np.random.Generator, dict[str, Any], str]:
    rng = sample_rng(kind, split, index)
    attrs = scene_attrs(
        rng, kind, relation_share=0.35, pair_counts=(1, 2, 3), group_counts=WIDE_COUNTS
    )
    be = "is" if attrs["count"] == 1 else "are"
    if "relation" in attrs:
        text = choice(rng, _RELATION_TEMPLATES).format(
            g=_group_words(rng, attrs["count"], attrs["colour"], attrs["shape"]),
            be=be,
            r=choice(rng, _RELATION_WORDS[attrs["relation"]]),
            g2=_group_words(rng, attrs["count_2"], attrs["colour_2"], attrs["shape_2"]),
        )
    else:
        text = choice(rng, _SCENE_TEMPLATES).format(
            g=_group_words(rng, attrs["count"], attrs["colour"], attrs["shape"]),
            be=be,
            p=choice(rng, _POSITION_WORDS[attrs["position"]]),
        )
    if rng.random() < 0.3:
        attrs["word"] = choice(rng, DISTRACTOR_WORDS)
        text += choice(rng, _WORD_TEMPLATES).format(w=attrs["word"])
    return rng, attrs, fix_articles(text)


def _motion_words(rng: np.random.Generator, motion: str) -> tuple[str, str]:
    if motion in MOTION_VECTORS:
        direction = choice(rng, _DIRECTION_WORDS[motion])
        ing, finite = choice(rng, _TRAVEL_VERBS)
        return f"{ing} {direction}", f"{finite} {direction}"
    return choice(rng, _CHANGE_WORDS[motion])


def clip_object(rng: np.random.Generator) -> tuple[str, str, str]:
    """One clip object's colour, shape and motion (a circle never spins: it would not show)."""
    motion = choice(rng, MOTIONS)
    shapes = WIDE_SHAPES[1:] if motion.startswith("spin") else WIDE_SHAPES  # circles can't spin
    return choice(rng, list(WIDE_COLOURS)), choice(rng, shapes), motion


def clip_attrs(
    rng: np.random.Generator, kind: str
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """A clip's attributes and its objects ``(colour, shape, motion)``, drawn from ``rng``: one
    object, or (40 % of the time) two that differ in colour or shape. The wide and the OOD clips
    draw the same way and word the result their own ways."""
    colour, shape, motion = clip_object(rng)
    attrs: dict[str, Any] = {"kind": kind, "colour": colour, "shape": shape, "motion": motion}
    objects = [(colour, shape, motion)]
    if rng.random() < 0.4:
        second = clip_object(rng)
        while second[:2] == (colour, shape):
            second = clip_object(rng)
        attrs["colour_2"], attrs["shape_2"], attrs["motion_2"] = second
        objects.append(second)
    return attrs, objects


def _clip_words(
    index: int, split: str, kind: str
) -> tuple[np.random.Generator, dict[str, Any], str]:
    rng = sample_rng(kind, split, index)
    attrs, objects = clip_attrs(rng, kind)
    slots = {}
    for name, (c, s, m) in zip("ab", objects, strict=False):
        slots[name] = f"a {c} {choice(rng, _SHAPE_WORDS[s])[0]}"
        slots[f"{name}_ing"], slots[f"{name}_s"] = _motion_words(rng, m)
    templates = _TWO_CLIP_TEMPLATES if len(objects) == 2 else _CLIP_TEMPLATES
    return rng, attrs, fix_articles(choice(rng, templates).format(**slots))


def wide_caption(kind: str, index: int, split: str = "train") -> str:
    """The text of sample ``index`` of ``kind`` (``scene_wide``, ``clip_wide``,
    ``scene_styled`` or ``clip_styled``) without rendering it: cheap enough to scan thousands of
    training captions, e.g. to prove that an evaluation caption is none of them."""
    words = {
        "scene_wide": _scene_words,
        "scene_styled": _scene_words,
        "clip_wide": _clip_words,
        "clip_styled": _clip_words,
    }
    if kind not in words:
        raise ValueError(f"kind must be one of {tuple(words)}, got {kind!r}")
    return words[kind](index, split, kind)[2]


# --- layout --------------------------------------------------------------------------------


def wide_position_of(x: float, y: float, size: int = IMAGE_SIZE) -> str:
    """The position word of a group whose centroid is at pixel ``(x, y)``: its third of the
    image in each direction."""
    column = min(int(3 * x / size), 2)
    row = min(int(3 * y / size), 2)
    return _POSITION_OF_CELL[(column, row)]


_GAP = 5.0  # px between circumcircles
_CELL_MARGIN = 6.0  # px between a group's centroid and the border of its cell
_TRIES = 200

Objects = list[tuple[float, float, float]]
Inside = Callable[[float, float], bool]


def _cluster(
    rng: np.random.Generator,
    radii: Sequence[float],
    centre: tuple[float, float],
    spread: float,
    placed: Objects,
    inside: Inside,
    size: int,
) -> Objects:
    """Centres for circles of ``radii`` within ``spread`` of ``centre``, clear of each other
    and of ``placed``, whose area-weighted centroid satisfies ``inside``; the radii shrink by
    10 % after every ``_TRIES`` failures, so a layout is always found."""
    r = np.array(radii)
    while True:
        for _ in range(_TRIES):
            xs = np.clip(centre[0] + spread * (2 * rng.random(len(r)) - 1), r + 2, size - r - 2)
            ys = np.clip(centre[1] + spread * (2 * rng.random(len(r)) - 1), r + 2, size - r - 2)
            new = list(zip(xs.tolist(), ys.tolist(), r.tolist(), strict=True))
            if any(
                math.hypot(a[0] - b[0], a[1] - b[1]) < a[2] + b[2] + _GAP
                for i, a in enumerate(new)
                for b in new[:i] + placed
            ):
                continue
            w = r**2
            if inside(float(xs @ w / w.sum()), float(ys @ w / w.sum())):
                return new
        r = r * 0.9


def scene_layout(
    rng: np.random.Generator, attrs: Mapping[str, Any], radius: float, size: int = IMAGE_SIZE
) -> list[tuple[int, float, float, float]]:
    """``(group, cx, cy, r)`` of every object of a wide scene's ``attrs``, each ``r`` within
    10 % of ``radius``: one group whose centroid lies in its position's cell, or two groups in
    their relation."""
    if "position" in attrs:
        col, row = _CELLS[attrs["position"]]
        third = size / 3

        def in_cell(x: float, y: float) -> bool:
            return (
                col * third + _CELL_MARGIN <= x <= (col + 1) * third - _CELL_MARGIN
                and row * third + _CELL_MARGIN <= y <= (row + 1) * third - _CELL_MARGIN
            )

        count = attrs["count"]
        radii = [radius * uniform(rng, 0.9, 1.1) for _ in range(count)]
        anchor = ((col + 0.5) * third, (row + 0.5) * third)
        spread = (0.1 if count == 1 else 0.25) * size
        return [(0, *o) for o in _cluster(rng, radii, anchor, spread, [], in_cell, size)]
    # Two groups: "first" is on the low side of the axis (left or top) for "left of"/"above".
    horizontal = attrs["relation"] in ("left of", "right of")
    first_low = attrs["relation"] in ("left of", "above")
    across = uniform(rng, 0.3, 0.7) * size
    near, far = uniform(rng, 0.2, 0.3) * size, uniform(rng, 0.7, 0.8) * size
    placed: Objects = []
    out = []
    for group, count in enumerate((attrs["count"], attrs["count_2"])):
        low = (group == 0) == first_low
        along = near if low else far
        radii = [radius * uniform(rng, 0.9, 1.1) for _ in range(count)]

        def fits(x: float, y: float, low: bool = low) -> bool:
            a, c = (x, y) if horizontal else (y, x)
            side = a <= 0.4 * size if low else a >= 0.6 * size
            return side and abs(c - across) <= 0.05 * size

        centre = (along, across) if horizontal else (across, along)
        spread = max(0.12 * size, 2.5 * radius)
        objects = _cluster(rng, radii, centre, spread, placed, fits, size)
        placed += objects
        out += [(group, *o) for o in objects]
    return out


def _place_word(
    rng: np.random.Generator,
    word: str,
    objects: Sequence[tuple[int, float, float, float]],
    background: np.ndarray,
    draw: PIL.ImageDraw.ImageDraw,
) -> dict[str, Any]:
    """Write ``word`` small, clear of every object, in grey ink that contrasts with the
    background there (never a palette colour); returns where and how."""
    size = background.shape[0]
    for font_size in range(17, 8, -1):
        face = font("DejaVuSans.ttf", font_size)
        for _ in range(50):
            x, y = int(rng.integers(2, size - 20)), int(rng.integers(2, size - 16))
            box = draw.textbbox((x, y), word, font=face)
            if box[2] > size - 2 or box[3] > size - 2:
                continue
            if all(
                math.hypot(max(box[0] - cx, 0, cx - box[2]), max(box[1] - cy, 0, cy - box[3]))
                > r + 3
                for _, cx, cy, r in objects
            ):
                level = float(background[box[1] : box[3], box[0] : box[2]].mean())
                ink = (25, 25, 25) if level > 125 else (235, 235, 235)
                draw.text((x, y), word, font=face, fill=ink)
                return {"word_box": tuple(box), "ink": ink, "font_size": font_size}
    raise RuntimeError(f"no room for the word {word!r}")  # objects cover < 40 % of the image


def scene_wide(index: int, split: str = "train") -> Sample:
    """Wide scene ``index`` of ``split``: one group at one of nine positions or two groups in a
    relation, sometimes with a written word, captioned with varied templates; solid shapes on a
    grey gradient."""
    return _scene(index, split, "scene_wide")


def scene_styled(index: int, split: str = "train") -> Sample:
    """Styled scene ``index`` of ``split``: a wide scene (its own captions, from the same
    grammar) whose shapes are painted in one of :data:`~lcoemb.synthetic.styles.TRAIN_STYLES`
    on one of :data:`~lcoemb.synthetic.styles.TRAIN_BACKGROUNDS` (``meta``: ``style``,
    ``background``), so that stage 1 learns colour and shape apart from one rendering."""
    return _scene(index, split, "scene_styled")


def _rendering(
    rng: np.random.Generator, styled: bool, size: int, meta: dict[str, Any]
) -> tuple[str, np.ndarray]:
    """The shape style and the background of a sample: solid on a grey gradient, or (styled)
    a training style on a training background, both recorded in ``meta``."""
    if not styled:
        return "solid", gradient(rng, size)
    meta["style"] = style = choice(rng, TRAIN_STYLES)
    meta["background"] = backdrop = choice(rng, TRAIN_BACKGROUNDS)
    return style, background(rng, backdrop, size)


def _scene(index: int, split: str, kind: str) -> Sample:
    rng, attrs, text = _scene_words(index, split, kind)
    size = IMAGE_SIZE
    meta: dict[str, Any] = {"kind": kind, "split": split, "index": int(index)}
    style, canvas = _rendering(rng, kind == "scene_styled", size, meta)
    backdrop_pixels = canvas.copy()
    if "relation" in attrs:
        radius = uniform(rng, 0.05, 0.065) * size
    else:
        radius = uniform(rng, *((0.06, 0.085) if attrs["count"] <= 3 else (0.05, 0.06))) * size
    objects = []
    for group, cx, cy, r in scene_layout(rng, attrs, radius, size):
        shape = attrs["shape_2" if group else "shape"]
        colour = attrs["colour_2" if group else "colour"]
        angle = math.radians(uniform(rng, -15, 15))
        paint_shape(canvas, shape, cx, cy, r, angle, WIDE_COLOURS[colour], style, rng)
        objects.append((group, shape, colour, cx, cy, r, angle))
    image = PIL.Image.fromarray(canvas)
    meta["objects"] = objects
    if "word" in attrs:
        boxes = [(o[0], o[3], o[4], o[5]) for o in objects]
        draw = PIL.ImageDraw.Draw(image)
        meta.update(_place_word(rng, attrs["word"], boxes, backdrop_pixels, draw))
    return Sample(image, text, attrs, meta)


# --- clips ---------------------------------------------------------------------------------

Track = list[tuple[float, float, float, float]]


def motion_track(
    rng: np.random.Generator,
    motion: str,
    box: tuple[float, float, float, float],
    radius: float,
    frames: int = CLIP_FRAMES,
) -> Track:
    """``(cx, cy, r, angle)`` per frame of one object doing ``motion`` inside ``box`` ``(x0,
    y0, x1, y1)``: a straight line over 65-90 % of the room left, a radius growing or shrinking
    by a factor 2.2-2.9, or 18-25 degrees of rotation per frame (clockwise on screen for
    positive angles, below half the symmetry angle of every shape, so the sense is visible)."""
    x0, y0, x1, y1 = box
    angle = math.radians(uniform(rng, -15, 15))
    steps = np.linspace(0.0, 1.0, frames)

    def centre(margin_x: float, margin_y: float) -> tuple[float, float]:
        return uniform(rng, x0 + margin_x, x1 - margin_x), uniform(
            rng, y0 + margin_y, y1 - margin_y
        )

    if motion in MOTION_VECTORS:
        vx, vy = MOTION_VECTORS[motion]
        room = min(x1 - x0 if vx else math.inf, y1 - y0 if vy else math.inf) - 2 * radius - 2
        d = uniform(rng, 0.65, 0.9) * room
        cx, cy = centre(radius + 1 + abs(vx) * d / 2, radius + 1 + abs(vy) * d / 2)
        return [(cx + vx * d * (s - 0.5), cy + vy * d * (s - 0.5), radius, angle) for s in steps]
    if motion in ("grow", "shrink"):
        big = min(1.6 * radius, min(x1 - x0, y1 - y0) / 2 - 1)
        small = big / uniform(rng, 2.2, 2.9)
        cx, cy = centre(big + 1, big + 1)
        radii = small + (big - small) * (steps if motion == "grow" else steps[::-1])
        return [(cx, cy, float(r), angle) for r in radii]
    step = math.radians(uniform(rng, 18, 25)) * (1 if motion == "spin clockwise" else -1)
    cx, cy = centre(radius + 1, radius + 1)
    return [(cx, cy, radius, angle + step * k) for k in range(frames)]


def clip_boxes(
    rng: np.random.Generator, objects: int, size: int
) -> list[tuple[float, float, float, float]]:
    """The region of each object: the whole frame, or for two objects the two halves (side by
    side or one above the other), so their paths never cross."""
    if objects == 1:
        return [(0.0, 0.0, float(size), float(size))]
    half = size / 2
    if rng.random() < 0.5:
        return [(0.0, 0.0, half, float(size)), (half, 0.0, float(size), float(size))]
    return [(0.0, 0.0, float(size), half), (0.0, half, float(size), float(size))]


def clip_objects(attrs: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(colour, shape, motion)`` of each object of clip attributes, in caption order."""
    out = [(attrs["colour"], attrs["shape"], attrs["motion"])]
    if "motion_2" in attrs:
        out.append((attrs["colour_2"], attrs["shape_2"], attrs["motion_2"]))
    return out


def clip_wide(
    index: int,
    split: str = "train",
    *,
    size: int = CLIP_SIZE,
    frames: int = CLIP_FRAMES,
    fps: float = CLIP_FPS,
) -> ClipSample:
    """Wide clip ``index`` of ``split``: one or two shapes, each moving, growing, shrinking or
    spinning, described with varied templates; solid shapes on a grey gradient."""
    return _clip(index, split, "clip_wide", size, frames, fps)


def clip_styled(index: int, split: str = "train") -> ClipSample:
    """Styled clip ``index`` of ``split``: a wide clip (its own captions; 8 frames of 112x112
    at 4 fps) painted in one of :data:`~lcoemb.synthetic.styles.TRAIN_STYLES` on one of
    :data:`~lcoemb.synthetic.styles.TRAIN_BACKGROUNDS`, as :func:`scene_styled` is a styled
    scene."""
    return _clip(index, split, "clip_styled", CLIP_SIZE, CLIP_FRAMES, CLIP_FPS)


def _clip(index: int, split: str, kind: str, size: int, frames: int, fps: float) -> ClipSample:
    rng, attrs, text = _clip_words(index, split, kind)
    meta: dict[str, Any] = {"kind": kind, "split": split, "index": int(index)}
    style, still = _rendering(rng, kind == "clip_styled", size, meta)
    objects = clip_objects(attrs)
    fraction = (0.09, 0.13) if len(objects) == 1 else (0.06, 0.08)
    tracks = [
        motion_track(rng, motion, box, uniform(rng, *fraction) * size, frames)
        for (_, _, motion), box in zip(objects, clip_boxes(rng, len(objects), size), strict=True)
    ]
    out = []
    for k in range(frames):
        canvas = still.copy()
        for (colour, shape, _), track in zip(objects, tracks, strict=True):
            cx, cy, r, angle = track[k]
            paint_shape(canvas, shape, cx, cy, r, angle, WIDE_COLOURS[colour], style, rng)
        out.append(canvas)
    meta["tracks"] = tracks
    return ClipSample(out, float(fps), text, attrs, meta)
