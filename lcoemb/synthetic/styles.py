"""How shapes are painted and what they are painted on: the rendering styles of the styled
training scenes and clips (:mod:`~lcoemb.synthetic.wide`) and of the out-of-distribution sets
(:mod:`~lcoemb.synthetic.ood`), in one place so that the two stay disjoint.

Stage 1 used to see every shape as a solid fill on a smooth grey gradient, and its image
projector learned exactly that: on the OOD scenes (outlined, striped, dotted or checked shapes
on noise, checkerboards or stripes) the base model captioned almost every image
``"three white squares"``. Domain randomisation is the classic remedy: show the projector many
renderings of the same concepts, so that colour and shape become what it keys on, then test on
renderings it never saw.

* :data:`TRAIN_STYLES`: ``solid``, ``shaded`` (a linear light-to-dark ramp of the colour),
  ``speckled`` (the colour with per-pixel noise), ``ring`` (a thick band, a third of the radius
  or more, around an empty middle) and ``translucent`` (the colour blended 70/30 over the
  background);
* :data:`TRAIN_BACKGROUNDS`: ``gradient`` (:func:`~lcoemb.synthetic.scenes.gradient`), ``flat``
  grey, ``blotches`` (noise blurred into soft clouds) and ``texture`` (scikit-image's bundled
  brick, grass, gravel and moon photographs, grey, at low contrast);
* :data:`OOD_STYLES` and :data:`OOD_BACKGROUNDS`: see :mod:`~lcoemb.synthetic.ood`.

No OOD style or background is a training one: a training ring is at least twice as thick as an
OOD outline of the same radius, and no training fill or background is a periodic pattern.
"""

from __future__ import annotations

import functools

import numpy as np
import PIL.Image
import PIL.ImageDraw
import skimage.data
import skimage.transform
from scipy import ndimage

from lcoemb.synthetic.scenes import draw_shape, gradient
from lcoemb.synthetic.seeds import choice, uniform

#: Shape styles of the styled training scenes and clips.
TRAIN_STYLES = ("solid", "shaded", "speckled", "ring", "translucent")
#: Backgrounds of the styled training scenes and clips.
TRAIN_BACKGROUNDS = ("gradient", "flat", "blotches", "texture")
#: How an OOD shape is drawn: never a training style.
OOD_STYLES = ("outline", "striped", "dotted", "checked")
#: Textured grey OOD backgrounds, never a training one.
OOD_BACKGROUNDS = ("noise", "checker", "stripes")
#: Grey levels of the OOD backgrounds stay inside this range, away from black and white.
_GREY_RANGE = (30, 225)
_TEXTURES = ("brick", "grass", "gravel", "moon")


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size]


@functools.lru_cache(maxsize=16)
def _texture(name: str, size: int) -> np.ndarray:
    """A bundled scikit-image photograph, grey, resized to ``size``, zero mean, unit std."""
    image = skimage.transform.resize(
        getattr(skimage.data, name)().astype(np.float32), (size, size), anti_aliasing=True
    )
    return ((image - image.mean()) / max(float(image.std()), 1e-6)).astype(np.float32)


def background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A ``size x size x 3`` uint8 grey background of ``kind`` (a training or an OOD one)."""
    if kind == "gradient":
        return gradient(rng, size)
    level = uniform(rng, 85, 165)
    tint = rng.integers(-8, 9, size=3).astype(np.float32)
    if kind == "flat":
        grey = np.zeros((size, size), np.float32)
    elif kind == "blotches":
        noise = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
        soft = ndimage.gaussian_filter(noise, uniform(rng, 6, 12))
        grey = soft / max(float(soft.std()), 1e-6) * uniform(rng, 10, 18)
    elif kind == "texture":
        grey = _texture(choice(rng, _TEXTURES), size) * uniform(rng, 8, 15)
        if rng.random() < 0.5:
            grey = grey.T
    elif kind == "noise":
        grey = rng.normal(0.0, uniform(rng, 10, 16), (size, size)).astype(np.float32)
    elif kind in ("checker", "stripes"):
        ys, xs = _grid(size)
        period = int(rng.integers(8, 17))
        if kind == "checker":
            pattern = (xs // period + ys // period) % 2
        else:
            slope = choice(rng, ((1, 0), (0, 1), (1, 1), (1, -1)))
            pattern = ((slope[0] * xs + slope[1] * ys) // (period // 2 + 2)) % 2
        grey = (pattern.astype(np.float32) - 0.5) * uniform(rng, 30, 50)
    else:
        raise ValueError(
            f"unknown background {kind!r}; choose from {TRAIN_BACKGROUNDS + OOD_BACKGROUNDS}"
        )
    image = level + grey[..., None] + tint
    return np.clip(np.rint(image), *_GREY_RANGE).astype(np.uint8)


def paint_shape(
    canvas: np.ndarray,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    colour: tuple[int, int, int],
    style: str,
    rng: np.random.Generator | None = None,
) -> None:
    """Paint ``shape`` (centre, circumradius, rotation) onto the uint8 ``canvas`` in ``style``.
    The training styles ``shaded`` and ``speckled`` draw from ``rng``; no other style does."""
    size = canvas.shape[0]
    mask_image = PIL.Image.new("L", (size, size), 0)
    draw_shape(PIL.ImageDraw.Draw(mask_image), shape, cx, cy, r, angle, 255)
    area = np.asarray(mask_image) > 0
    rgb = np.array(colour, np.float32)
    if style == "solid":
        canvas[area] = colour
        return
    if style in ("shaded", "speckled"):
        if rng is None:
            raise ValueError(f"style {style!r} needs an rng")
        if style == "shaded":
            ys, xs = _grid(size)
            theta = uniform(rng, 0.0, 2 * np.pi)
            t = (np.cos(theta) * (xs - cx) + np.sin(theta) * (ys - cy)) / max(r, 1.0)
            shift = t[area][:, None] * uniform(rng, 30, 45)
        else:
            noise = uniform(rng, 14, 22)
            shift = rng.normal(0.0, noise, (int(area.sum()), 3)).astype(np.float32)
        canvas[area] = np.clip(np.rint(rgb + shift), 0, 255).astype(np.uint8)
        return
    if style == "translucent":
        mixed = 0.7 * rgb + 0.3 * canvas[area].astype(np.float32)
        canvas[area] = np.rint(mixed).astype(np.uint8)
        return
    if style == "ring":
        band = max(3, round(0.35 * r))
        canvas[area & ~ndimage.binary_erosion(area, iterations=band)] = colour
        return
    small = r < 10  # a thinner edge and a finer pattern, or nothing but edge would be left
    stroke = 1 if small else 2 if r < 16 else 3
    edge = area & ~ndimage.binary_erosion(area, iterations=stroke)
    ys, xs = _grid(size)
    if style == "outline":
        paint = edge
    elif style == "striped":
        paint = edge | (area & ((xs + ys) // (2 if small else 3) % 2 == 0))
    elif style == "dotted":
        dot = 2 if small else 3
        paint = edge & ((xs // dot + ys // dot) % 2 == 0)
    elif style == "checked":
        cell = 2 if small else 4
        paint = edge | (area & ((xs // cell + ys // cell) % 2 == 0))
    else:
        raise ValueError(f"unknown style {style!r}; choose from {TRAIN_STYLES + OOD_STYLES}")
    canvas[paint] = colour
