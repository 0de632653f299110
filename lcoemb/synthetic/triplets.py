"""Text triplets: the quickstart's text-only training data and the offline benchmark's STS pairs.

``text_triplet``: an anchor description (scene 40 %, motion 25 %, OCR phrase 25 %, digit 10 %;
:data:`TRIPLET_MIX`) in a random template with random synonyms; the positive is a paraphrase in
a *different* template with its own synonyms ("two" / "a pair of", "on the left" / "at the left
side", "circle" / "disc"...); the hard negative is the anchor's template and synonyms with
exactly one attribute changed (count, colour, shape or position; colour, shape or direction; one
word of the OCR phrase; the digit). :func:`~lcoemb.synthetic.descriptions.parse_description`
maps any of these texts back to its attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from lcoemb.synthetic.descriptions import (
    ATTRIBUTES,
    TEMPLATES,
    VALUES,
    WORDS,
    describe,
    ocr_words,
    random_attrs,
)
from lcoemb.synthetic.seeds import choice, sample_rng

#: How often each description kind starts a text triplet.
TRIPLET_MIX = {"scene": 0.40, "clip": 0.25, "ocr": 0.25, "digit": 0.10}


class Triplet(NamedTuple):
    """A text-only training triplet: a description, a paraphrase and a one-attribute change."""

    anchor: str
    positive: str
    negative: str


def mutate(rng: np.random.Generator, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with exactly one attribute changed."""
    changed = dict(attrs)
    if attrs["kind"] == "ocr":
        words = ocr_words(attrs)
        slot = int(rng.integers(len(words)))
        old = words[slot]
        # A hard negative: prefer a word with the same first letter, else the same length.
        similar = [w for w in WORDS if w != old and w[0] == old[0]]
        similar = similar or [w for w in WORDS if w != old and len(w) == len(old)]
        similar = similar or [w for w in WORDS if w != old]
        changed[f"word_{slot}"] = choice(rng, similar)
        return changed
    name = choice(rng, ATTRIBUTES[attrs["kind"]])
    changed[name] = choice(rng, [v for v in VALUES[name] if v != attrs[name]])
    return changed


def text_triplet(index: int, split: str = "train") -> Triplet:
    """Triplet ``index`` of ``split``: a description, a paraphrase and a one-attribute change."""
    rng = sample_rng("triplet", split, index)
    kinds = list(TRIPLET_MIX)
    kind = kinds[int(rng.choice(len(kinds), p=list(TRIPLET_MIX.values())))]
    attrs = random_attrs(rng, kind)
    templates = TEMPLATES[kind]
    anchor_template = int(rng.integers(len(templates)))
    positive_template = int(rng.integers(len(templates) - 1))
    positive_template += positive_template >= anchor_template
    anchor_choices = [int(c) for c in rng.integers(12, size=4)]
    positive_choices = [int(c) for c in rng.integers(12, size=4)]
    negative = mutate(rng, attrs)
    return Triplet(
        describe(attrs, anchor_template, anchor_choices),
        describe(attrs, positive_template, positive_choices),
        describe(negative, anchor_template, anchor_choices),
    )


def triplets(split: str, n: int, start: int = 0) -> list[Triplet]:
    """Text triplets ``start .. start + n - 1`` of ``split``."""
    return [text_triplet(i, split) for i in range(start, start + n)]
