"""WordNet 3.0 from the Debian package ``wordnet-base``: synonyms, definitions and sibling
concepts for the general-text triplets (:mod:`~lcoemb.synthetic.general`).

A paraphrase that may only drop fillers or reorder clauses never teaches that two *different*
words say the same thing ("a three-sided polygon" is a triangle, "a lozenge" a diamond), which
is most of what NLI's entailments teach. WordNet is the field's offline thesaurus: every synset
is a set of synonymous lemmas with a gloss, linked to its hypernyms, so a sibling under the same
hypernym ("square" for "triangle", both polygons) is a lexically close concept that differs.

The files are read directly (their format is WordNet's ``wndb(5)``): nltk's reader refuses
paths outside its own data folders and needs a ``lexnames`` file that Debian does not ship.
Only what the triplets need is loaded: lemmas, the gloss's definition part, hypernym and
similar-to pointers, and each synset's frequency in WordNet's sense-tagged corpus
(``cntlist.rev``), so that sampling favours the senses people use.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

#: where Debian's ``wordnet-base`` puts the database; ``LCOEMB_WORDNET`` overrides it
WORDNET_DIR = Path("/usr/share/wordnet")
#: WordNet's part-of-speech files, by their ``ss_type`` letters
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
#: ``ss_type`` → the number sense keys use (``s``: adjective satellite)
_SENSE_POS = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}
#: pointers name a satellite adjective's part of speech ``s``; its synset is in ``data.adj``
_SATELLITE = {"s": "a"}


@dataclass(frozen=True)
class Synset:
    """One WordNet concept: its synonymous lemmas (most tagged first, spaces not underscores),
    the definition part of its gloss, its hypernyms (or, for adjectives, the head synsets it is
    similar to) as keys of :attr:`WordNet.synsets`, and its tag count."""

    key: str
    pos: str
    lemmas: tuple[str, ...]
    definition: str
    parents: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class WordNet:
    """The loaded database: synsets by key (``"n04480853"``), the synset keys of each lemma in
    WordNet's sense order (most frequent first), and the children of each parent."""

    synsets: dict[str, Synset]
    senses: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]

    def siblings(self, key: str) -> tuple[str, ...]:
        """Synsets that share a parent with ``key``, other than ``key`` itself."""
        found = dict.fromkeys(
            child
            for parent in self.synsets[key].parents
            for child in self.children.get(parent, ())
            if child != key
        )
        return tuple(found)


def wordnet_dir() -> Path:
    """Where the database is read from: ``$LCOEMB_WORDNET``, else :data:`WORDNET_DIR`."""
    return Path(os.environ.get("LCOEMB_WORDNET", WORDNET_DIR))


def _counts(root: Path) -> dict[str, int]:
    """Tag counts by sense-key prefix ``lemma%pos:lexfile:lexid``."""
    counts: dict[str, int] = {}
    path = root / "cntlist.rev"
    if not path.exists():
        return counts
    for line in path.read_text(encoding="utf-8").splitlines():
        sense_key, _, count = line.split(" ")
        prefix = ":".join(sense_key.split(":")[:3])
        counts[prefix] = counts.get(prefix, 0) + int(count)
    return counts


def _definition(gloss: str) -> str:
    """The gloss without its examples and its leading domain label: ``"(physics) force that
    produces strain; \"...\""`` → ``"force that produces strain"``."""
    parts = [p.strip() for p in gloss.split(";")]
    kept = [p.split(': "')[0].strip() for p in parts if p and not p.startswith('"')]
    text = "; ".join(p for p in kept if p)
    if text.startswith("("):
        text = text.partition(") ")[2]
    return text.strip()


def load_wordnet(root: str | Path | None = None) -> WordNet:
    """The database in ``root`` (default :func:`wordnet_dir`), parsed once per process (about
    2 s).

    Raises ``FileNotFoundError`` naming the folder and the package to install when it is
    missing, and ``ValueError`` naming the file and line of a line it cannot read."""
    return _load(Path(root) if root is not None else wordnet_dir())


def _synset(letter: str, line: str, counts: dict[str, int]) -> Synset:
    """One line of a ``data.*`` file: ``offset lexfile ss_type w_cnt (word lex_id)... p_cnt
    (symbol offset pos source/target)... [frames] | gloss``."""
    fields, _, gloss = line.partition(" | ")
    tokens = fields.split()
    offset, lexfile, ss_type = tokens[0], tokens[1], tokens[2]
    n_words = int(tokens[3], 16)
    at = 4 + 2 * n_words
    pointers = [tokens[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(int(tokens[at]))]
    scored = []
    for word, lex_id in zip(tokens[4:at:2], tokens[5:at:2]):
        lemma = word.split("(")[0]  # adjective markers: "galore(ip)"
        sense = f"{lemma.lower()}%{_SENSE_POS[ss_type]}:{lexfile}:{int(lex_id, 16):02d}"
        scored.append((counts.get(sense, 0), lemma.replace("_", " ")))
    # most tagged first; sorted() is stable, so equals keep WordNet's order
    lemmas = tuple(lemma for _, lemma in sorted(scored, key=lambda pair: -pair[0]))
    parents = tuple(
        f"{_SATELLITE.get(pos, pos)}{target}"
        for symbol, target, pos, _ in pointers
        if symbol in ("@", "@i", "&")  # hypernym, instance hypernym, similar to
    )
    key = f"{letter}{offset}"
    count = sum(c for c, _ in scored)
    return Synset(key, letter, lemmas, _definition(gloss), parents, count)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of a WordNet file, without the licence header."""
    text = path.read_text(encoding="utf-8")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if not line.startswith("  ")]


@functools.lru_cache(maxsize=2)
def _load(root: Path) -> WordNet:
    needed = [f"{kind}.{name}" for kind in ("data", "index") for name in _FILES.values()]
    missing = [name for name in needed if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"WordNet not found in {root} (missing {', '.join(missing)}): install the Debian "
            "package wordnet-base (apt-get install wordnet-base) or set LCOEMB_WORDNET to a "
            "folder holding WordNet 3.0's data.* and index.* files"
        )
    counts = _counts(root)
    synsets: dict[str, Synset] = {}
    senses: dict[str, list[str]] = {}
    for letter, name in _FILES.items():
        path = root / f"data.{name}"
        for number, line in _lines(path):
            try:
                synset = _synset(letter, line, counts)
            except (IndexError, KeyError, ValueError) as err:
                raise ValueError(f"{path}:{number}: not a WordNet data line ({err!r})") from None
            synsets[synset.key] = synset
        path = root / f"index.{name}"
        for number, line in _lines(path):
            # lemma pos synset_cnt p_cnt [symbol...] sense_cnt tagsense_cnt offset...
            tokens = line.split()
            try:
                offsets = tokens[-int(tokens[2]) :]
            except (IndexError, ValueError) as err:
                raise ValueError(f"{path}:{number}: not a WordNet index line ({err!r})") from None
            lemma = tokens[0].replace("_", " ")
            senses.setdefault(lemma, []).extend(f"{letter}{offset}" for offset in offsets)
    children: dict[str, list[str]] = {}
    for synset in synsets.values():
        for parent in synset.parents:
            children.setdefault(parent, []).append(synset.key)
    return WordNet(
        synsets=synsets,
        senses={lemma: tuple(keys) for lemma, keys in senses.items()},
        children={parent: tuple(keys) for parent, keys in children.items()},
    )


def _plain(lemma: str) -> bool:
    """A lemma a sentence can use as is: lower case, letters, spaces and hyphens only."""
    return lemma == lemma.lower() and lemma.replace(" ", "").replace("-", "").isalpha()


#: WordNet's detachment rules for verbs (``morphy``): an ending and what replaces it
_VERB_ENDINGS = (
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
)


def _verb_form(word: str, wn: WordNet) -> bool:
    """Whether ``word`` is an inflected form of another verb ("contributing" of "contribute"):
    a sentence then likely uses it as that verb, whatever senses the word has itself."""
    for ending, base in _VERB_ENDINGS:
        stem = word[: -len(ending)] + base
        if (
            word.endswith(ending)
            and stem != word
            and any(key[0] == "v" for key in wn.senses.get(stem, ()))
        ):
            return True
    return False


def main_sense(word: str) -> Synset | None:
    """The sense of ``word`` that WordNet's tagged corpus uses most, when it is most of the
    word's tagged uses (so that its sense in a sentence is rarely a guess between "a run" and
    "to run") and the word is not an inflected verb; otherwise None."""
    wn = load_wordnet()
    if _verb_form(word, wn):
        return None
    synsets = [wn.synsets[key] for key in wn.senses.get(word, ())]
    total = sum(synset.count for synset in synsets)
    if total == 0:
        return None
    best = max(synsets, key=lambda synset: synset.count)  # the first of equals: sense order
    return best if 2 * best.count > total else None


def _distinct_siblings(synset: Synset, exclude: set[str]) -> list[Synset]:
    """The siblings of ``synset`` whose first lemma a sentence can use and that share no lemma
    with it or ``exclude``: other concepts, not other names of this one."""
    wn = load_wordnet()
    own = exclude | set(synset.lemmas)
    siblings = (wn.synsets[key] for key in wn.siblings(synset.key))
    return [s for s in siblings if _plain(s.lemmas[0]) and not own & set(s.lemmas)]


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """Other lemmas of ``word``'s main sense (:func:`main_sense`) that a sentence can use."""
    synset = main_sense(word)
    if synset is None:
        return ()
    return tuple(lemma for lemma in synset.lemmas if _plain(lemma) and word not in lemma.split(" "))


@functools.lru_cache(maxsize=65536)
def sibling_words(word: str) -> tuple[str, ...]:
    """The first lemma of each sibling of ``word``'s main sense, most tagged first: a concept of
    the same kind that is not the same ("square" for "triangle", "red" for "brown")."""
    synset = main_sense(word)
    if synset is None:
        return ()
    found = sorted((-s.count, s.lemmas[0]) for s in _distinct_siblings(synset, {word}))
    return tuple(dict.fromkeys(lemma for _, lemma in found))


@functools.lru_cache(maxsize=1)
def defined_concepts() -> tuple[str, ...]:
    """Keys of the attested synsets (:attr:`Synset.count` ≥ 1) whose first lemma a sentence can
    use, that have a definition and at least one attested sibling with one, in key order: the
    entries dictionary triplets are drawn from (about 20,000)."""
    wn = load_wordnet()
    return tuple(
        key
        for key, synset in sorted(wn.synsets.items())
        if synset.count > 0
        and synset.definition
        and _plain(synset.lemmas[0])
        and _siblings_with_definitions(key)
    )


@functools.lru_cache(maxsize=65536)
def _siblings_with_definitions(key: str) -> tuple[str, ...]:
    """Keys of the attested siblings of ``key`` that have a definition."""
    synset = load_wordnet().synsets[key]
    return tuple(s.key for s in _distinct_siblings(synset, set()) if s.count > 0 and s.definition)


def definition_entry(key: str, sibling_choice: int) -> tuple[str, str, str, str]:
    """(word, its definition, a sibling's word, the sibling's definition) for synset ``key``;
    ``sibling_choice`` picks among its attested siblings (modulo their number)."""
    wn = load_wordnet()
    synset = wn.synsets[key]
    siblings = _siblings_with_definitions(key)
    sibling = wn.synsets[siblings[sibling_choice % len(siblings)]]
    return synset.lemmas[0], synset.definition, sibling.lemmas[0], sibling.definition
