"""The words of the generated data: the attribute space, description templates and synonyms, the
OCR vocabulary, and the parser that maps any generated text back to its attributes.

Attributes are plain dicts with a ``kind`` (``scene``, ``clip``, ``digit`` or ``ocr``):
scene ``{count, colour, shape, position}``, clip ``{colour, shape, direction}``, digit
``{digit}``, OCR ``{word_0, word_1, ...}`` (lower case). :func:`describe` writes them in any of
:data:`TEMPLATES` with any synonyms; template 0 with the first synonyms is the canonical text the
generators use (:func:`canonical`); :func:`parse_description` inverts every one of them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lcoemb.synthetic.seeds import choice

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

#: The values each attribute takes.
VALUES: dict[str, Sequence[Any]] = {
    "count": COUNTS,
    "colour": list(COLOURS),
    "shape": SHAPES,
    "position": POSITIONS,
    "direction": DIRECTIONS,
    "digit": range(10),
}

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
#: The attributes of each description kind (OCR's are its words, ``word_0``, ``word_1``...).
ATTRIBUTES = {
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
        return pattern.format(text=" ".join(ocr_words(attrs)))
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


def ocr_words(attrs: Mapping[str, Any]) -> list[str]:
    """The words of OCR attributes, in order."""
    return [attrs[f"word_{i}"] for i in range(len(attrs)) if f"word_{i}" in attrs]


def ocr_attrs(words: Sequence[str]) -> dict[str, Any]:
    """The OCR attributes of a line of words (lower-cased)."""
    return {"kind": "ocr", **{f"word_{i}": w.lower() for i, w in enumerate(words)}}


def ocr_line(rng: np.random.Generator, low: int = 1, high: int = 4) -> list[str]:
    """``low`` to ``high`` words drawn from :data:`WORDS`."""
    n = int(rng.integers(low, high + 1))
    return [WORDS[int(i)] for i in rng.integers(len(WORDS), size=n)]


def random_attrs(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    """Attributes of ``kind`` drawn uniformly (for ``ocr``: a line of 1-4 words)."""
    if kind == "scene":
        return {
            "kind": "scene",
            "count": choice(rng, COUNTS),
            "colour": choice(rng, list(COLOURS)),
            "shape": choice(rng, SHAPES),
            "position": choice(rng, POSITIONS),
        }
    if kind == "clip":
        return {
            "kind": "clip",
            "colour": choice(rng, list(COLOURS)),
            "shape": choice(rng, SHAPES),
            "direction": choice(rng, DIRECTIONS),
        }
    if kind == "digit":
        return {"kind": "digit", "digit": int(rng.integers(10))}
    return ocr_attrs(ocr_line(rng))
