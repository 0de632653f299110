"""Walking a collection to index: a media folder or an items JSONL, as a list of entries.

An :class:`Entry` is one thing to embed: a media file, one passage of a text file, or one line
of an items JSONL. Its ``key`` is its identity across ``lcoemb index update`` and its
``content_hash`` tells whether it changed, so an update re-embeds only what is new or edited:

* in a folder, a media file's key is its relative path and a text file's passages are
  ``PATH#N``; the hash is the sha256 of the file's bytes (all passages share their file's);
* in a JSONL, the key is the content hash itself (a line has no name of its own: its line
  number moves whenever a line above it is added), computed over the record and the bytes of
  every media file it names, so editing a named image re-embeds the line.

Walking reads every file once, in chunks, so hashing a folder of large videos takes constant
memory. Nothing is decoded here (media are checked when the encoder loads them); only text
files are decoded, since their passages are what gets embedded. A file that cannot be read is
recorded in :attr:`Walk.errors` (or raises with ``strict=True``) so one bad file does not stop
the indexing of a large folder, and the report can say what was left out and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lcoemb.inputs import (
    MODALITIES,
    Audio,
    ImageRef,
    InputError,
    Video,
    item_from_record,
    json_lines,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_PASSAGE_CHARS = 1000

_MODALITY_OF_SUFFIX = {
    suffix: modality
    for modality, suffixes in (
        ("image", IMAGE_SUFFIXES),
        ("audio", AUDIO_SUFFIXES),
        ("video", VIDEO_SUFFIXES),
        ("text", TEXT_SUFFIXES),
    )
    for suffix in suffixes
}
_MEDIA_PART = {"image": ImageRef, "audio": Audio, "video": Video}
_CHUNK_BYTES = 1 << 20

# Passage breaks, best first (see split_passages): a blank line (which may hold spaces or the
# "\r" of CRLF files), the end of a sentence (its closing quote or bracket stays with it), any
# whitespace.
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")
_SPACE = re.compile(r"\s")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class Entry:
    """One item to embed: a media file, one passage of a text file, or one line of an items
    JSONL (see the module docstring for ``key`` and ``content_hash``).

    ``path`` is POSIX and relative to the walk's root (``NAME.jsonl:LINE`` for a JSONL line), so
    an index stays valid when its collection is moved or mounted elsewhere. ``start``/``end``
    are character offsets of a passage in the decoded file, so a search hit can point into it.
    ``record`` keeps a JSONL line so that :meth:`item` can rebuild the item later.
    """

    key: str
    path: str
    modality: str
    content_hash: str
    size: int
    mtime: float
    passage: int | None = None
    start: int | None = None
    end: int | None = None
    text: str | None = None
    record: str | None = None

    def item(self, root: Path) -> Any:
        """The encoder item, with media paths resolved against ``root`` (:attr:`Walk.root`).

        A JSONL record goes through :func:`lcoemb.inputs.item_from_record` again, which checks
        it as ``lcoemb encode`` does; a media file is an :class:`ImageRef`, :class:`Audio` or
        :class:`Video` of its path, so nothing is opened until the encoder loads it.
        """
        if self.record is not None:
            return item_from_record(json.loads(self.record), where=self.path, base_dir=Path(root))
        if self.modality == "text":
            return self.text
        return _MEDIA_PART[self.modality](Path(root) / self.path)


@dataclass
class Walk:
    """What :func:`walk_source` found.

    ``root`` is the folder that entry paths are relative to (a JSONL's own folder, which its
    media paths resolve against). ``skipped`` counts files of other types by lower-case suffix
    (``""`` for none), so a user can see that, say, 300 ``.heic`` photos were not indexed.
    ``errors`` are ``{"path": ..., "error": ...}`` for what could not be read.
    """

    root: Path
    entries: list[Entry]
    skipped: dict[str, int]
    errors: list[dict[str, str]]


class _Unreadable(Exception):
    """A file that is there but cannot be turned into entries; the message is the cause."""


def walk_source(
    source: str | os.PathLike[str],
    *,
    passage_chars: int = DEFAULT_PASSAGE_CHARS,
    show_progress: bool = False,
    strict: bool = False,
) -> Walk:
    """The entries of a folder or of an items JSONL (see :func:`item_from_record`).

    A folder is walked recursively; a file's modality comes from its suffix (any case), and
    text files are split into passages of at most ``passage_chars`` characters (see
    :func:`split_passages`). Hidden files and folders (names starting with ``"."``) are left
    out and not counted in ``skipped``: they are editor, VCS and OS bookkeeping (``.git``,
    ``.DS_Store``), and an index kept inside the collection is usually hidden too. Symlinked
    folders are not followed, since a link to a parent folder would loop; symlinked files are
    read. Folder entries are sorted by path, then passage; JSONL entries are in line order.

    A file that cannot be read (permissions, text that is not UTF-8 or holds no text, a JSONL
    line that is malformed or names a missing file) is recorded in ``errors``, or with
    ``strict=True`` raises :class:`InputError` ``"PATH: cause"`` at the first one.
    """
    if passage_chars < 1:
        raise ValueError(f"passage_chars must be at least 1, got {passage_chars}")
    path = Path(source)
    if path.is_dir():
        return _walk_folder(path, passage_chars, show_progress, strict)
    if not path.exists():
        raise InputError(None, f"source not found: {os.fspath(source)!r}")
    if path.suffix.lower() != ".jsonl":
        raise InputError(
            None,
            f"{os.fspath(source)!r} is not a folder or an items .jsonl file; index a folder of "
            'media and text files, or a JSONL of records such as {"image": "cat.png"}',
        )
    return _walk_jsonl(path, show_progress, strict)


def split_passages(text: str, passage_chars: int) -> list[tuple[int, int]]:
    """``(start, end)`` offsets in ``text`` of passages of at most ``passage_chars`` characters.

    A passage ends at the last paragraph break (a blank line) before the limit, else at the
    last sentence end, else at the last whitespace, else it is cut at the limit (a word longer
    than a passage). Paragraph and sentence breaks count only in the second half of the window:
    cutting after a short heading would leave a passage too short to embed meaningfully, while
    a break near the limit keeps related sentences together. Passages carry no leading or
    trailing whitespace, so every non-whitespace character lies in exactly one passage and only
    whitespace lies between them; a text that is all whitespace has no passages.
    """
    if passage_chars < 1:
        raise ValueError(f"passage_chars must be at least 1, got {passage_chars}")
    spans: list[tuple[int, int]] = []
    cut = 0
    while (first := _NON_SPACE.search(text, cut)) is not None:
        start = first.start()
        limit = start + passage_chars
        cut = len(text) if len(text) <= limit else _break_before(text, start, limit)
        spans.append((start, start + len(text[start:cut].rstrip())))
    return spans


def _break_before(text: str, start: int, limit: int) -> int:
    """Where a passage beginning at ``start`` (a non-space) ends: the break ``split_passages``
    prefers, at most ``limit``; the whitespace at the break goes to neither passage."""
    half = start + (limit - start) // 2
    for pattern, earliest, cut_after in (
        (_PARAGRAPH_BREAK, half, False),
        (_SENTENCE_END, half, True),
        (_SPACE, start + 1, False),
    ):
        last = deque(pattern.finditer(text, earliest, limit + 1), maxlen=1)
        if last:
            return last[0].end() if cut_after else last[0].start()
    return limit


# --------------------------------------------------------------------------- folders


def _walk_folder(root: Path, passage_chars: int, show_progress: bool, strict: bool) -> Walk:
    walk = Walk(root=root, entries=[], skipped={}, errors=[])
    skipped: Counter[str] = Counter()
    files = []  # sorted by path, so the entries come out sorted by path, then passage
    for rel, path in sorted(_folder_files(root, "", walk, strict)):
        modality = _MODALITY_OF_SUFFIX.get(path.suffix.lower())
        if modality is None:
            skipped[path.suffix.lower()] += 1
        else:
            files.append((rel, path, modality))
    for rel, path, modality in tqdm(files, unit="file", disable=not show_progress):
        try:
            if not path.is_file():
                raise _Unreadable("not a regular file (a broken link?)")
            if modality == "text":
                walk.entries.extend(_text_entries(path, rel, passage_chars))
            else:
                digest, size, mtime, _ = _read(path)
                walk.entries.append(Entry(rel, rel, modality, digest, size, mtime))
        except (OSError, _Unreadable) as error:
            _record_error(walk, rel, _cause(error), strict)
    walk.skipped = dict(sorted(skipped.items()))
    return walk


def _folder_files(folder: Path, rel: str, walk: Walk, strict: bool) -> Iterator[tuple[str, Path]]:
    """``(relative POSIX path, path)`` of every non-hidden file under ``folder``."""
    try:
        with os.scandir(folder) as listing:
            children = sorted(listing, key=lambda child: child.name)
    except OSError as error:
        _record_error(walk, rel.rstrip("/") or ".", _cause(error), strict)
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_dir(follow_symlinks=False):
            yield from _folder_files(Path(child.path), f"{rel}{child.name}/", walk, strict)
        elif not (child.is_symlink() and child.is_dir()):
            yield f"{rel}{child.name}", Path(child.path)


def _text_entries(path: Path, rel: str, passage_chars: int) -> list[Entry]:
    digest, size, mtime, data = _read(path, keep=True)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _Unreadable(f"not UTF-8 text: {error}") from None
    spans = split_passages(text, passage_chars)
    if not spans:
        raise _Unreadable("no text to embed (the file is empty or only whitespace)")
    return [
        Entry(f"{rel}#{n}", rel, "text", digest, size, mtime, n, start, end, text[start:end])
        for n, (start, end) in enumerate(spans)
    ]


def _read(path: Path, *, keep: bool = False) -> tuple[str, int, float, bytes]:
    """sha256 hex, size and mtime of one chunked read, and the bytes if ``keep``.

    Size and mtime come from the open file and the bytes hashed, so they describe the same
    version of a file that is being rewritten while it is walked."""
    digest = hashlib.sha256()
    kept = []
    size = 0
    with path.open("rb") as f:
        mtime = os.fstat(f.fileno()).st_mtime
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if keep:
                kept.append(chunk)
    return digest.hexdigest(), size, mtime, b"".join(kept)


# --------------------------------------------------------------------------- JSONL


def _walk_jsonl(path: Path, show_progress: bool, strict: bool) -> Walk:
    walk = Walk(root=path.parent, entries=[], skipped={}, errors=[])
    jsonl_mtime = path.stat().st_mtime
    media: dict[Path, tuple[str, int, float, bytes]] = {}  # a file named by many lines: read once
    repeats: dict[str, int] = {}
    for lineno, record, problem in tqdm(
        json_lines(path, path.name), unit="line", disable=not show_progress
    ):
        where = f"{path.name}:{lineno}"
        try:
            if problem is not None:
                raise InputError(None, problem)
            item = item_from_record(record, where, base_dir=walk.root)
            parts = item if isinstance(item, list) else [item]
            sources = [part.source for part in parts if not isinstance(part, str)]
            for source in sources:
                if source not in media:
                    media[source] = _read(source)
        except (InputError, OSError) as error:
            cause = error.reason if isinstance(error, InputError) else _cause(error)
            if cause.startswith(where):  # json_lines and item_from_record open with it
                cause = cause[len(where) :].lstrip(": ")
            _record_error(walk, where, cause, strict)
            continue
        files = [media[source] for source in sources]
        entry = _record_entry(record, where, parts, files, jsonl_mtime)
        # identical lines are distinct items: the n-th repeat's key is HASH#n, so an update
        # that edits or drops one of them drops exactly one row
        repeats[entry.key] = seen = repeats.get(entry.key, 0) + 1
        if seen > 1:
            entry = dataclasses.replace(entry, key=f"{entry.key}#{seen}")
        walk.entries.append(entry)
    return walk


def _record_entry(
    record: dict[str, Any],
    where: str,
    parts: list[Any],
    media: list[tuple[str, int, float, bytes]],
    jsonl_mtime: float,
) -> Entry:
    """The entry of one valid JSONL record whose media files have been read.

    The record is hashed in canonical form (sorted keys, no spaces), so reformatting a line
    does not count as a change; each media file contributes its own digest, so a file named by
    many lines is hashed once."""
    line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(line.encode("utf-8"))
    for file_digest, _, _, _ in media:
        digest.update(bytes.fromhex(file_digest))
    content_hash = digest.hexdigest()
    modality = "interleaved" if "parts" in record else next(m for m in MODALITIES if m in record)
    texts = [part for part in parts if isinstance(part, str)]
    return Entry(
        key=content_hash,
        path=where,
        modality=modality,
        content_hash=content_hash,
        size=len(line.encode("utf-8")) + sum(size for _, size, _, _ in media),
        mtime=max([jsonl_mtime, *(mtime for _, _, mtime, _ in media)]),
        text="\n".join(texts) if texts else None,
        record=line,
    )


# --------------------------------------------------------------------------- errors


def _cause(error: BaseException) -> str:
    """The cause of a read failure without the absolute path that ``OSError`` adds (the entry
    already names the file by its relative path)."""
    if isinstance(error, OSError) and error.strerror:
        return f"cannot read: {error.strerror}"
    return str(error)


def _record_error(walk: Walk, path: str, cause: str, strict: bool) -> None:
    if strict:
        raise InputError(None, f"{path}: {cause}")
    walk.errors.append({"path": path, "error": cause})
