"""Shape descriptors of an image's objects, per grid cell: what LCO-Mini's image tokens add so that
a shape is recognised whatever it is painted with.

EfficientNet-Lite0's ImageNet features keep little of a shape once its rendering changes: a
linear probe trained on stage 1's styled scenes names the shape of an out-of-distribution one
(thin outlines, stripes, dots, checks, at sizes the training never shows) about 30 % of the time,
and fine-tuning the tower's last blocks on the training styles does not raise it. The silhouette
of an object is the same in every rendering, and its outline's Fourier magnitudes are the same
at every size and rotation, so these descriptors carry shape across styles: the same probe names
81 % of the out-of-distribution shapes from them (``docs/results/lco-mini/shape/``).

The descriptor rests on two priors about the pictures LCO-Mini is trained on, stated here
because a photograph does not obey them (there the descriptors describe whatever coloured
regions it has: nothing fails, but they no longer mean shape), and chosen knowing the
out-of-distribution styles, so they show what perception that carries over would give, not
style invariance learned from data. The shipped ``lco-mini-base`` does not use them (measured
in ``docs/results/lco-mini/``, "Stage 1e"); ``lcoemb mini pretrain --shapes`` adds them:

* an object stands out from a grey ground by its colour (chroma above :data:`CHROMA`) or by
  being near black or white (:data:`DARK`, :data:`LIGHT`);
* an object is one region: the gaps between its pixels are at most about twice :data:`BRIDGE`,
  and what it encloses is part of it. Growing the foreground by :data:`BRIDGE`, filling enclosed
  holes and shrinking it back turns an outline, a dotted edge, stripes or a ring into the same
  solid silhouette as a fill.

Per object: the distance from its centroid to its furthest pixel in each of :data:`ANGLES`
directions, divided by its mean, and the magnitudes of that profile's first :data:`HARMONICS`
Fourier coefficients (invariant to rotation and size: a triangle's energy is at 3, a star's at
5), with its fill ratio and the profile's spread, minimum and maximum. Per grid cell: the mean
over the objects centred in it, their count and their size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: smallest chroma (max - min of RGB) of an object's pixel on a grey ground
CHROMA = 40
#: a pixel darker than this in every channel, or lighter than :data:`LIGHT`, is an object's
DARK, LIGHT = 26, 230
#: pixels of one object lie at most about twice this far apart (dots, stripes, an outline's gaps)
BRIDGE = 2
#: directions of the outline's profile, and the Fourier magnitudes kept of it
ANGLES, HARMONICS = 64, 16
#: objects smaller than this many pixels, or than this share of the largest, are specks
MIN_AREA, MIN_SHARE = 12, 0.3
#: width of one cell's descriptor: harmonics, fill ratio, profile std / min / max, count, size
SHAPE_FEATURES = HARMONICS + 6
_BOX = np.ones((3, 3), bool)


def foreground(pixels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the pixels of a uint8 ``(H, W, 3)`` image that are not grey ground."""
    x = pixels.astype(np.int16)
    high, low = x.max(-1), x.min(-1)
    return (high - low > CHROMA) | (high < DARK) | (low > LIGHT)


def silhouettes(pixels: np.ndarray) -> list[np.ndarray]:
    """The solid silhouettes of a uint8 ``(H, W, 3)`` image's objects, each an ``(H, W)`` bool
    mask, specks dropped (see the module's priors)."""
    pad = BRIDGE + 1
    mask = np.pad(foreground(pixels), pad)
    grown = ndimage.binary_dilation(mask, structure=_BOX, iterations=BRIDGE)
    solid = ndimage.binary_fill_holes(grown)
    solid = ndimage.binary_erosion(solid, structure=_BOX, iterations=BRIDGE)[pad:-pad, pad:-pad]
    labels, n = ndimage.label(solid)
    if not n:
        return []
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = (areas >= MIN_AREA) & (areas >= MIN_SHARE * areas.max())
    return [labels == i + 1 for i in np.flatnonzero(keep)]


def describe(silhouette: np.ndarray) -> np.ndarray:
    """One silhouette's ``HARMONICS + 4`` numbers: its outline's Fourier magnitudes, fill ratio
    and the spread, minimum and maximum of its normalised profile."""
    return _describe(*np.nonzero(silhouette))


def _describe(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """:func:`describe` of the silhouette whose pixels are at rows ``ys``, columns ``xs``."""
    dy, dx = ys - ys.mean(), xs - xs.mean()
    radius = np.hypot(dy, dx)
    direction = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * ANGLES).astype(np.int64) % ANGLES
    profile = np.zeros(ANGLES)
    np.maximum.at(profile, direction, radius)
    profile /= max(float(profile.mean()), 1e-6)
    spectrum = np.abs(np.fft.rfft(profile))[1 : HARMONICS + 1] / ANGLES
    fill = len(ys) / (np.pi * (radius.max() + 0.5) ** 2)
    return np.concatenate([spectrum, [fill, profile.std(), profile.min(), profile.max()]])


def cell_shapes(pixels: np.ndarray, grid: int) -> np.ndarray:
    """``(grid², SHAPE_FEATURES)`` float32 for a uint8 ``(H, W, 3)`` image, cells row-major as
    the image tokens are: per cell, the mean descriptor of the objects whose centroid lies in it,
    their count / 4 and the mean square root of their areas as shares of the image (zeros for a cell
    without one)."""
    side_y, side_x = pixels.shape[:2]
    out = np.zeros((grid * grid, SHAPE_FEATURES), np.float32)
    count = np.zeros(grid * grid, np.int64)
    for silhouette in silhouettes(pixels):
        ys, xs = np.nonzero(silhouette)
        cell = min(int(ys.mean() * grid / side_y), grid - 1) * grid + min(
            int(xs.mean() * grid / side_x), grid - 1
        )
        out[cell, : HARMONICS + 4] += _describe(ys, xs)
        out[cell, -1] += np.sqrt(len(ys) / (side_y * side_x))
        count[cell] += 1
    seen = count > 0
    out[seen, : HARMONICS + 4] /= count[seen, None]
    out[seen, -1] /= count[seen]
    out[:, -2] = count / 4
    return out
