"""Triplet data for contrastive training: reading, validation, mixing by ratio and batching.

A training example is a triplet ``anchor``/``positive``/``negative`` (``negative`` optional).
Each field is either a string (text) or an object ``{"text": ..., "image"|"audio"|"video":
path}`` with ``text`` optional and at most one media key, so the text NLI triplets and the
multimodal calibration pairs of the reference recipe share one format.

**Sources** (:func:`load_triplets`), resolved in this order:

1. an existing file, by extension: ``.jsonl`` (one JSON object per line), ``.csv`` (a header
   row, then one triplet per row) or ``.parquet``;
2. an existing folder: a ``datasets.save_to_disk`` folder (``datasets.load_from_disk``), or any
   folder ``datasets.load_dataset`` understands (parquet, jsonl, csv files...);
3. ``NAME[:CONFIG][@SPLIT]``: a Hugging Face hub dataset, loaded with
   ``datasets.load_dataset(NAME, CONFIG, split=SPLIT)``; ``SPLIT`` defaults to ``train``.
   For example ``sentence-transformers/all-nli:triplet`` or ``...all-nli:triplet@dev``.
   A local folder takes the same suffixes (``data/nli@test``).

In CSV, Parquet and Hugging Face datasets an object field may also be a struct column or a JSON
string whose first non-blank character is ``{`` (so text that starts with ``{`` must be written
as ``{"text": "{..."}`` there); in JSONL a string is always text. ``null`` (or, in CSV, an empty
cell) means "absent": allowed for ``negative`` only.

Relative media paths resolve against the data file's folder (the dataset folder for local
Hugging Face datasets, the working directory for hub datasets). Media files are checked to exist
when the data is read, so a typo fails before any model is loaded. Images are kept as
:class:`lcoemb.inputs.ImageRef` (a path), also in collated batches: the encoder opens each file
only while decoding its chunk, since an image opened with ``PIL.Image.open`` holds a file
descriptor and a global batch of them exceeds the usual 1024-file limit.

**Errors** name where the problem is: ``data.jsonl:12`` (1-based line) for JSONL and CSV,
``data.parquet[3]`` (0-based row) for Parquet and ``hf:NAME[3]`` for Hugging Face datasets, then
the field and the cause. Problems with a whole source (missing file, unknown or missing columns,
no rows) always raise; a bad row raises unless ``skip_bad=True``, which skips it but counts it and
keeps the first reasons, so nothing is ever dropped silently.

This module knows data only: nothing about models or losses.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lcoemb.inputs import Audio, ImageRef, Video, json_lines

#: How many skip reasons a :class:`TripletSet` keeps for the final report.
MAX_SKIPPED_EXAMPLES = 5
#: Hugging Face datasets at least this long show a progress bar while being read.
PROGRESS_MIN_ROWS = 50_000

_ROLES = ("anchor", "positive", "negative")
_REQUIRED = ("anchor", "positive")
_MEDIA_KEYS = ("image", "audio", "video")
_FIELD_KEYS = ("text", *_MEDIA_KEYS)
_FILE_READERS = (".jsonl", ".csv", ".parquet")
# Suffixes that mark a source as a local file even when it does not exist (a typo), so that it
# fails as "file not found" instead of as an unknown hub dataset.
_FILE_LIKE_SUFFIXES = (*_FILE_READERS, ".json", ".tsv", ".arrow", ".txt")
_EXPECTED_COLUMNS = "expected 'anchor', 'positive' and optionally 'negative'"
_EXPECTED_FIELD = (
    "expected a string or an object with 'text' and/or one of 'image', 'audio', 'video'"
)


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and line (or row)."""


MediaRef = ImageRef | Audio | Video
#: A triplet field: text, one media reference, or ``[media, text]`` (media first, like the
#: reference's content order).
Field = str | MediaRef | list[MediaRef | str]


@dataclass(frozen=True)
class Triplet:
    """One training example. ``source`` (``"data.jsonl:12"``, ``"hf:name[3]"``) says where it
    came from, so errors raised later (while encoding) can point at the data."""

    anchor: Field
    positive: Field
    negative: Field | None
    source: str


@dataclass
class TripletSet:
    """The triplets read from one source, and what was skipped (``skip_bad=True``) and why, so
    that the trainer can report the skipped rows at the end."""

    name: str
    triplets: list[Triplet]
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.triplets)


# --------------------------------------------------------------------------- fields


def _field(value: Any, where: str, role: str, base_dir: Path, json_strings: bool) -> Field:
    """Validate one field value and turn it into a :data:`Field`."""
    ctx = f"{where}: field {role!r}"
    if isinstance(value, str):
        if not (json_strings and value.lstrip().startswith("{")):
            if not value.strip():
                raise DataError(f"{ctx}: empty text")
            return value
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{ctx}: starts with '{{' but is not a valid JSON object ({error}); write text "
                'that starts with \'{\' as {"text": "..."}'
            ) from None
    if not isinstance(value, dict):
        raise DataError(f"{ctx}: {_EXPECTED_FIELD}, got {type(value).__name__}")
    present = {k: v for k, v in value.items() if v is not None}  # struct columns fill with None
    unknown = [k for k in present if k not in _FIELD_KEYS]
    if unknown:
        raise DataError(f"{ctx}: unknown key(s) {', '.join(map(repr, unknown))}; {_EXPECTED_FIELD}")
    media = [k for k in _MEDIA_KEYS if k in present]
    if len(media) > 1:
        raise DataError(f"{ctx}: at most one of 'image', 'audio', 'video' per field, got {media}")
    text = present.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise DataError(f"{ctx}: 'text' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise DataError(f"{ctx}: empty text")
    if not media:
        if text is None:
            raise DataError(f"{ctx}: empty object; {_EXPECTED_FIELD}")
        return text
    key = media[0]
    raw = present[key]
    if not isinstance(raw, str) or not raw.strip():
        raise DataError(f"{ctx}: {key!r} must be a non-empty file path, got {raw!r}")
    path = base_dir / Path(raw).expanduser()  # an absolute `raw` replaces base_dir
    if not path.is_file():
        hint = "" if os.fspath(path) == raw else f" (looked for {os.fspath(path)!r})"
        raise DataError(f"{ctx}: {key} file not found: {raw!r}{hint}")
    ref: MediaRef = (
        ImageRef(path) if key == "image" else Audio(path) if key == "audio" else Video(path)
    )
    return ref if text is None else [ref, text]


def _triplet(record: Any, where: str, base_dir: Path, json_strings: bool) -> Triplet:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = [k for k in record if k not in _ROLES]
    if unknown:
        raise DataError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; {_EXPECTED_COLUMNS}"
        )
    for role in _REQUIRED:
        if record.get(role) is None:
            raise DataError(f"{where}: missing {role!r}")
    fields = {
        role: None
        if record.get(role) is None
        else _field(record[role], where, role, base_dir, json_strings)
        for role in _ROLES
    }
    return Triplet(fields["anchor"], fields["positive"], fields["negative"], source=where)


# --------------------------------------------------------------------------- readers

# A reader yields (where, record) pairs; a row that cannot even be parsed is yielded as the
# DataError describing it, so the caller decides whether to raise or to skip it.
_Rows = Iterator[tuple[str, Any]]


def _check_columns(columns: Sequence[str], name: str) -> list[str]:
    columns = list(columns)
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise DataError(f"{name}: duplicate column(s) {', '.join(map(repr, duplicates))}")
    unknown = [c for c in columns if c not in _ROLES]
    if unknown:
        raise DataError(
            f"{name}: unknown column(s) {', '.join(map(repr, unknown))}; {_EXPECTED_COLUMNS}"
        )
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {', '.join(map(repr, missing))}; {_EXPECTED_COLUMNS} "
            f"(found {columns})"
        )
    return columns


def _read_jsonl(path: Path, name: str) -> _Rows:
    for lineno, record, problem in json_lines(path, name):
        yield f"{name}:{lineno}", record if problem is None else DataError(problem)


def _read_csv(path: Path, name: str) -> _Rows:
    # Binary lines, decoded one by one as JSONL lines are, so a bad byte is reported at its line
    # and only the row holding it is lost. An undecodable line reaches csv with the bad bytes
    # replaced, which keeps the row boundaries, and that row becomes a DataError.
    undecodable: dict[int, UnicodeDecodeError] = {}

    def lines(f: Any) -> Iterator[str]:
        lineno = 0
        for chunk in f:
            # csv ends lines at '\r' too; the binary file ends them at b"\n" only
            for raw in chunk.splitlines(keepends=True):
                lineno += 1
                encoding = "utf-8-sig" if lineno == 1 else "utf-8"
                try:
                    yield raw.decode(encoding)
                except UnicodeDecodeError as error:
                    undecodable[lineno] = error
                    yield raw.decode(encoding, errors="replace")

    def bad_bytes(start: int, end: int) -> DataError | None:
        """The error for undecodable lines among ``start..end`` (one row), forgetting them."""
        found = sorted(n for n in undecodable if n <= end)
        if not found:
            return None
        error = undecodable[found[0]]
        for n in found:
            del undecodable[n]
        on = "" if found[0] == start else f" on line {found[0]} (the row spans {start}-{end})"
        return DataError(f"{name}:{start}: not valid UTF-8{on}: {error}")

    with path.open("rb") as f:
        reader = csv.reader(lines(f))
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{name}: empty file (expected a header row: {_EXPECTED_COLUMNS})")
            error = bad_bytes(1, reader.line_num)
            if error is not None:
                raise error
            columns = _check_columns(header, name)
            end = reader.line_num
            for row in reader:
                # a quoted field may span lines: a row starts on the line after the last one
                start, end = end + 1, reader.line_num
                where = f"{name}:{start}"
                error = bad_bytes(start, end)
                if error is not None:
                    yield where, error
                elif not row:
                    yield where, DataError(f"{where}: blank line")
                elif len(row) != len(columns):
                    yield (
                        where,
                        DataError(
                            f"{where}: expected {len(columns)} fields ({', '.join(columns)}), "
                            f"got {len(row)}"
                        ),
                    )
                else:
                    yield where, {c: v if v != "" else None for c, v in zip(columns, row)}
        except csv.Error as error:
            raise DataError(f"{name}:{reader.line_num + 1}: cannot read CSV: {error}") from error


def _read_parquet(path: Path, name: str) -> _Rows:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise DataError(f"{name}: cannot read Parquet file: {error}") from error
    with parquet:
        _check_columns(parquet.schema_arrow.names, name)
        index = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield f"{name}[{index}]", record
                index += 1


def _read_hf(dataset: Any, name: str) -> _Rows:
    columns = _check_columns(dataset.column_names, name)
    total = len(dataset)
    index = 0
    with tqdm(
        total=total, desc=f"reading {name}", unit="rows", disable=total < PROGRESS_MIN_ROWS
    ) as bar:
        for batch in dataset.iter(batch_size=1000):
            for values in zip(*(batch[c] for c in columns)):
                yield f"{name}[{index}]", dict(zip(columns, values))
                index += 1
            bar.update(len(batch[columns[0]]))


def _load_dataset(path: str, config: str | None, split: str | None, name: str) -> Any:
    """``datasets.load_dataset`` for a hub name or a local folder, split ``train`` by default."""
    try:
        return datasets.load_dataset(path, config, split=split or "train")
    except Exception as error:  # network, unknown name, bad config/split, unreadable files
        raise DataError(f"{name}: cannot load dataset: {error}") from error


def _load_local_dataset(folder: Path, config: str | None, split: str | None, name: str) -> Any:
    """A ``datasets.save_to_disk`` folder, else whatever ``datasets.load_dataset`` reads there."""
    if not ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()):
        return _load_dataset(os.fspath(folder), config, split, name)
    if config is not None:
        raise DataError(f"{name}: a save_to_disk folder has no configs; drop ':{config}'")
    loaded = datasets.load_from_disk(os.fspath(folder))
    if isinstance(loaded, datasets.DatasetDict):
        split = split or "train"
        if split not in loaded:
            raise DataError(f"{name}: no split {split!r}; the folder has {sorted(loaded)}")
        return loaded[split]
    if split is not None:
        raise DataError(f"{name}: a single-split save_to_disk folder; drop '@{split}'")
    return loaded


def _parse_dataset_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``NAME[:CONFIG][@SPLIT]`` → ``(NAME, CONFIG, SPLIT)``; hub names hold no ':' or '@'."""
    rest, at, split = spec.rpartition("@")
    if not at:
        rest, split = spec, None
    path, colon, config = rest.rpartition(":")
    if not colon:
        path, config = rest, None
    if not path or config == "" or split == "":
        raise DataError(f"{spec}: expected a file, a folder or NAME[:CONFIG][@SPLIT]")
    return path, config, split


def _open_source(name: str) -> tuple[_Rows, Path, bool]:
    """Rows of a source, the folder media paths resolve against, and whether JSON strings in
    fields are objects (true for columnar sources)."""
    path = Path(name).expanduser().absolute()  # media paths stay valid if the cwd changes
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(path, name), path.parent, False
        if suffix == ".csv":
            return _read_csv(path, name), path.parent, True
        if suffix == ".parquet":
            return _read_parquet(path, name), path.parent, True
        raise DataError(
            f"{name}: unsupported file extension {path.suffix!r}; expected .jsonl, .csv or "
            ".parquet, or a folder that datasets.load_dataset reads"
        )
    if path.is_dir():
        return _read_hf(_load_local_dataset(path, None, None, name), f"hf:{name}"), path, True
    base, config, split = _parse_dataset_spec(name)
    local = Path(base).expanduser().absolute()
    if local.is_file():
        raise DataError(
            f"{name}: ':CONFIG' and '@SPLIT' apply to datasets, not to the file {base!r}"
        )
    if local.is_dir():
        dataset = _load_local_dataset(local, config, split, name)
        return _read_hf(dataset, f"hf:{name}"), local, True
    if local.suffix.lower() in _FILE_LIKE_SUFFIXES or base.startswith((".", "/", "~")):
        raise DataError(f"{name}: file not found")
    return _read_hf(_load_dataset(base, config, split, name), f"hf:{name}"), Path.cwd(), True


def load_triplets(
    source: str | os.PathLike[str], *, skip_bad: bool = False, limit: int | None = None
) -> TripletSet:
    """Read and validate the triplets of ``source`` (see the module docstring for the formats).

    A malformed row raises :class:`DataError` naming ``file:line`` (or ``[row]``) and the cause;
    with ``skip_bad=True`` it is skipped and counted in ``skipped``/``skipped_examples`` instead.
    ``limit`` stops after that many valid triplets (for quick runs). A source without any valid
    triplet always raises.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    name = os.fspath(source)
    rows, base_dir, json_strings = _open_source(name)
    triplets: list[Triplet] = []
    skipped: list[str] = []
    with contextlib.closing(rows):  # closes the file when `limit` stops early
        for where, record in rows:
            try:
                if isinstance(record, DataError):
                    raise record
                triplets.append(_triplet(record, where, base_dir, json_strings))
            except DataError as error:
                if not skip_bad:
                    raise
                skipped.append(str(error))
                continue
            if limit is not None and len(triplets) >= limit:
                break
    if not triplets:
        if not skipped:
            raise DataError(f"{name}: no triplets (the source has no rows)")
        reasons = "\n  ".join(skipped[:MAX_SKIPPED_EXAMPLES])
        raise DataError(
            f"{name}: no valid triplets: all {len(skipped)} rows were malformed; first reasons:"
            f"\n  {reasons}"
        )
    return TripletSet(name, triplets, len(skipped), skipped[:MAX_SKIPPED_EXAMPLES])


# --------------------------------------------------------------------------- mixing


def parse_mix_arg(arg: str) -> tuple[str, float]:
    """Split a ``--mix SOURCE:WEIGHT`` value. The weight follows the *last* ':' (sources such as
    ``sentence-transformers/all-nli:triplet`` contain one) and must be a positive number.

    Raises :class:`DataError` (a ``ValueError``: argparse shows only a generic message for
    those, so parse the flag's strings after ``parse_args`` rather than with ``type=``).
    """
    source, colon, text = arg.rpartition(":")
    if not colon or not source:
        raise DataError(f"--mix expects SOURCE:WEIGHT (e.g. data.jsonl:0.8), got {arg!r}")
    try:
        weight = float(text)
    except ValueError:
        raise DataError(
            f"--mix expects SOURCE:WEIGHT, but {text!r} after the last ':' in {arg!r} "
            "is not a number"
        ) from None
    if not math.isfinite(weight) or weight <= 0:
        raise DataError(f"--mix weight must be a positive number, got {text!r} in {arg!r}")
    return source, weight


def _apportion(total: int, weights: list[Fraction]) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights``: each count is its exact share
    rounded down or up, and the counts sum to ``total`` (ties go to the earlier source)."""
    whole = sum(weights)
    shares = [total * w / whole for w in weights]
    counts = [math.floor(s) for s in shares]
    order = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _draw(items: list[Triplet], n: int, rng: random.Random) -> list[Triplet]:
    """``n`` items: whole shuffled passes while ``n`` exceeds the source, then a sample without
    replacement, so every item is used ``floor(n/len)`` or ``ceil(n/len)`` times."""
    out: list[Triplet] = []
    while n >= len(items):
        passed = list(items)
        rng.shuffle(passed)
        out += passed
        n -= len(items)
    return out + rng.sample(items, n)


def mix_sources(
    sets: Sequence[tuple[TripletSet, float]], *, total: int | None = None, seed: int = 0
) -> list[Triplet]:
    """Mix sources by ratio (e.g. 0.8 text triplets and 0.2 multimodal calibration pairs).

    Weights are normalised to shares. Source ``i`` contributes its share of ``total`` rounded
    by largest remainder, so the counts sum to ``total`` and each is within 1 of its exact share.
    ``total`` defaults to the largest size at which no source repeats an item:
    ``min(len_i / share_i)`` (the scarcest source relative to its share is used whole; the
    others are subsampled). Items are drawn without replacement; only a ``total`` beyond that
    repeats items, evenly. The result is shuffled, and fully determined by ``seed``.
    """
    if not sets:
        raise ValueError("mix_sources needs at least one (TripletSet, weight) pair")
    for triplet_set, weight in sets:
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(
                f"{triplet_set.name}: weight must be a positive number, got {weight!r}"
            )
        if not triplet_set.triplets:
            raise ValueError(f"{triplet_set.name}: no triplets to mix")
    weights = [Fraction(w) for _, w in sets]  # exact arithmetic: no share rounds past a source
    if total is None:
        whole = sum(weights)
        total = min(len(s.triplets) * whole // w for (s, _), w in zip(sets, weights))
    elif total < 1:
        raise ValueError(f"total must be at least 1, got {total}")
    rng = random.Random(seed)
    mixed: list[Triplet] = []
    for (triplet_set, _), count in zip(sets, _apportion(int(total), weights)):
        mixed += _draw(triplet_set.triplets, count, rng)
    rng.shuffle(mixed)
    return mixed


# --------------------------------------------------------------------------- batching


class TripletDataset(Dataset[Triplet]):
    """A map-style dataset over triplets, for a ``DataLoader`` with :func:`collate_triplets`.

    Items stay :class:`Triplet` objects (cheap to pickle into worker processes: media are
    paths); media are opened only in :func:`collate_triplets`.
    """

    def __init__(self, triplets: Sequence[Triplet]):
        self.triplets = list(triplets)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> Triplet:
        return self.triplets[index]


def collate_triplets(batch: Sequence[Triplet]) -> dict[str, list[Any] | None]:
    """Group a batch into encoder items: ``{"anchor": [...], "positive": [...], "negative":
    [...] | None, "source": [...]}``.

    ``negative`` holds only the negatives present (``None`` if there are none): the InfoNCE loss
    scores each anchor against the *pool* of all positives and hard negatives of the global
    batch, so a triplet without a negative just makes the pool smaller, and the negatives need
    no alignment with the anchors. ``anchor[i]``/``positive[i]`` stay paired by index.

    Fields are the triplets' own objects, unchanged: the encoder takes :class:`ImageRef`,
    :class:`~lcoemb.Audio` and :class:`~lcoemb.Video` as they are and opens their files chunk by
    chunk, so collating a global batch opens no file.
    """
    if not batch:
        raise ValueError("collate_triplets got an empty batch")

    def items(role: str) -> list[Any]:
        return [value for t in batch if (value := getattr(t, role)) is not None]

    return {
        "anchor": items("anchor"),
        "positive": items("positive"),
        "negative": items("negative") or None,
        "source": [t.source for t in batch],
    }
