"""General-text triplets: the paper's text-only training setting on open-vocabulary English.

The paper trains its LoRA adapter on all-NLI triplets: a premise, a hypothesis it entails and
one it contradicts. Nothing in them describes the evaluation's images, audio or video; the claim
is that contrastive training on *general* text alone aligns the other modalities with it.
:mod:`~lcoemb.synthetic.triplets` describes the benchmark's own closed world, so it measures
in-domain supervision instead. This module builds NLI-shaped triplets from real sentences that
install offline (:mod:`~lcoemb.synthetic.corpus`, partition ``text`` only: never the
sentences of stage-1 speech or of the out-of-distribution evaluation), and dictionary entries
from WordNet (:mod:`~lcoemb.synthetic.thesaurus`, the Debian package ``wordnet-base``).

Of every ten consecutive triplets, the first :data:`DEFINITIONS_PER_TEN` are **dictionary
entries**: a word and its definition, either way round ("erupt" → "become active and spew forth
lava and rocks", or "a three-sided polygon" → "triangle"), and as the hard negative the same part
of a sibling concept's entry (another polygon's definition, or "hexagon"). They teach what NLI's
entailments teach and light edits cannot: that different words say the same thing. The entries
are WordNet's tagged senses (about 19,000), drawn in a balanced order like the sentences.

The others are sentence triplets:

**Anchor**: a sentence of the partition. Sentences and entries are numbered apart, so that
each ``N`` consecutive sentence triplets of a split (N = the partition's size) visit every
sentence once, in a fresh shuffled order per pass, and a few thousand triplets cover the
partition instead of repeating a random subset. ``"test"`` draws
from the same partition in another order and with other edits: it serves a validation loss, not
a held-out evaluation.

**Positive**: the anchor rewritten so that it says the same thing. One content word may change,
for a WordNet synonym; every other content word of the anchor (:func:`content_words`) survives.
One or two edit kinds (:data:`POSITIVE_EDITS`) apply, in this order:

* ``synonym``: one content word replaced by a synonym of its main sense ("quickly" →
  "rapidly"; :func:`~lcoemb.synthetic.thesaurus.synonyms`: only words one sense of which is most
  of their uses in WordNet's tagged corpus, and no inflected verbs, so "telling" is not
  "telltale"). Word-sense choice stays a guess, as in EDA's synonym replacement.
* ``reorder``: a fronted subordinate clause moves behind its main clause ("If you can't be
  good, be careful." → "Be careful if you can't be good."). Only this one order change is made,
  because swapping two arbitrary comma-separated clauses often changes their meaning.
* ``filler``: one word that carries no content goes ("just", "really", a "the" that does not
  open the sentence, a leading "But" or "Now,").
* ``contraction``: one contraction expanded or formed ("don't" ↔ "do not", "it's" ↔ "it is");
  "'s" before "been" or "got" means "has" and is left alone, and a subject is only contracted
  with a verb that does not end the sentence ("what it is." stays).
* ``punctuation``: the end mark ("." → "!" or none, "!!!" → "!"), one comma dropped, or a
  dash turned into a comma. A question stays a question.
* ``case``: the sentence lower-cased (or, if it already is, capitalised).

Edits that drop a trailing clause are left out: they lose content words (NLI would call the
result entailed, not equivalent; the positive here is a paraphrase, as in SimCSE's pairs).

**Hard negative**: lexically close to the anchor but a different statement
(:data:`NEGATIVE_MIX`):

* ``neighbour``: one of the anchor's three nearest sentences in the partition by TF-IDF cosine
  that does not have the same content words (those would be paraphrases), like NLI's
  contradictions that reuse the premise's words.
* ``sibling``: one content word replaced by a sibling concept of its main sense, one of the
  five most used ("smoked my first cigarette" → "smoked my first cigar"): the same kind of thing,
  not the same thing, as in NLI's contradictions that swap one entity.
* ``swap``: one content word replaced by a word of the large word list (``corpus.words("train")``)
  of about the same length and the same last two letters, a crude but offline part-of-speech
  match ("Live a balanced life." → "Live a balanced knife."): the sentence reads alike and
  states something else.
* ``negation``: a negation inserted or removed ("is" → "is not", "don't" → "do", "never" ↔
  "always"), the most common contradiction in NLI.

When the drawn kind does not apply to the anchor, ``negation`` and ``sibling`` fall back to
``swap`` and
``swap`` to ``neighbour``, which always applies.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from lcoemb.synthetic import corpus, thesaurus
from lcoemb.synthetic.seeds import balanced_index, choice, sample_rng
from lcoemb.synthetic.triplets import Triplet

#: the sentence partition anchors and neighbour negatives come from
PARTITION = "text"

#: How often each kind of hard negative is drawn (before falling back when it does not apply).
NEGATIVE_MIX = {"neighbour": 0.5, "swap": 0.3, "negation": 0.2}
#: the same for the ``wordnet`` corpus, which adds sibling concepts
WORDNET_NEGATIVE_MIX = {"neighbour": 0.35, "sibling": 0.3, "swap": 0.15, "negation": 0.2}
#: in the ``wordnet`` corpus, of every ten consecutive triplets, how many (the first ones) are
#: dictionary entries
DEFINITIONS_PER_TEN = 3
#: the share of triplets that are dictionary entries rather than sentences
DEFINITION_SHARE = DEFINITIONS_PER_TEN / 10

#: contractions and what they stand for (an "I" stays upper case)
EXPANSIONS = {
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "isn't": "is not",
    "aren't": "are not",
    "wasn't": "was not",
    "weren't": "were not",
    "haven't": "have not",
    "hasn't": "has not",
    "hadn't": "had not",
    "won't": "will not",
    "wouldn't": "would not",
    "can't": "cannot",
    "couldn't": "could not",
    "shouldn't": "should not",
    "mustn't": "must not",
    "i'm": "I am",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "i've": "I have",
    "you've": "you have",
    "we've": "we have",
    "they've": "they have",
    "i'll": "I will",
    "you'll": "you will",
    "he'll": "he will",
    "she'll": "she will",
    "we'll": "we will",
    "they'll": "they will",
    "it's": "it is",
    "that's": "that is",
    "there's": "there is",
    "what's": "what is",
    "he's": "he is",
    "she's": "she is",
    "let's": "let us",
}
# "I've a dog" and "won't let's in" are not English: those two are only ever expanded.
_CONTRACTIONS = {
    v.lower(): k for k, v in EXPANSIONS.items() if not k.endswith("'ve") and k != "let's"
}
#: "'s" means "has" before these, so "it's been" is not "it is been"
_HAS_NEXT = frozenset({"been", "got", "gotten", "had"})
#: auxiliaries that take a "not" after them ("can" becomes "cannot")
_AUXILIARY_TEXT = "am is are was were will can could should would must may might"
_AUXILIARIES = frozenset(_AUXILIARY_TEXT.split())
#: verbs whose "not" a negative may remove ("does not know" → "does know")
_TAKE_NOT = _AUXILIARIES | {"do", "does", "did", "has", "have", "had"}
_NEGATED = {
    **{k: v.split()[0] for k, v in EXPANSIONS.items() if v.endswith(" not")},
    "can't": "can",
    "cannot": "can",
}
_ANTONYMS = {"never": "always", "always": "never"}
#: words a paraphrase may drop anywhere, and discourse markers it may drop at the start
_FILLERS = frozenset(
    {"just", "really", "very", "quite", "simply", "actually", "truly", "certainly", "the"}
)
_OPENERS = frozenset({"but", "and", "so", "well", "oh", "now", "yes", "then", "also"})
_SUBORDINATOR_TEXT = (
    "if when whenever while because although though unless once before after since until"
)
_SUBORDINATORS = frozenset(_SUBORDINATOR_TEXT.split())

#: Function words, contraction parts and fillers: every other alphabetic word is a content word.
_STOP_TEXT = """
a about after all also although am an and any are as at be because been before being but by
can cannot could did do does done either else for from had has have having he her here hers
him his how i if in into is it its itself just let may me might mine more most must my
neither no nor not now of off oh on once only or our ours out over quite really shall she
should simply since so some such than that the their theirs them then there these they this
those though through to too truly until up upon us very was we well were what when whenever
where which while who whom whose why will with would yes yet you your yours actually
certainly gotten got
"""
STOP_WORDS = frozenset(_STOP_TEXT.split()) | {
    w for v in EXPANSIONS.values() for w in v.lower().split()
}

#: how many nearest sentences a neighbour negative is drawn from
_NEIGHBOURS = 3
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_TOKEN = re.compile(r"^(\W*)(.*?)([.,!?;:]*)$")


def content_words(text: str) -> set[str]:
    """The lower-cased alphabetic words of ``text`` that are not :data:`STOP_WORDS` (a word with
    an apostrophe, such as "don't" or "mother's", is not alphabetic)."""
    return {w for w in _WORD.findall(text.lower()) if w.isalpha() and w not in STOP_WORDS}


def _parts(token: str) -> tuple[str, str, str]:
    """``token`` as (leading marks, the word, trailing punctuation)."""
    match = _TOKEN.match(token)
    assert match is not None  # every part of the pattern may be empty
    lead, core, trail = match.groups()
    return lead, core, trail


def _like(new: str, old: str) -> str:
    """``new`` capitalised when ``old`` is (never lower-cased, so "I am" keeps its "I")."""
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _capitalise(tokens: list[str]) -> list[str]:
    return [tokens[0][:1].upper() + tokens[0][1:], *tokens[1:]] if tokens else tokens


# --- positives: each edit lists every variant it can make of a sentence -------------------------


def _reorder(text: str) -> list[str]:
    """Move a fronted subordinate clause behind its main clause: "When A, B." → "B when A." (one
    comma, no dash, colon or semicolon, so where each clause ends is clear)."""
    if text.count(",") != 1 or any(mark in text for mark in (" -- ", ";", ":")):
        return []
    first, main = text.split(",")
    head, _, clause = first.rstrip().partition(" ")
    main = main.lstrip()
    body = main.rstrip(".!?")
    end = main[len(body) :]
    if head.lower() not in _SUBORDINATORS or not clause or not body:
        return []
    if body.lower().startswith("then "):
        body = body[5:]
    return [f"{body[:1].upper()}{body[1:]} {head.lower()} {clause}{end}"]


def _filler(text: str) -> list[str]:
    """Drop one filler word, or a discourse marker that opens the sentence."""
    tokens = text.split(" ")
    variants = []
    lead, core, trail = _parts(tokens[0])
    if not lead and core.lower() in _OPENERS and trail in ("", ",") and len(tokens) > 3:
        variants.append(" ".join(_capitalise(tokens[1:])))
    for i, token in enumerate(tokens):
        # a sentence that opens without its article reads like a headline
        droppable = token.lower() in _FILLERS and (i > 0 or token != "The")
        if droppable and i + 1 < len(tokens):
            rest = tokens[:i] + tokens[i + 1 :]
            variants.append(" ".join(_capitalise(rest) if i == 0 else rest))
    return variants


def _contraction(text: str) -> list[str]:
    """Expand one contraction, or contract one pair of words."""
    tokens = text.split(" ")
    variants = []
    for i, token in enumerate(tokens):
        lead, core, trail = _parts(token)
        low = core.lower()
        following = _parts(tokens[i + 1])[1].lower() if i + 1 < len(tokens) else ""
        if low in EXPANSIONS and not (low.endswith("'s") and following in _HAS_NEXT):
            new = lead + _like(EXPANSIONS[low], core) + trail
            variants.append(" ".join([*tokens[:i], new, *tokens[i + 1 :]]))
        if low == "cannot":
            new = lead + _like("can't", core) + trail
            variants.append(" ".join([*tokens[:i], new, *tokens[i + 1 :]]))
        if i + 1 == len(tokens) or trail:
            continue
        lead2, core2, trail2 = _parts(tokens[i + 1])
        pair = f"{low} {core2.lower()}"
        # "it is." cannot become "it's.": a subject only contracts with a verb that is followed
        ends = i + 2 == len(tokens) or bool(trail2) or not _parts(tokens[i + 2])[1]
        if pair in _CONTRACTIONS and not lead2 and (core2.lower() == "not" or not ends):
            new = lead + _like(_CONTRACTIONS[pair], core) + trail2
            variants.append(" ".join([*tokens[:i], new, *tokens[i + 2 :]]))
    return variants


def _punctuation(text: str) -> list[str]:
    """Change the end mark (a question stays one), drop one comma, or turn a dash into one."""
    body = text.rstrip(".!?")
    end = text[len(body) :]
    body = body.rstrip()  # "Canada ." loses its stray space too
    variants = []
    if end == ".":
        variants += [body + "!", body]
    elif end == "!":
        variants.append(body + ".")
    elif len(end) > 1:
        variants.append(body + end[-1])
    tokens = text.split(" ")
    for i, token in enumerate(tokens[:-1]):
        if token.endswith(","):  # a lone "," (left where the corpus removed a quote) goes whole
            kept = [token[:-1]] if token != "," else []
            variants.append(" ".join([*tokens[:i], *kept, *tokens[i + 1 :]]))
        if token == "--" and i > 0 and not _parts(tokens[i - 1])[2]:
            variants.append(" ".join([*tokens[: i - 1], tokens[i - 1] + ",", *tokens[i + 1 :]]))
    return variants


def _content_sites(text: str) -> list[tuple[int, str, str, str]]:
    """(token position, leading marks, word, trailing marks) of each lower-case content word of
    ``text`` (a capital mid-sentence is likely a name), the places a word may be replaced."""
    sites = []
    for i, token in enumerate(text.split(" ")):
        lead, core, trail = _parts(token)
        low = core.lower()
        if not (core.isalpha() and len(core) >= 3 and low not in STOP_WORDS):
            continue
        if core == low or (i == 0 and core == low.capitalize()):
            sites.append((i, lead, core, trail))
    return sites


def _replacements(text: str, words: Callable[[str], tuple[str, ...]]) -> list[str]:
    """``text`` with one content word replaced by one of ``words(word)``, for every choice."""
    tokens = text.split(" ")
    return [
        " ".join([*tokens[:i], lead + _like(new, core) + trail, *tokens[i + 1 :]])
        for i, lead, core, trail in _content_sites(text)
        for new in words(core.lower())
    ]


def _synonym(text: str) -> list[str]:
    """Replace one content word by a WordNet synonym of its main sense ("quickly" →
    "rapidly"; :func:`~lcoemb.synthetic.thesaurus.synonyms`)."""
    return _replacements(text, thesaurus.synonyms)


def _case(text: str) -> list[str]:
    """Lower-case the sentence, or capitalise it when it already is lower case."""
    return [text.lower() if text != text.lower() else text[:1].upper() + text[1:]]


#: The positive's edit kinds, in the order they apply, and how much each is preferred when it
#: applies (``case`` and ``punctuation`` apply to almost every sentence, the others to few).
POSITIVE_EDITS: dict[str, tuple[Callable[[str], list[str]], float]] = {
    "reorder": (_reorder, 4.0),
    "filler": (_filler, 2.0),
    "contraction": (_contraction, 3.0),
    "punctuation": (_punctuation, 1.0),
    "case": (_case, 0.5),
}


#: the ``wordnet`` corpus's edits: a synonym first, then the light edits
WORDNET_POSITIVE_EDITS = {"synonym": (_synonym, 4.0), **POSITIVE_EDITS}


def _positive(rng: np.random.Generator, anchor: str, edits: dict = POSITIVE_EDITS) -> str:
    """One or two of ``edits`` that apply to ``anchor``, chosen by weight, applied in order."""
    applicable = [name for name, (edit, _) in edits.items() if edit(anchor)]
    weights = np.array([edits[name][1] for name in applicable])
    count = min(len(applicable), 1 + int(rng.random() < 0.5))
    chosen = set(rng.choice(applicable, size=count, replace=False, p=weights / weights.sum()))
    text = anchor
    for name, (edit, _) in edits.items():
        variants = edit(text) if name in chosen else []
        if variants:
            text = choice(rng, variants)
    return text


# --- hard negatives -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _neighbours() -> tuple[tuple[int, ...], ...]:
    """For each sentence of the partition, its :data:`_NEIGHBOURS` nearest others by TF-IDF
    cosine whose content words differ from its own (computed once per process: about a
    second)."""
    pool = corpus.sentences(PARTITION)
    content = [content_words(s) for s in pool]
    vectors = TfidfVectorizer().fit_transform(pool)  # rows are L2-normalised
    nearest = []
    for start in range(0, len(pool), 512):
        block = (vectors[start : start + 512] @ vectors.T).toarray()
        for row, similarity in enumerate(block, start):
            order = np.argsort(-similarity, kind="stable")
            found = (int(j) for j in order if content[j] != content[row])
            nearest.append(tuple(itertools.islice(found, _NEIGHBOURS)))
    return tuple(nearest)


@functools.lru_cache(maxsize=1)
def _words_by_shape() -> dict[tuple[str, int], tuple[str, ...]]:
    """The training word list by (last two letters, length), for look-alike replacements."""
    shapes: dict[tuple[str, int], list[str]] = {}
    for word in corpus.words("train"):
        if word not in STOP_WORDS:
            shapes.setdefault((word[-2:], len(word)), []).append(word)
    return {key: tuple(words) for key, words in shapes.items()}


def _swaps(text: str) -> list[tuple[int, tuple[str, ...]]]:
    """(token position, look-alike replacements) for each content word of ``text`` that can be
    swapped (:func:`_content_sites`)."""
    present = set(_WORD.findall(text.lower()))
    shapes = _words_by_shape()
    sites = []
    for i, _, core, _ in _content_sites(text):
        low = core.lower()
        options = tuple(
            w
            for size in (len(low) - 1, len(low), len(low) + 1)
            for w in shapes.get((low[-2:], size), ())
            if w not in present
        )
        if options:
            sites.append((i, options))
    return sites


def _negations(text: str) -> list[str]:
    """``text`` with one negation removed or inserted, or "never" and "always" swapped. Questions
    are left alone: inserting "not" after their fronted auxiliary is not English."""
    tokens = text.split(" ")
    variants = []
    for i, token in enumerate(tokens):
        lead, core, trail = _parts(token)
        low = core.lower()
        previous = _parts(tokens[i - 1]) if i else ("", "", "")
        if low in _NEGATED:
            new = lead + _like(_NEGATED[low], core) + trail
            variants.append(" ".join([*tokens[:i], new, *tokens[i + 1 :]]))
        elif low in _ANTONYMS:
            new = lead + _like(_ANTONYMS[low], core) + trail
            variants.append(" ".join([*tokens[:i], new, *tokens[i + 1 :]]))
        elif low == "not" and not previous[2] and previous[1].lower() in _TAKE_NOT:
            merged = tokens[i - 1] + trail
            variants.append(" ".join([*tokens[: i - 1], merged, *tokens[i + 1 :]]))
        following = _parts(tokens[i + 1])[1].lower() if i + 1 < len(tokens) else ""
        insertable = low in _AUXILIARIES and i > 0 and not trail and not text.endswith("?")
        if insertable and following not in {"", "not", "no", "never"}:
            new = lead + (core + "not" if low == "can" else core + " not")
            variants.append(" ".join([*tokens[:i], new, *tokens[i + 1 :]]))
    return variants


def _negative(rng: np.random.Generator, position: int, mix: dict = NEGATIVE_MIX) -> str:
    """A hard negative for sentence ``position`` of the partition (see the module docstring)."""
    pool = corpus.sentences(PARTITION)
    anchor = pool[position]
    kinds = list(mix)
    kind = kinds[int(rng.choice(len(kinds), p=list(mix.values())))]
    if kind == "negation":
        variants = _negations(anchor)
        if variants:
            return choice(rng, variants)
        kind = "swap"
    if kind == "sibling":
        variants = _replacements(anchor, lambda word: thesaurus.sibling_words(word)[:5])
        if variants:
            return choice(rng, variants)
        kind = "swap"
    if kind == "swap":
        sites = _swaps(anchor)
        if sites:
            i, options = choice(rng, sites)
            tokens = anchor.split(" ")
            lead, core, trail = _parts(tokens[i])
            tokens[i] = lead + _like(choice(rng, options), core) + trail
            return " ".join(tokens)
    return pool[choice(rng, _neighbours()[position])]


def _definition_triplet(rng: np.random.Generator, ordinal: int, split: str) -> Triplet:
    """Dictionary entry ``ordinal``: a word and its definition as anchor and positive (either way
    round), and the same part of a sibling concept's entry as the negative."""
    concepts = thesaurus.defined_concepts()
    key = concepts[balanced_index("definition", split, ordinal, len(concepts))]
    word, definition, other_word, other_definition = thesaurus.definition_entry(
        key, int(rng.integers(1 << 30))
    )
    if rng.random() < 0.5:
        return Triplet(word, definition, other_definition)
    return Triplet(definition, word, other_word)


def general_triplet(index: int, split: str = "train", wordnet: bool = False) -> Triplet:
    """Triplet ``index`` of ``split``: a real sentence, a paraphrase keeping its content words
    and a lexically close sentence that says something else.

    With ``wordnet``, the first :data:`DEFINITIONS_PER_TEN` of every ten indices are dictionary
    entries, the positive may swap a word for a synonym and the negative for a sibling concept.
    Sentences and entries are then numbered apart, so that consecutive triplets still visit
    every sentence (and every entry) once per pass."""
    rng = sample_rng("general", split, index)  # first: it checks split and index
    ordinal = index
    if wordnet:
        block, offset = divmod(index, 10)
        if offset < DEFINITIONS_PER_TEN:
            return _definition_triplet(rng, block * DEFINITIONS_PER_TEN + offset, split)
        ordinal = block * (10 - DEFINITIONS_PER_TEN) + offset - DEFINITIONS_PER_TEN
    pool = corpus.sentences(PARTITION)
    position = balanced_index("general", split, ordinal, len(pool))
    anchor = pool[position]
    if wordnet:
        positive = _positive(rng, anchor, WORDNET_POSITIVE_EDITS)
        return Triplet(anchor, positive, _negative(rng, position, WORDNET_NEGATIVE_MIX))
    return Triplet(anchor, _positive(rng, anchor), _negative(rng, position))


def general_triplets(split: str, n: int, start: int = 0) -> list[Triplet]:
    """General-text triplets ``start .. start + n - 1`` of ``split``."""
    return [general_triplet(i, split) for i in range(start, start + n)]


def wordnet_triplets(split: str, n: int, start: int = 0) -> list[Triplet]:
    """The ``wordnet`` corpus's triplets ``start .. start + n - 1`` of ``split``: general text
    with WordNet's synonyms, siblings and dictionary entries."""
    return [general_triplet(i, split, wordnet=True) for i in range(start, start + n)]
