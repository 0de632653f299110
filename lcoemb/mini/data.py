"""Deterministic generated data for LCO-Mini: scenes, OCR, digits, speech, clips and text triplets.

Every sample is a pure function of ``(kind, split, index)``: its random numbers come from
``numpy.random.default_rng(SeedSequence([salt, kind, split, stream, index]))`` and nothing
global, so any sample can be rebuilt on its own, in any order, in any process. The salt is fixed
per :data:`DATA_VERSION`; whatever changes a sample bumps that version (the benchmark records
it). Texts and attributes are exact on every machine; pixels are exact given the same Pillow and
FreeType (text rendering), and speech given the same espeak-ng (:func:`espeak_version`) — the
float waveform after resampling may differ in the last bits across CPUs.

Each generator returns plain values: a :class:`Sample` (``image``: 224x224 RGB ``PIL`` image),
an :class:`AudioSample` (``wave``: 16 kHz mono float32) or a :class:`ClipSample` (``frames``:
``HxWx3`` uint8 arrays, ``fps``), each with ``text``, ``attrs`` (the semantic attributes that
``text`` states; :func:`parse_description` recovers them from the text) and ``meta`` (how it
was rendered: font, voice, background...). :func:`as_input` turns one into what
:meth:`lcoemb.OmniEncoder.encode` takes.

The sets
--------
``scene`` (captioning). 1-3 copies of one shape, one colour, on a low-saturation grey gradient
(levels 70-180, tint at most 12 per channel, so no palette colour is near it). Attribute space:
count {1, 2, 3} x :data:`COLOURS` (8) x :data:`SHAPES` (5) x :data:`POSITIONS` (5) = 600
combinations. Shapes are drawn without anti-aliasing, so every object pixel has exactly its
palette colour. Circumradius 19-25 px per scene, each object x0.9-1.1 of it, polygons rotated
at most 15 degrees; objects never overlap (circumcircles at least 7 px apart). The position is
that of the whole group: the area-weighted centroid of the objects is nearest (by at least
20 px) to the position's anchor point (:func:`position_of`: left (0.25, 0.5), right
(0.75, 0.5), top (0.5, 0.25), bottom (0.5, 0.75), centre (0.5, 0.5), as fractions of the width
and height). The text is the canonical caption, ``"two red circles on the left"``, ``"an orange
star in the centre"`` (:func:`describe`, template 0).

``ocr``. One line of 1-4 words from :data:`WORDS` (413 common English words, none of them a
digit name) in one of :data:`FONT_FILES` (DejaVu Sans/Serif/Mono, regular, bold, oblique) or
Pillow's default font, 18-56 px, lower case, Capitalised or UPPER case (60/25/15 %), dark ink on
a light background or light ink on a dark one, centred with a random offset. A line too wide
for 200 px at 16 px or more is wrapped onto two lines. ``text`` is exactly what is written (the
words joined by single spaces); ``attrs`` holds the words lower-cased.

``digit``. scikit-learn's ``load_digits`` (1797 8x8 images, the only data file read, kept in
memory after first use): upscaled to 150-224 px (bilinear or nearest), placed at a random offset
in 224x224, white on black or a palette colour on a contrasting grey. ``text`` is the digit's
name (``"seven"``). The 1797 source images are split once (fixed permutation): 360 test, 1437
train, so the two splits never share a source image.

``speech`` (ASR). espeak-ng reads a canonical scene caption (50 %), a clip caption (25 %) or
a lower-case line of 2-4 :data:`WORDS` (25 %) with one of :data:`VOICES`, speed ``-s`` 130-190
words per minute, pitch ``-p`` 35-65 and amplitude ``-a`` 75; the 22.05 kHz int16 output is
resampled to 16 kHz float32 with ``torchaudio.functional.resample``. Durations are about 0.7-3 s.

``clip`` (video description). 8 frames at 4 fps, 112x112 by default, of one shape of one
colour crossing 40-55 % of the frame in a straight line on a grey gradient. Attribute space:
:data:`COLOURS` x :data:`SHAPES` x :data:`DIRECTIONS` (left, right, up, down) = 160
combinations. ``text``: ``"a red circle moving left"``.

``text_triplet`` (text-only contrastive training; not in :data:`KINDS`). An anchor description
(scene 40 %, motion 25 %, OCR phrase 25 %, digit 10 %) in a random template with random
synonyms; the positive is a paraphrase in a *different* template with its own synonyms ("two"
/ "a pair of", "on the left" / "at the left side", "circle" / "disc"...); the hard negative is
the anchor's template and synonyms with exactly one attribute changed (count, colour, shape or
position; colour, shape or direction; one word of the OCR phrase; the digit).
:func:`parse_description` maps any of these texts back to its attributes.

Splits
------
``"train"`` and ``"test"`` draw from different seed namespaces, so their samples differ. Speech
guarantees it structurally (train speeds are even, test speeds odd) and digits use disjoint
source images. Attribute combinations are *not* held out: both splits cover the same attribute
space, so captions (and OCR lines) of the test split also occur in train; the benchmark measures
cross-modal alignment, not compositional generalisation. For ``scene`` and ``clip``, attribute
combinations are balanced: indices ``[k*C, (k+1)*C)`` of a split (C = 600 or 160) hold every
combination exactly once, in a fixed shuffled order, so the first ``C`` test samples have
distinct captions; layouts are random. Digits cycle the same way through their source images.
"""

from __future__ import annotations

import functools
import math
import os
import re
import string
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

DATA_VERSION = "1"

#: Kinds of multimodal samples, each a generator ``(index, split) -> sample``.
KINDS = ("scene", "ocr", "digit", "speech", "clip")
SPLITS = ("train", "test")

IMAGE_SIZE = 224
CLIP_SIZE = 112
CLIP_FRAMES = 8
CLIP_FPS = 4.0
SAMPLING_RATE = 16_000

#: Palette colours, chosen far apart from each other and from the grey backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
COUNTS = (1, 2, 3)
POSITIONS = ("left", "right", "top", "bottom", "centre")
DIRECTIONS = ("left", "right", "up", "down")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Group anchor points, as fractions of (width, height); see :func:`position_of`.
POSITION_ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

#: espeak-ng voices (all built in, each checked to sound different).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en+f3", "en-us+f2", "en+m3")

#: DejaVu font files used for OCR (plus Pillow's default font, named ``"pillow-default"``).
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
DEFAULT_FONT = "pillow-default"
FONTS = (*FONT_FILES, DEFAULT_FONT)
#: Where DejaVu fonts are looked for; ``LCOEMB_FONT_DIR`` is searched first.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)

# Common English words for OCR lines: 3-8 letters, no digit names, no duplicates.
_WORD_TEXT = """
able about above across add after again agree air almost along always animal answer apple area
army arrive ask away baby back bag ball bank basket beach bear bed before begin behind bell
best better big bird blood board boat body bone book bottle box boy bread break bridge bright
bring brother build burn busy buy cake call calm camera camp candle car card care carry castle
cat catch chair chance change cheap cheese child city class clean clear climb clock close cloud
coast coat cold color come cook cool copy corn cost cotton count country cow crowd cup cut
dance dark day deal dear deep desert desk dinner dirty doctor dog door dream dress drink drive
drop dry duck dust eagle early earth east easy eat edge egg empty enjoy enough evening event
every face fact fair fall family far farm fast father feather field film find finger fire first
fish flag flat floor flower fly follow food foot forest forget free fresh friend front fruit
full funny game garden gate gift girl give glass glove gold good grass great ground group grow
guess guitar hair half hammer hand happy hard hat head hear heart heavy help hero high hill
hold hole home honey hope horse hot hour house huge ice idea inside island jacket join juice
jump jungle keep kettle key kind king kitchen kite knee knife know ladder lake lamp land large
late laugh leaf learn lemon letter light lion list little live long look loud love lucky
machine magic make many map market meet metal milk mind minute mirror money monkey moon morning
mother mountain mouse mouth move music name narrow near neck needle never new news next nice
night noise north nose note ocean offer often old open orbit other over owl page paint paper
park party pass path peace pencil people pepper piano picture piece pillow place plan plant
play pocket poem pond potato power pretty quick quiet rabbit rain read ready river road rock
roof room rope round run salt sand school sea season seed shadow sheep ship shoe shop short
silver sing sister sky sleep slow small smile snow soft song soup south space spoon spring
stone storm story street strong sugar summer sun sweet table tail talk tea teacher tiger today
tomato tooth tower town toy train tree truck under uncle valley village voice wait walk wall
warm watch water wave west wheel window winter wolf wood world write yard year yellow young
zebra
"""
#: The 413 words OCR lines are made of.
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())


# ---------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class Sample:
    """An image sample: ``image`` (RGB, 224x224) and the ``text`` that describes or reads it."""

    image: PIL.Image.Image
    text: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioSample:
    """A speech sample: ``wave`` (mono float32 at ``sampling_rate``) and its transcript."""

    wave: np.ndarray
    sampling_rate: int
    text: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.wave) / self.sampling_rate


@dataclass(frozen=True)
class ClipSample:
    """A video sample: ``frames`` (``HxWx3`` uint8 arrays) at ``fps``, and its description."""

    frames: list[np.ndarray]
    fps: float
    text: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


class Triplet(NamedTuple):
    """A text-only training triplet: a description, a paraphrase and a one-attribute change."""

    anchor: str
    positive: str
    negative: str


AnySample = Sample | AudioSample | ClipSample

# ---------------------------------------------------------------------------------------------
# Seeds

_SALT = 0x1C0E_0001  # fixed for DATA_VERSION "1"
_KIND_IDS = {"scene": 1, "ocr": 2, "digit": 3, "speech": 4, "clip": 5, "triplet": 6}
_SPLIT_IDS = {"train": 0, "test": 1}
_SAMPLE_STREAM, _ORDER_STREAM, _SOURCE_STREAM = 0, 1, 2


def _check(kind: str, split: str, index: int) -> None:
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    assert kind in _KIND_IDS


def _rng(kind: str, split: str, index: int, stream: int = _SAMPLE_STREAM) -> np.random.Generator:
    _check(kind, split, index)
    seed = np.random.SeedSequence([_SALT, _KIND_IDS[kind], _SPLIT_IDS[split], stream, int(index)])
    return np.random.default_rng(seed)


def _balanced(kind: str, split: str, index: int, total: int) -> int:
    """Entry ``index`` of ``range(total)`` listed again in a new shuffled order per pass."""
    epoch, position = divmod(int(index), total)
    order = _rng(kind, split, epoch, _ORDER_STREAM).permutation(total)
    return int(order[position])


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(rng.random())


def _choice(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


# ---------------------------------------------------------------------------------------------
# Descriptions: templates, synonyms and the parser

_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two", "a pair of"), 3: ("three", "a trio of")}
_SHAPE_WORDS = {  # (singular, plural) per synonym
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
}
_POSITION_WORDS = {
    "left": ("on the left", "at the left side", "on the left side", "in the left half"),
    "right": ("on the right", "at the right side", "on the right side", "in the right half"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "centre": ("in the centre", "in the middle", "at the center"),
}
_DIRECTION_WORDS = {
    "left": ("left", "to the left", "leftwards", "towards the left"),
    "right": ("right", "to the right", "rightwards", "towards the right"),
    "up": ("up", "upwards", "towards the top"),
    "down": ("down", "downwards", "towards the bottom"),
}

#: Templates per description kind; template 0 is the canonical form the generators use.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "scene": (
        "{count} {colour} {shape} {position}",
        "{position}, {count} {colour} {shape}",
        "there {be} {count} {colour} {shape} {position}",
        "{count} {shape} in {colour} {position}",
        "an image with {count} {colour} {shape} {position}",
        "a picture showing {count} {colour} {shape} {position}",
        "{count} {colour} {shape}, placed {position}",
    ),
    "clip": (
        "a {colour} {shape} moving {direction}",
        "a {colour} {shape} moves {direction}",
        "a {colour} {shape} travelling {direction}",
        "a video of a {colour} {shape} going {direction}",
        "a {colour} {shape} sliding {direction}",
        "a {shape} in {colour} heading {direction}",
    ),
    "digit": (
        "{digit_name}",
        "the digit {digit_name}",
        "the number {digit_name}",
        "a handwritten {digit_name}",
        "the handwritten digit {digit_numeral}",
        "a picture of the number {digit_numeral}",
    ),
    "ocr": (
        "{text}",
        'the text "{text}"',
        'the words "{text}"',
        'a sign that reads "{text}"',
        'text reading "{text}"',
        'an image with the text "{text}"',
        'the phrase "{text}" printed on a plain background',
    ),
}
#: How often each description kind starts a text triplet.
TRIPLET_MIX = {"scene": 0.40, "clip": 0.25, "ocr": 0.25, "digit": 0.10}
_ATTRIBUTES = {
    "scene": ("count", "colour", "shape", "position"),
    "clip": ("colour", "shape", "direction"),
    "digit": ("digit",),
}

_AN = re.compile(r"\ba (?=[aeiou])")


def describe(attrs: Mapping[str, Any], template: int = 0, choices: Sequence[int] = ()) -> str:
    """The text of ``attrs`` in ``TEMPLATES[attrs["kind"]][template]``.

    ``choices`` picks a synonym per slot (count, shape, position or direction, in that order),
    each taken modulo the number of synonyms; missing entries mean the first synonym. With the
    defaults this is the canonical text, e.g. ``"two red circles on the left"``.
    """
    kind = attrs["kind"]
    pattern = TEMPLATES[kind][template]
    pick = list(choices) + [0] * 4

    def syn(options: Sequence[Any], slot: int) -> Any:
        return options[pick[slot] % len(options)]

    if kind == "ocr":
        return pattern.format(text=" ".join(_ocr_words(attrs)))
    if kind == "digit":
        return pattern.format(
            digit_name=DIGIT_NAMES[attrs["digit"]], digit_numeral=str(attrs["digit"])
        )
    count = attrs.get("count", 1)
    singular, plural = syn(_SHAPE_WORDS[attrs["shape"]], 1)
    values = {
        "count": syn(_COUNT_WORDS[count], 0),
        "colour": attrs["colour"],
        "shape": singular if count == 1 else plural,
        "be": "is" if count == 1 else "are",
    }
    if kind == "scene":
        values["position"] = syn(_POSITION_WORDS[attrs["position"]], 2)
    else:
        values["direction"] = syn(_DIRECTION_WORDS[attrs["direction"]], 3)
    return _AN.sub("an ", pattern.format(**values))


def canonical(attrs: Mapping[str, Any]) -> str:
    """The canonical text of ``attrs`` (template 0, first synonyms)."""
    return describe(attrs)


def _alternation(words: Mapping[str, Sequence[str]]) -> tuple[str, dict[str, str]]:
    lookup = {w: value for value, options in words.items() for w in options}
    ordered = sorted(lookup, key=len, reverse=True)
    return "|".join(re.escape(w) for w in ordered), lookup


def _build_parsers() -> list[tuple[str, re.Pattern[str], dict[str, dict[str, Any]]]]:
    count_words = {str(n): (*w, "an") if n == 1 else w for n, w in _COUNT_WORDS.items()}
    shape_words = {s: [w for pair in syn for w in pair] for s, syn in _SHAPE_WORDS.items()}
    tables = {
        "count": _alternation(count_words),
        "colour": _alternation({c: (c,) for c in COLOURS}),
        "shape": _alternation(shape_words),
        "position": _alternation(_POSITION_WORDS),
        "direction": _alternation(_DIRECTION_WORDS),
        "digit_name": _alternation({str(d): (n,) for d, n in enumerate(DIGIT_NAMES)}),
        "digit_numeral": _alternation({str(d): (str(d),) for d in range(10)}),
        "be": ("is|are", {"is": "", "are": ""}),
        "text": (r"[a-z]+(?: [a-z]+){0,3}", {}),
    }
    parsers = []
    for kind, patterns in TEMPLATES.items():
        for pattern in patterns:
            regex = ""
            for literal, slot, _, _ in string.Formatter().parse(pattern):
                # The article "a" becomes "an" before a vowel (describe's _AN rule).
                regex += re.sub(r"\ba\b", "an?", re.escape(literal))
                if slot is not None:
                    regex += f"(?P<{slot}>{tables[slot][0]})"
            lookups = {slot: table[1] for slot, table in tables.items()}
            parsers.append((kind, re.compile(regex), lookups))
    # Raw OCR text ("{text}") is the loosest pattern: try it last.
    parsers.sort(key=lambda p: p[1].pattern == "(?P<text>" + tables["text"][0] + ")")
    return parsers


_PARSERS = _build_parsers()
_WORD_SET = frozenset(WORDS)


def parse_description(text: str) -> dict[str, Any]:
    """The attributes a generated text states, or ``{}`` if it fits no template.

    Scene: ``{"kind": "scene", "count", "colour", "shape", "position"}``; clip: ``{"kind":
    "clip", "colour", "shape", "direction"}``; digit: ``{"kind": "digit", "digit"}``; OCR:
    ``{"kind": "ocr", "word_0": ..., "word_1": ...}`` (lower case; raw OCR text must consist of
    :data:`WORDS`). Matching is case-insensitive and exact (the whole text must fit).
    """
    lowered = " ".join(text.lower().split())
    for kind, regex, lookups in _PARSERS:
        match = regex.fullmatch(lowered)
        if match is None:
            continue
        groups = match.groupdict()
        if kind == "ocr":
            words = groups["text"].split()
            if not all(w in _WORD_SET for w in words):
                continue
            return {"kind": "ocr", **{f"word_{i}": w for i, w in enumerate(words)}}
        attrs: dict[str, Any] = {"kind": kind}
        for slot, value in groups.items():
            if slot == "be":
                continue
            resolved = lookups[slot][value]
            if slot == "count":
                attrs["count"] = int(resolved)
            elif slot in ("digit_name", "digit_numeral"):
                attrs["digit"] = int(resolved)
            else:
                attrs[slot] = resolved
        if kind == "scene":
            be = groups.get("be")
            if be is not None and (be == "is") != (attrs["count"] == 1):
                continue
        return attrs
    return {}


def attribute_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The attribute names whose values differ between ``a`` and ``b`` (missing counts)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _ocr_words(attrs: Mapping[str, Any]) -> list[str]:
    return [attrs[f"word_{i}"] for i in range(len(attrs)) if f"word_{i}" in attrs]


def _ocr_attrs(words: Sequence[str]) -> dict[str, Any]:
    return {"kind": "ocr", **{f"word_{i}": w.lower() for i, w in enumerate(words)}}


# ---------------------------------------------------------------------------------------------
# Drawing helpers


def position_of(x: float, y: float, width: int = IMAGE_SIZE, height: int = IMAGE_SIZE) -> str:
    """The position word of a group whose centroid is at pixel ``(x, y)``: the nearest anchor."""
    fx, fy = x / width, y / height
    return min(POSITION_ANCHORS, key=lambda p: math.dist((fx, fy), POSITION_ANCHORS[p]))


def _gradient(rng: np.random.Generator, size: int, low: int = 70, high: int = 180) -> np.ndarray:
    """A low-saturation grey gradient background, ``size x size x 3`` uint8."""
    ends = []
    for _ in range(2):
        level = _uniform(rng, low, high)
        tint = rng.integers(-12, 13, size=3)
        ends.append(np.clip(level + tint, 0, 255).astype(np.float32))
    angle = _uniform(rng, 0.0, 2 * math.pi)
    axis = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = math.cos(angle) * axis[None, :] + math.sin(angle) * axis[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = ends[0] * (1 - t[..., None]) + ends[1] * t[..., None]
    return np.rint(image).astype(np.uint8)


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
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
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in local]


def _draw_shape(draw: PIL.ImageDraw.ImageDraw, shape, cx, cy, r, angle, colour) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r, angle), fill=colour)


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
    combo = _balanced("scene", split, index, len(COUNTS) * len(COLOURS) * len(SHAPES) * 5)
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
    base = _uniform(rng, 0.085, 0.11) * size
    radii = [base * _uniform(rng, 0.9, 1.1) for _ in range(count)]
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
    rng = _rng("scene", split, index)
    size = IMAGE_SIZE
    image = PIL.Image.fromarray(_gradient(rng, size))
    draw = PIL.ImageDraw.Draw(image)
    objects = _layout(rng, attrs["count"], attrs["position"], size)
    colour = COLOURS[attrs["colour"]]
    for cx, cy, r in objects:
        angle = math.radians(_uniform(rng, -15, 15))
        _draw_shape(draw, attrs["shape"], cx, cy, r, angle, colour)
    meta = {"kind": "scene", "split": split, "index": int(index), "objects": objects}
    return Sample(image, canonical(attrs), attrs, meta)


# ---------------------------------------------------------------------------------------------
# OCR


def _font_dirs() -> list[Path]:
    dirs = [os.environ["LCOEMB_FONT_DIR"]] if os.environ.get("LCOEMB_FONT_DIR") else []
    dirs += FONT_DIRS
    try:  # matplotlib ships the DejaVu family
        import matplotlib

        dirs.append(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"))
    except ImportError:
        pass
    return [Path(d) for d in dirs]


@functools.lru_cache(maxsize=16)
def _font_path(name: str) -> str:
    for folder in _font_dirs():
        if (folder / name).is_file():
            return str(folder / name)
    raise FileNotFoundError(
        f"font {name} not found in {[str(d) for d in _font_dirs()]}; install the DejaVu fonts "
        "(apt-get install fonts-dejavu-core) or set LCOEMB_FONT_DIR"
    )


@functools.lru_cache(maxsize=256)
def _font(name: str, size: int) -> PIL.ImageFont.FreeTypeFont:
    if name == DEFAULT_FONT:
        return PIL.ImageFont.load_default(size=size)
    return PIL.ImageFont.truetype(_font_path(name), size=size)


def _ocr_line(rng: np.random.Generator, low: int = 1, high: int = 4) -> list[str]:
    n = int(rng.integers(low, high + 1))
    return [WORDS[int(i)] for i in rng.integers(len(WORDS), size=n)]


_LIGHT_INKS = ((250, 250, 250), (245, 215, 40), (150, 230, 250), (250, 170, 60))
_DARK_INKS = ((15, 15, 15), (30, 40, 140), (150, 20, 20), (20, 100, 40), (90, 30, 120))
_OCR_WIDTH = 200


def ocr(index: int, split: str = "train") -> Sample:
    """OCR sample ``index`` of ``split``: a line of 1-4 words; ``text`` is what is written."""
    rng = _rng("ocr", split, index)
    words = _ocr_line(rng)
    case = _choice(rng, ("lower",) * 12 + ("capital",) * 5 + ("upper",) * 3)
    if case == "upper":
        shown = [w.upper() for w in words]
    elif case == "capital":
        shown = [words[0].capitalize(), *words[1:]]
    else:
        shown = list(words)
    text = " ".join(shown)
    font_name = _choice(rng, FONTS)
    size = int(rng.integers(28, 57)) if len(words) == 1 else int(rng.integers(18, 41))
    lines = [text]
    while size > 16 and _font(font_name, size).getlength(text) > _OCR_WIDTH:
        size -= 2
    if _font(font_name, size).getlength(text) > _OCR_WIDTH:
        # Wrap onto two lines, balanced by characters; shrink more if still too wide.
        split_at = min(
            range(1, len(shown)),
            key=lambda k: abs(len(" ".join(shown[:k])) - len(" ".join(shown[k:]))),
        )
        lines = [" ".join(shown[:split_at]), " ".join(shown[split_at:])]
        while size > 10 and max(_font(font_name, size).getlength(x) for x in lines) > _OCR_WIDTH:
            size -= 1
    font = _font(font_name, size)
    if rng.random() < 0.7:
        level = _uniform(rng, 200, 250)
        ink = _choice(rng, _DARK_INKS)
    else:
        level = _uniform(rng, 10, 60)
        ink = _choice(rng, _LIGHT_INKS)
    tint = rng.integers(-8, 9, size=3)
    background = tuple(int(np.clip(level + t, 0, 255)) for t in tint)
    image = PIL.Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = PIL.ImageDraw.Draw(image)
    block = "\n".join(lines)
    spacing = max(2, size // 4)
    left, top, right, bottom = draw.multiline_textbbox(
        (0, 0), block, font=font, spacing=spacing, align="center"
    )
    free_x = max(0, IMAGE_SIZE - (right - left) - 16)
    free_y = max(0, IMAGE_SIZE - (bottom - top) - 16)
    x = 8 + int(rng.integers(free_x + 1)) - left
    y = 8 + int(rng.integers(free_y + 1)) - top
    draw.multiline_text((x, y), block, font=font, fill=ink, spacing=spacing, align="center")
    meta = {
        "kind": "ocr",
        "split": split,
        "index": int(index),
        "font": font_name,
        "size": size,
        "case": case,
        "lines": len(lines),
        "ink": ink,
        "background": background,
    }
    return Sample(image, text, _ocr_attrs(words), meta)


# ---------------------------------------------------------------------------------------------
# Digits

DIGIT_TEST_SOURCES = 360


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.asarray(data.images, dtype=np.float32) / 16.0
    targets = np.asarray(data.target, dtype=np.int64)
    order = _rng("digit", "train", 0, _SOURCE_STREAM).permutation(len(images))
    sources = {"test": order[:DIGIT_TEST_SOURCES], "train": order[DIGIT_TEST_SOURCES:]}
    return images, targets, sources


def digit(index: int, split: str = "train") -> Sample:
    """Digit ``index`` of ``split``: an upscaled ``load_digits`` image; ``text`` its name."""
    _check("digit", split, index)
    images, targets, sources = _digits()
    pool = sources[split]
    source = int(pool[_balanced("digit", split, index, len(pool))])
    rng = _rng("digit", split, index)
    size = int(rng.integers(150, IMAGE_SIZE + 1))
    resample = _choice(rng, (PIL.Image.Resampling.BILINEAR, PIL.Image.Resampling.NEAREST))
    glyph = PIL.Image.fromarray(np.rint(images[source] * 255).astype(np.uint8), mode="L")
    alpha = np.asarray(glyph.resize((size, size), resample), dtype=np.float32)[..., None] / 255
    if rng.random() < 0.5:
        ink, background = np.array([255.0, 255, 255]), np.array([0.0, 0, 0])
        colour = "white"
    else:
        colour = _choice(rng, [c for c in COLOURS if c not in ("white", "black")])
        ink = np.array(COLOURS[colour], dtype=np.float32)
        dark = 0.299 * ink[0] + 0.587 * ink[1] + 0.114 * ink[2] > 128
        background = np.full(3, _uniform(rng, 20, 60) if dark else _uniform(rng, 200, 240))
    canvas = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    canvas[:] = background
    x, y = (int(v) for v in rng.integers(IMAGE_SIZE - size + 1, size=2))
    canvas[y : y + size, x : x + size] = background * (1 - alpha) + ink * alpha
    image = PIL.Image.fromarray(np.rint(canvas).astype(np.uint8))
    value = int(targets[source])
    meta = {"kind": "digit", "split": split, "index": int(index), "source": source}
    meta |= {"size": size, "offset": (x, y), "ink": colour}
    return Sample(image, DIGIT_NAMES[value], {"kind": "digit", "digit": value}, meta)


# ---------------------------------------------------------------------------------------------
# Speech


def espeak_version() -> str:
    """The ``espeak-ng --version`` line (speech bytes are reproducible for the same one)."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def synthesize(
    text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50, amplitude: int = 75
) -> np.ndarray:
    """``text`` spoken by espeak-ng, as 16 kHz mono float32 in [-1, 1].

    ``amplitude`` is espeak-ng's ``-a`` (its default, 100, peaks at full scale, and resampling
    then overshoots 1.0); 75 keeps peaks near 0.85.
    """
    import soundfile as sf
    import torch
    import torchaudio.functional

    with tempfile.TemporaryDirectory(prefix="lcoemb-espeak-") as folder:
        path = os.path.join(folder, "speech.wav")
        command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch)]
        command += ["-a", str(amplitude), "-w", path]
        try:
            subprocess.run([*command, text], capture_output=True, check=True, timeout=60)
        except FileNotFoundError as e:
            raise RuntimeError("espeak-ng not found; install it (apt-get install espeak-ng)") from e
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"espeak-ng failed: {e.stderr.decode(errors='replace')}") from e
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    wave = torch.from_numpy(wave.mean(axis=1))
    if rate != SAMPLING_RATE:
        wave = torchaudio.functional.resample(wave, rate, SAMPLING_RATE)
    return np.clip(wave.numpy(), -1.0, 1.0).astype(np.float32, copy=False)


def _speech_text(rng: np.random.Generator) -> str:
    source = float(rng.random())
    if source < 0.5:
        attrs: dict[str, Any] = {
            "kind": "scene",
            "count": _choice(rng, COUNTS),
            "colour": _choice(rng, list(COLOURS)),
            "shape": _choice(rng, SHAPES),
            "position": _choice(rng, POSITIONS),
        }
        return canonical(attrs)
    if source < 0.75:
        attrs = {
            "kind": "clip",
            "colour": _choice(rng, list(COLOURS)),
            "shape": _choice(rng, SHAPES),
            "direction": _choice(rng, DIRECTIONS),
        }
        return canonical(attrs)
    return " ".join(_ocr_line(rng, 2, 4))


def speech(index: int, split: str = "train") -> AudioSample:
    """Speech ``index`` of ``split``: espeak-ng reading a caption or a line of words."""
    rng = _rng("speech", split, index)
    text = _speech_text(rng)
    voice = _choice(rng, VOICES)
    # Even speeds for train, odd for test: the two splits never share a waveform.
    speed = 130 + 2 * int(rng.integers(30)) + _SPLIT_IDS[split]
    pitch = int(rng.integers(35, 66))
    wave = synthesize(text, voice, speed, pitch)
    meta = {"kind": "speech", "split": split, "index": int(index)}
    meta |= {"voice": voice, "speed": speed, "pitch": pitch}
    return AudioSample(wave, SAMPLING_RATE, text, parse_description(text), meta)


# ---------------------------------------------------------------------------------------------
# Clips


def clip(
    index: int,
    split: str = "train",
    *,
    size: int = CLIP_SIZE,
    frames: int = CLIP_FRAMES,
    fps: float = CLIP_FPS,
) -> ClipSample:
    """Clip ``index`` of ``split``: one shape moving in a straight line, described canonically."""
    combo = _balanced("clip", split, index, len(COLOURS) * len(SHAPES) * len(DIRECTIONS))
    rest, direction = divmod(combo, len(DIRECTIONS))
    colour, shape = divmod(rest, len(SHAPES))
    attrs = {
        "kind": "clip",
        "colour": list(COLOURS)[colour],
        "shape": SHAPES[shape],
        "direction": DIRECTIONS[direction],
    }
    rng = _rng("clip", split, index)
    background = _gradient(rng, size)
    r = _uniform(rng, 0.09, 0.13) * size
    distance = _uniform(rng, 0.40, 0.55) * size
    start = _uniform(rng, 0.2, 0.3) * size
    across = _uniform(rng, 0.3, 0.7) * size
    angle = math.radians(_uniform(rng, -15, 15))
    dx, dy = DIRECTION_VECTORS[attrs["direction"]]
    along_start = start if dx + dy > 0 else size - start  # moving left/up starts at the far side
    out = []
    path = []
    for k in range(frames):
        along = along_start + (dx + dy) * distance * k / max(frames - 1, 1)
        cx, cy = (along, across) if dx else (across, along)
        image = PIL.Image.fromarray(background)
        _draw_shape(
            PIL.ImageDraw.Draw(image), attrs["shape"], cx, cy, r, angle, COLOURS[attrs["colour"]]
        )
        out.append(np.asarray(image))
        path.append((cx, cy))
    meta = {"kind": "clip", "split": split, "index": int(index), "path": path, "radius": r}
    return ClipSample(out, float(fps), canonical(attrs), attrs, meta)


# ---------------------------------------------------------------------------------------------
# Text triplets


def _random_attrs(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    if kind == "scene":
        return {
            "kind": "scene",
            "count": _choice(rng, COUNTS),
            "colour": _choice(rng, list(COLOURS)),
            "shape": _choice(rng, SHAPES),
            "position": _choice(rng, POSITIONS),
        }
    if kind == "clip":
        return {
            "kind": "clip",
            "colour": _choice(rng, list(COLOURS)),
            "shape": _choice(rng, SHAPES),
            "direction": _choice(rng, DIRECTIONS),
        }
    if kind == "digit":
        return {"kind": "digit", "digit": int(rng.integers(10))}
    return _ocr_attrs(_ocr_line(rng))


_VALUES: dict[str, Sequence[Any]] = {
    "count": COUNTS,
    "colour": list(COLOURS),
    "shape": SHAPES,
    "position": POSITIONS,
    "direction": DIRECTIONS,
    "digit": range(10),
}


def _mutate(rng: np.random.Generator, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with exactly one attribute changed."""
    changed = dict(attrs)
    if attrs["kind"] == "ocr":
        words = _ocr_words(attrs)
        slot = int(rng.integers(len(words)))
        old = words[slot]
        # A hard negative: prefer a word with the same first letter, else the same length.
        similar = [w for w in WORDS if w != old and w[0] == old[0]]
        similar = similar or [w for w in WORDS if w != old and len(w) == len(old)]
        similar = similar or [w for w in WORDS if w != old]
        changed[f"word_{slot}"] = _choice(rng, similar)
        return changed
    name = _choice(rng, _ATTRIBUTES[attrs["kind"]])
    changed[name] = _choice(rng, [v for v in _VALUES[name] if v != attrs[name]])
    return changed


def text_triplet(index: int, split: str = "train") -> Triplet:
    """Triplet ``index`` of ``split``: a description, a paraphrase and a one-attribute change."""
    rng = _rng("triplet", split, index)
    kinds = list(TRIPLET_MIX)
    kind = kinds[int(rng.choice(len(kinds), p=list(TRIPLET_MIX.values())))]
    attrs = _random_attrs(rng, kind)
    templates = TEMPLATES[kind]
    anchor_template = int(rng.integers(len(templates)))
    positive_template = int(rng.integers(len(templates) - 1))
    positive_template += positive_template >= anchor_template
    anchor_choices = [int(c) for c in rng.integers(12, size=4)]
    positive_choices = [int(c) for c in rng.integers(12, size=4)]
    negative = _mutate(rng, attrs)
    return Triplet(
        describe(attrs, anchor_template, anchor_choices),
        describe(attrs, positive_template, positive_choices),
        describe(negative, anchor_template, anchor_choices),
    )


def triplets(split: str, n: int, start: int = 0) -> list[Triplet]:
    """Text triplets ``start .. start + n - 1`` of ``split``."""
    return [text_triplet(i, split) for i in range(start, start + n)]


# ---------------------------------------------------------------------------------------------
# Registry


GENERATORS: dict[str, Callable[[int, str], AnySample]] = {
    "scene": scene,
    "ocr": ocr,
    "digit": digit,
    "speech": speech,
    "clip": clip,
}


def dataset(kind: str, split: str, n: int, start: int = 0) -> list[AnySample]:
    """Samples ``start .. start + n - 1`` of ``kind`` (one of :data:`KINDS`) in ``split``."""
    if kind not in GENERATORS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, got n={n}, start={start}")
    generate = GENERATORS[kind]
    return [generate(i, split) for i in range(start, start + n)]


def write_demo_folder(
    folder: str | os.PathLike[str], n: int = 4, split: str = "test"
) -> dict[str, list[tuple[Path, str]]]:
    """A small mixed collection to index and search: ``n`` scene images (PNG), speech clips
    (WAV), moving-shape clips (MP4) and text notes (TXT) of ``split``, in one folder per kind.

    Returns, per modality, each file with a text query that should find it: the image's caption,
    the speech's transcript, the clip's description, and a paraphrase of the note.
    """
    import av
    import soundfile as sf

    root = Path(folder)
    out: dict[str, list[tuple[Path, str]]] = {m: [] for m in ("image", "audio", "video", "text")}
    for sub in ("images", "speech", "clips", "notes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sample = scene(i, split)
        sample.image.save(root / "images" / f"scene-{i}.png")
        out["image"].append((root / "images" / f"scene-{i}.png", sample.text))
        said = speech(i, split)
        sf.write(root / "speech" / f"speech-{i}.wav", said.wave, said.sampling_rate)
        out["audio"].append((root / "speech" / f"speech-{i}.wav", said.text))
        moving = clip(i, split)
        path = root / "clips" / f"clip-{i}.mp4"
        with av.open(os.fspath(path), "w") as container:
            stream = container.add_stream("libx264", rate=int(moving.fps))
            stream.height, stream.width = moving.frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for frame in moving.frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        out["video"].append((path, moving.text))
        note = text_triplet(i, split)
        (root / "notes" / f"note-{i}.txt").write_text(note.anchor + "\n")
        out["text"].append((root / "notes" / f"note-{i}.txt", note.positive))
    return out


def as_input(sample: AnySample) -> Any:
    """The media of ``sample`` as :meth:`lcoemb.OmniEncoder.encode` takes it."""
    if isinstance(sample, Sample):
        return sample.image
    from lcoemb.inputs import Audio, Video

    if isinstance(sample, AudioSample):
        return Audio(sample.wave, sampling_rate=sample.sampling_rate)
    return Video(sample.frames, fps=sample.fps)
