"""Scenes (captioning), and the shapes and backgrounds that scenes and clips are drawn with.

``scene``: 1-3 copies of one shape, one colour, on a low-saturation grey gradient (levels
70-180, tint at most 12 per channel, so no palette colour is near it). Attribute space: count
{1, 2, 3} x :data:`~lcoemb.synthetic.descriptions.COLOURS` (8) x
:data:`~lcoemb.synthetic.descriptions.SHAPES` (5) x
:data:`~lcoemb.synthetic.descriptions.POSITIONS` (5) = 600 combinations. Shapes are drawn
without anti-aliasing, so every object pixel has exactly its palette colour. Circumradius 19-25
px per scene, each object x0.9-1.1 of it, polygons rotated at most 15 degrees; objects never
overlap (circumcircles at least 7 px apart). The position is that of the whole group: the
area-weighted centroid of the objects is nearest (by at least 20 px) to the position's anchor
point (:func:`position_of`: left (0.25, 0.5), right (0.75, 0.5), top (0.5, 0.25), bottom
(0.5, 0.75), centre (0.5, 0.5), as fractions of the width and height). The text is the
canonical caption, ``"two red circles on the left"``, ``"an orange star in the centre"``.
:func:`shape_points` also draws the wider grammar's hexagon, diamond, heart and arrow
(:mod:`~lcoemb.synthetic.wide`), which ``scene`` never uses.
Attribute combinations are balanced: indices ``[k*600, (k+1)*600)`` of a split hold every
combination exactly once, in a fixed shuffled order; layouts are random.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

from lcoemb.synthetic.descriptions import COLOURS, COUNTS, POSITIONS, SHAPES, canonical
from lcoemb.synthetic.samples import IMAGE_SIZE, Sample
from lcoemb.synthetic.seeds import balanced_index, sample_rng, uniform

#: Group anchor points, as fractions of (width, height); see :func:`position_of`.
POSITION_ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}


def position_of(x: float, y: float, width: int = IMAGE_SIZE, height: int = IMAGE_SIZE) -> str:
    """The position word of a group whose centroid is at pixel ``(x, y)``: the nearest anchor."""
    fx, fy = x / width, y / height
    return min(POSITION_ANCHORS, key=lambda p: math.dist((fx, fy), POSITION_ANCHORS[p]))


def gradient(rng: np.random.Generator, size: int, low: int = 70, high: int = 180) -> np.ndarray:
    """A low-saturation grey gradient background, ``size x size x 3`` uint8."""
    ends = []
    for _ in range(2):
        level = uniform(rng, low, high)
        tint = rng.integers(-12, 13, size=3)
        ends.append(np.clip(level + tint, 0, 255).astype(np.float32))
    angle = uniform(rng, 0.0, 2 * math.pi)
    axis = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = math.cos(angle) * axis[None, :] + math.sin(angle) * axis[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = ends[0] * (1 - t[..., None]) + ends[1] * t[..., None]
    return np.rint(image).astype(np.uint8)


def _heart_outline(points: int = 32) -> list[tuple[float, float]]:
    """The classic parametric heart, centred on its bounding box and scaled to circumradius 1."""
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x, y = x - (x.max() + x.min()) / 2, y - (y.max() + y.min()) / 2
    scale = float(np.hypot(x, y).max())
    return list(zip((x / scale).tolist(), (y / scale).tolist(), strict=True))


_HEART = _heart_outline()


def shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    """The polygon of ``shape`` (not ``circle``) centred at ``(cx, cy)`` with circumradius
    ``r``, rotated by ``angle`` radians."""
    if shape == "square":
        local = [(math.cos(a), math.sin(a)) for a in np.radians([45, 135, 225, 315])]
    elif shape == "triangle":
        local = [(math.cos(a), math.sin(a)) for a in np.radians([-90, 30, 150])]
    elif shape == "star":
        local = [
            (
                (1.0 if k % 2 == 0 else 0.45) * math.cos(a),
                (1.0 if k % 2 == 0 else 0.45) * math.sin(a),
            )
            for k, a in enumerate(np.radians(np.arange(-90, 270, 36)))
        ]
    elif shape == "cross":
        arm = 1 / math.sqrt(1 + 0.35**2)
        w = 0.35 * arm
        local = [
            (-w, -arm), (w, -arm), (w, -w), (arm, -w), (arm, w), (w, w),
            (w, arm), (-w, arm), (-w, w), (-arm, w), (-arm, -w), (-w, -w),
        ]  # fmt: skip
    elif shape == "hexagon":
        local = [(math.cos(a), math.sin(a)) for a in np.radians(np.arange(0, 360, 60))]
    elif shape == "diamond":
        local = [(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)]
    elif shape == "heart":
        local = _HEART
    elif shape == "arrow":  # pointing right
        local = [
            (-0.95, -0.25), (0.15, -0.25), (0.15, -0.65), (0.95, 0.0),
            (0.15, 0.65), (0.15, 0.25), (-0.95, 0.25),
        ]  # fmt: skip
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in local]


def draw_shape(draw: PIL.ImageDraw.ImageDraw, shape, cx, cy, r, angle, colour) -> None:
    """Fill ``shape`` (centre, circumradius, rotation) in ``colour``, without anti-aliasing."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon(shape_points(shape, cx, cy, r, angle), fill=colour)


# ---------------------------------------------------------------------------------------------
# Scenes

# Where object centres may lie, per position, as fractions: (x0, x1, y0, y1).
_SCENE_REGIONS = {
    "left": (0.13, 0.36, 0.18, 0.82),
    "right": (0.64, 0.87, 0.18, 0.82),
    "top": (0.18, 0.82, 0.13, 0.36),
    "bottom": (0.18, 0.82, 0.64, 0.87),
    "centre": (0.3, 0.7, 0.3, 0.7),
}
_SCENE_GAP = 7.0  # px between circumcircles
_SCENE_MARGIN = 20.0  # px: how much nearer the centroid is to its anchor than to any other
_SCENE_TRIES = 500


def _scene_attrs(index: int, split: str) -> dict[str, Any]:
    combo = balanced_index("scene", split, index, len(COUNTS) * len(COLOURS) * len(SHAPES) * 5)
    rest, position = divmod(combo, len(POSITIONS))
    rest, shape = divmod(rest, len(SHAPES))
    count, colour = divmod(rest, len(COLOURS))
    return {
        "kind": "scene",
        "count": COUNTS[count],
        "colour": list(COLOURS)[colour],
        "shape": SHAPES[shape],
        "position": POSITIONS[position],
    }


def _layout(rng: np.random.Generator, count: int, position: str, size: int):
    """Object centres and radii: no overlap, group centroid clearly nearest its anchor."""
    base = uniform(rng, 0.085, 0.11) * size
    radii = [base * uniform(rng, 0.9, 1.1) for _ in range(count)]
    x0, x1, y0, y1 = (v * size for v in _SCENE_REGIONS[position])
    anchors = {p: (ax * size, ay * size) for p, (ax, ay) in POSITION_ANCHORS.items()}
    weights = np.array(radii) ** 2
    for _ in range(_SCENE_TRIES):
        xs = x0 + (x1 - x0) * rng.random(count)
        ys = y0 + (y1 - y0) * rng.random(count)
        if any(
            math.hypot(xs[i] - xs[j], ys[i] - ys[j]) < radii[i] + radii[j] + _SCENE_GAP
            for i in range(count)
            for j in range(i)
        ):
            continue
        centroid = (float(xs @ weights / weights.sum()), float(ys @ weights / weights.sum()))
        own = math.dist(centroid, anchors[position])
        others = min(math.dist(centroid, a) for p, a in anchors.items() if p != position)
        if others - own >= _SCENE_MARGIN:
            return list(zip(xs.tolist(), ys.tolist(), radii, strict=True))
    # Never reached in practice; a fixed, valid line of objects through the anchor.
    ax, ay = anchors[position]
    step = 2 * max(radii) + _SCENE_GAP
    vertical = position in ("left", "right")
    offsets = [(k - (count - 1) / 2) * step for k in range(count)]
    return [
        (ax, ay + o, r) if vertical else (ax + o, ay, r)
        for o, r in zip(offsets, radii, strict=True)
    ]


def scene(index: int, split: str = "train") -> Sample:
    """Scene ``index`` of ``split``: 1-3 shapes of one colour, captioned canonically."""
    attrs = _scene_attrs(index, split)
    rng = sample_rng("scene", split, index)
    size = IMAGE_SIZE
    image = PIL.Image.fromarray(gradient(rng, size))
    draw = PIL.ImageDraw.Draw(image)
    objects = _layout(rng, attrs["count"], attrs["position"], size)
    colour = COLOURS[attrs["colour"]]
    for cx, cy, r in objects:
        angle = math.radians(uniform(rng, -15, 15))
        draw_shape(draw, attrs["shape"], cx, cy, r, angle, colour)
    meta = {"kind": "scene", "split": split, "index": int(index), "objects": objects}
    return Sample(image, canonical(attrs), attrs, meta)
