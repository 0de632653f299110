"""General-text triplets (lcoemb.synthetic.general): anchors from the ``text`` partition only,
positives that keep every content word, hard negatives of every kind, nothing of the closed
grammar, and the time 4,000 triplets take (printed, not asserted); and the ``wordnet`` corpus:
synonym positives, sibling negatives and dictionary entries at their share."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from lcoemb.synthetic import corpus, general, thesaurus
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


def _replaced(anchor: str, other: str, words) -> bool:
    """Whether ``other`` is ``anchor`` with one word replaced by one of ``words(word)``."""
    a, o = _words(anchor), _words(other)
    return any(
        a[:i] + _words(new) + a[i + 1 :] == o for i, word in enumerate(a) for new in words(word)
    )


def _negative_kind(anchor: str, negative: str, pool: frozenset[str], wordnet=False) -> str:
    """Which kind of hard negative ``negative`` is, or "other" if it is none of them."""
    if wordnet and _replaced(anchor, negative, thesaurus.sibling_words):
        return "sibling"
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


# --- the wordnet corpus -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordnet_all() -> list[general.Triplet]:
    return general.wordnet_triplets("train", N)


@pytest.fixture(scope="module")
def wordnet_sentences(wordnet_all) -> list[general.Triplet]:
    """The sentence triplets (a sentence anchor is never a dictionary entry's part)."""
    pool = frozenset(corpus.sentences("text"))
    return [t for t in wordnet_all if t.anchor in pool]


def test_wordnet_keeps_general_sentences_numbered_apart_from_the_entries(wordnet_sentences):
    text = set(corpus.sentences("text"))
    assert len(wordnet_sentences) == N * (1 - general.DEFINITION_SHARE)
    test = general.wordnet_triplets("test", 200)
    assert sum(t.anchor in text for t in test) == 140
    # sentences are 7 of every 10 triplets, numbered apart: one pass visits each once
    passed = general.wordnet_triplets("train", len(text) * 10 // 7 + 10)
    sentences = [t.anchor for t in passed if t.anchor in text]
    assert set(sentences[: len(text)]) == text
    assert general.wordnet_triplets("train", 3, start=5) == [
        general.general_triplet(i, "train", wordnet=True) for i in range(5, 8)
    ]


def test_wordnet_positives_keep_content_words_or_swap_one_for_a_synonym(wordnet_sentences):
    swapped = 0
    for anchor, positive, _ in wordnet_sentences:
        assert positive != anchor
        assert "  " not in positive and positive == positive.strip()
        before, after = _content(anchor), _content(positive)
        if after == before:
            continue
        # the synonym edit: one content word for a synonym (the light edits keep content words)
        assert any(
            after in (before - {word} | _content(new), before | _content(new))  # word twice
            for word in before
            for new in thesaurus.synonyms(word)
        ), (anchor, positive)
        swapped += 1
    assert 0.2 * len(wordnet_sentences) < swapped < 0.8 * len(wordnet_sentences)


def test_wordnet_negatives_include_sibling_concepts(wordnet_sentences):
    pool = frozenset(corpus.sentences("text"))
    kinds = Counter(_negative_kind(a, n, pool, wordnet=True) for a, _, n in wordnet_sentences)
    assert "other" not in kinds, kinds
    assert min(kinds.values()) > 0.03 * len(wordnet_sentences)
    assert set(kinds) == {"neighbour", "sibling", "swap", "negation"}


@pytest.fixture(scope="module")
def entries() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """WordNet's entries: the definitions of each first lemma, and the first lemmas of each
    definition."""
    definitions, words = {}, {}
    for synset in thesaurus.load_wordnet().synsets.values():
        definitions.setdefault(synset.lemmas[0], set()).add(synset.definition)
        words.setdefault(synset.definition, set()).add(synset.lemmas[0])
    return definitions, words


def test_dictionary_entries_pair_a_word_with_its_definition(wordnet_all, entries):
    definitions, words = entries
    pool = frozenset(corpus.sentences("text"))
    found = [t for t in wordnet_all if t.anchor not in pool]
    assert len(found) == N * general.DEFINITION_SHARE
    ways = Counter()
    for anchor, positive, negative in found:
        # word → definition, the negative a sibling's definition; or definition → word, the
        # negative a sibling's word (a one-word definition, "fundamental", is also a word)
        forward = positive in definitions.get(anchor, ()) and negative in words
        forward = forward and anchor not in words[negative]
        backward = positive in words.get(anchor, ()) and negative in definitions
        backward = backward and anchor not in definitions[negative]
        assert forward or backward, (anchor, positive, negative)
        ways[forward] += 1
    assert min(ways.values()) > 0.4 * len(found)


def test_wordnet_text_does_not_come_from_the_closed_grammar(wordnet_all):
    wn = thesaurus.load_wordnet()
    entries = set(wn.senses) | {synset.definition for synset in wn.synsets.values()}
    for triplet in wordnet_all:
        for text in triplet:
            parsed = parse_description(text)
            # a dictionary word or a short definition may read like the grammar ("six", a
            # digit; "picture book" or "cut open", OCR lines): WordNet's text, not the grammar's
            assert parsed == {} or text in entries, text
