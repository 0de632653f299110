"""General-text triplets (lcoemb.synthetic.general): anchors from the ``text`` partition only,
positives that keep every content word, hard negatives of both kinds, nothing of the closed
grammar, and the time 4,000 triplets take (printed, not asserted)."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from lcoemb.synthetic import corpus, general
from lcoemb.synthetic.descriptions import parse_description

N = 4000
_NEGATION_WORDS = {"not", "cannot", "never", "always"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:'[a-z]+)*", text.lower())


def _content(text: str) -> set[str]:
    """Alphabetic words outside the stop-word list ("don't" and "mother's" are not alphabetic)."""
    return {w for w in _words(text) if w.isalpha() and w not in general.STOP_WORDS}


@pytest.fixture(scope="module")
def train() -> list[general.Triplet]:
    general.general_triplet(0)  # loads the corpus and the neighbour table: not what is timed
    start = time.perf_counter()
    triplets = general.general_triplets("train", N)
    print(f"\n{N} general triplets in {time.perf_counter() - start:.2f} s")
    return triplets


def _negative_kind(anchor: str, negative: str, pool: frozenset[str]) -> str:
    """Which kind of hard negative ``negative`` is, or "other" if it is none of them."""
    if negative in pool:
        return "neighbour"
    a, n = anchor.split(" "), negative.split(" ")
    if len(a) == len(n):
        changed = [(x, y) for x, y in zip(a, n) if x != y]
        if len(changed) != 1:
            return "other"
        old, new = (set(_words(t)) for t in changed[0])
        if (old | new) & _NEGATION_WORDS or any("n't" in w for w in old):
            return "negation"
        return "swap"
    longer, shorter = (_words(t) for t in sorted((anchor, negative), key=lambda t: -len(t.split())))
    removals = (longer[:i] + longer[i + 1 :] for i, w in enumerate(longer) if w == "not")
    return "negation" if shorter in removals else "other"


def test_the_same_index_gives_the_same_triplet_and_splits_differ():
    assert general.general_triplets("train", 5, start=3) == [
        general.general_triplet(i, "train") for i in range(3, 8)
    ]
    assert general.general_triplet(11, "test") == general.general_triplet(11, "test")
    assert general.general_triplets("train", 20) != general.general_triplets("test", 20)
    with pytest.raises(ValueError, match="split"):
        general.general_triplet(0, "dev")
    with pytest.raises(ValueError, match="index"):
        general.general_triplet(-1)


def test_anchors_come_from_the_text_partition_only_and_one_pass_covers_it(train):
    text = set(corpus.sentences("text"))
    elsewhere = set(corpus.sentences("stage1")) | set(corpus.sentences("eval"))
    anchors = [t.anchor for t in train + general.general_triplets("test", 200)]
    assert all(a in text for a in anchors)
    assert not elsewhere & set(anchors)
    assert {t.anchor for t in train[: len(text)]} == text  # a pass visits every sentence once
    negatives = {t.negative for t in train}
    assert not elsewhere & negatives


def test_positives_differ_but_keep_exactly_the_anchors_content_words(train):
    for anchor, positive, _ in train:
        assert positive != anchor
        assert _content(positive) == _content(anchor), (anchor, positive)
        assert "  " not in positive and positive == positive.strip()


def test_negatives_differ_from_anchor_and_positive_and_both_kinds_occur(train):
    pool = frozenset(corpus.sentences("text"))
    kinds = Counter()
    for anchor, positive, negative in train:
        assert _words(negative) != _words(anchor), (anchor, negative)
        assert _words(negative) != _words(positive), (positive, negative)
        kind = _negative_kind(anchor, negative, pool)
        assert kind != "other", (anchor, negative)
        kinds[kind] += 1
        if kind == "neighbour":
            assert _content(negative) != _content(anchor)
    assert min(kinds.values()) > 0.05 * N and set(kinds) == {"neighbour", "swap", "negation"}


def test_neighbour_negatives_share_words_with_their_anchor(train):
    pool = frozenset(corpus.sentences("text"))
    pairs = [(a, n) for a, _, n in train if n in pool]
    sharing = sum(bool(set(_words(a)) & set(_words(n))) for a, n in pairs)
    assert sharing > 0.95 * len(pairs)


def test_no_text_comes_from_the_closed_grammar(train):
    for triplet in train:
        for text in triplet:
            assert parse_description(text) == {}, text
