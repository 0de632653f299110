"""Open-vocabulary English from the system: real sentences and a large word list, partitioned.

The closed grammar of :mod:`~lcoemb.synthetic.descriptions` cannot tell generalisation from
memorisation: evaluation captions come from the same few hundred words the model trained on.
This module brings in open vocabulary that installs offline:

* **sentences** from the ``fortunes`` package (``/usr/share/games/fortunes``; about 15,000
  quotations, jokes and aphorisms): each fortune is split into sentences, and a sentence is kept
  when it is plain speakable English (4-14 words, letters and light punctuation, no digits, no
  shouting, at most 90 characters); duplicates are dropped case-insensitively.
* **words** from ``wamerican`` (``/usr/share/dict/words``; about 100,000 entries): lower-case
  ASCII words of 3-10 letters (no possessives, proper names or abbreviations).

Each list is split into fixed, disjoint **partitions** by a hash of the normalised entry, so the
split of a sentence never depends on what else is installed or on the order of files:

=========  ==========================  =====================================================
sentences  ``stage1`` (60 %)           stage-1 ASR (:mod:`~lcoemb.synthetic.speech`'s
                                       open-vocabulary utterances)
           ``text`` (25 %)             the general text-only training triplets
           ``eval`` (15 %)             out-of-distribution evaluation only
words      ``train`` (85 %)            stage-1 OCR over a large vocabulary
           ``eval`` (15 %)             out-of-distribution evaluation only; never one of the
                                       closed grammar's :data:`~lcoemb.synthetic.WORDS`
=========  ==========================  =====================================================

``LCOEMB_FORTUNES_DIR`` and ``LCOEMB_WORDS_FILE`` point elsewhere (a copy of the same packages on
another system). :func:`corpus_fingerprint` names the exact lists in use, so caches of features
built from them are never reused across different lists.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

from lcoemb.synthetic.descriptions import WORDS

FORTUNES_DIR = "/usr/share/games/fortunes"
WORDS_FILE = "/usr/share/dict/words"

#: share of each partition, in percent, in hash order
SENTENCE_PARTITIONS = {"stage1": 60, "text": 25, "eval": 15}
WORD_PARTITIONS = {"train": 85, "eval": 15}

_MIN_WORDS, _MAX_WORDS, _MAX_CHARS = 4, 14, 90
_ALLOWED = re.compile(r"^[A-Za-z][A-Za-z ,.'!?;:-]*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_WORD = re.compile(r"^[a-z]{3,10}$")
_SPEAKER = re.compile(r"^(?:[A-Z][A-Za-z]*\.? ?){1,2}: ")  # "Norm: ", "Q: ", "Dr. Who: "
_SPACE_BEFORE_MARK = re.compile(r" ([,.!?;:])")
_BROKEN = re.compile(r"[.!?;:] [a-z]")  # a sentence split in the wrong place


def _bucket(entry: str) -> int:
    """A stable number in [0, 100) for ``entry`` (lower-cased), the same on every machine."""
    digest = hashlib.blake2b(entry.lower().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def _partition(entry: str, shares: dict[str, int]) -> str:
    bucket, edge = _bucket(entry), 0
    for name, share in shares.items():
        edge += share
        if bucket < edge:
            return name
    raise AssertionError("shares must sum to 100")


def fortunes_dir() -> Path:
    """Where the fortune files are: ``$LCOEMB_FORTUNES_DIR`` or :data:`FORTUNES_DIR`."""
    folder = Path(os.environ.get("LCOEMB_FORTUNES_DIR") or FORTUNES_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no fortune files at {folder}; install them (apt-get install fortunes) "
            "or set LCOEMB_FORTUNES_DIR"
        )
    return folder


def words_file() -> Path:
    """The word list: ``$LCOEMB_WORDS_FILE`` or :data:`WORDS_FILE`."""
    path = Path(os.environ.get("LCOEMB_WORDS_FILE") or WORDS_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"no word list at {path}; install one (apt-get install wamerican) "
            "or set LCOEMB_WORDS_FILE"
        )
    return path


def clean_sentence(text: str) -> str | None:
    """``text`` as one plain sentence (single spaces, no quotes), or None if it is not one the
    corpus keeps."""
    text = " ".join(text.replace('"', " ").replace("`", " ").split()).strip(" -")
    text = _SPACE_BEFORE_MARK.sub(r"\1", text)  # where a removed quote left a gap
    text = _SPEAKER.sub("", text)
    if not _ALLOWED.match(text) or text[-1] not in ".!?" or _BROKEN.search(text):
        return None
    words = text.split()
    if not _MIN_WORDS <= len(words) <= _MAX_WORDS or len(text) > _MAX_CHARS:
        return None
    letters = [c for c in text if c.isalpha()]
    if sum(c.isupper() for c in letters) > 0.3 * len(letters):  # shouting or initials
        return None
    if any(len(w.strip(",.'!?;:-")) > 16 for w in words):
        return None
    return text


def _fortune_sentences(body: str) -> list[str]:
    """The sentences of one fortune, attribution lines (``-- Author``) removed."""
    lines = [ln for ln in body.splitlines() if not ln.strip().startswith("--")]
    text = " ".join(" ".join(lines).split())
    return [s for s in _SENTENCE_END.split(text) if s]


@functools.lru_cache(maxsize=1)
def all_sentences() -> tuple[str, ...]:
    """Every kept sentence of every fortune file, sorted (so the order is the same everywhere)."""
    folder = fortunes_dir()
    seen: dict[str, str] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and "." not in p.name)
    if not files:
        raise FileNotFoundError(f"{folder} holds no fortune files (apt-get install fortunes)")
    for path in files:
        raw = path.read_text(encoding="latin-1")
        for body in raw.split("\n%\n"):
            for sentence in _fortune_sentences(body):
                kept = clean_sentence(sentence)
                if kept is not None:
                    seen.setdefault(kept.lower(), kept)
    return tuple(sorted(seen.values()))


@functools.lru_cache(maxsize=1)
def all_words() -> tuple[str, ...]:
    """Every kept word of the word list, sorted."""
    raw = words_file().read_text(encoding="utf-8", errors="replace").split()
    return tuple(sorted({w for w in raw if _WORD.match(w)}))


@functools.lru_cache(maxsize=8)
def sentences(partition: str) -> tuple[str, ...]:
    """The sentences of ``partition`` (one of :data:`SENTENCE_PARTITIONS`), sorted."""
    if partition not in SENTENCE_PARTITIONS:
        raise ValueError(
            f"partition must be one of {tuple(SENTENCE_PARTITIONS)}, got {partition!r}"
        )
    return tuple(s for s in all_sentences() if _partition(s, SENTENCE_PARTITIONS) == partition)


_CLOSED = frozenset(WORDS)


@functools.lru_cache(maxsize=4)
def words(partition: str) -> tuple[str, ...]:
    """The words of ``partition`` (one of :data:`WORD_PARTITIONS`), sorted. The closed grammar's
    words are always in ``train``, so ``eval`` words were never rendered in any training set."""
    if partition not in WORD_PARTITIONS:
        raise ValueError(f"partition must be one of {tuple(WORD_PARTITIONS)}, got {partition!r}")

    def part(w: str) -> str:
        return "train" if w in _CLOSED else _partition(w, WORD_PARTITIONS)

    return tuple(w for w in all_words() if part(w) == partition)


def corpus_fingerprint() -> str:
    """A short hash of both lists in use: it names them in feature-cache keys and reports."""
    h = hashlib.blake2b(digest_size=6)
    for entry in (*all_sentences(), "\0", *all_words()):
        h.update(entry.encode() + b"\n")
    return h.hexdigest()
