"""The on-disk index folder, in plain formats that other tools read without lcoemb::

    INDEX/
      manifest.json              what was indexed, how, with which model (JSON)
      shards/shard-00000.parquet one row per item: its metadata and its vector
      errors.jsonl               items that could not be embedded, one JSON object per line
      index.faiss                the ANN index over all vectors (rebuilt from the shards)

A shard's vectors are a ``fixed_size_list<float32>[dim]`` column, so pandas, DuckDB or Polars
get them as arrays and lcoemb reads them back as one ``(n, dim)`` array without copying.

Every file is written atomically (a temporary sibling, fsync, ``os.replace``): a build killed at
any moment leaves each file either complete or absent, which is what lets a re-run resume from
the shards on disk. The errors met while embedding a shard are stored in that shard's Parquet
metadata rather than in a separate file, so the shard and its errors appear in one rename and a
resumed build neither loses nor repeats them. Readers treat every file as untrusted: a missing,
truncated or foreign file raises :class:`IndexFormatError` naming it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lcoemb.index.source import Entry

MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
ERRORS = "errors.jsonl"
FAISS_FILE = "index.faiss"
FORMAT = "lcoemb-index"
FORMAT_VERSION = 1

#: Parquet key-value metadata holding a shard's errors (a JSON list).
ERRORS_KEY = b"lcoemb.errors"
#: Parquet key-value metadata holding the dtype the model computed a shard's vectors in
#: (``"bfloat16"``), so a resumed or updated build never mixes two precisions in one index.
DTYPE_KEY = b"lcoemb.dtype"
VECTOR = "vector"
TEMP_SUFFIX = ".tmp"
_SHARD_NAME = re.compile(r"shard-(\d+)\.parquet")

# The row columns are Entry's fields of the same names (plus the id), so a row converts back to
# an Entry; Entry.record is not stored (a JSONL line is re-read from its file on update).
_ROW_FIELDS = [
    pa.field("id", pa.int64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime", pa.float64(), nullable=False),
    pa.field("passage", pa.int32()),
    pa.field("start", pa.int64()),
    pa.field("end", pa.int64()),
    pa.field("text", pa.string()),
]


class IndexFormatError(ValueError):
    """A folder that is not an lcoemb index, or a file in it that is missing, corrupt or of
    another format; the message names the file."""


def shard_schema(dim: int) -> pa.Schema:
    """The columns of a shard whose vectors have ``dim`` dimensions."""
    return pa.schema([*_ROW_FIELDS, pa.field(VECTOR, pa.list_(pa.float32(), dim), nullable=False)])


def shard_path(index_dir: Path, number: int) -> Path:
    return Path(index_dir) / SHARDS_DIR / f"shard-{number:05d}.parquet"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, all or nothing.

    The temporary file is a hidden sibling (same file system, so the rename is atomic; hidden, so
    :func:`list_shards` never mistakes it for a shard) that :func:`remove_temp_files` clears
    after a kill. The folder is fsynced too, or the rename itself could be lost in a crash.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with tmp.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(
    index_dir: Path,
    number: int,
    entries: Sequence[Entry],
    ids: Sequence[int],
    vectors: np.ndarray,
    errors: Sequence[dict[str, str]] = (),
    dtype: str | None = None,
) -> Path:
    """Write shard ``number`` (rows, vectors, and the errors met embedding it) atomically.

    ``vectors`` is ``(len(entries), dim)``, converted to float32. A shard may have no rows, when
    every item of it failed: it still records those errors, and marks the shard as done.
    ``dtype`` is the precision the model computed the vectors in, kept in the shard's metadata
    (see :func:`shard_dtypes`).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] < 1 or not len(vectors) == len(entries) == len(ids):
        raise ValueError(
            f"shard {number}: expected vectors of shape ({len(entries)}, dim) for "
            f"{len(entries)} entries and {len(ids)} ids, got {vectors.shape}"
        )
    dim = vectors.shape[1]
    columns: dict[str, Any] = {"id": list(ids)}
    for field in _ROW_FIELDS[1:]:
        columns[field.name] = [getattr(entry, field.name) for entry in entries]
    columns[VECTOR] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    metadata = {ERRORS_KEY: json.dumps(list(errors), ensure_ascii=False)}
    if dtype is not None:
        metadata[DTYPE_KEY] = dtype
    table = pa.Table.from_pydict(columns, schema=shard_schema(dim).with_metadata(metadata))
    path = shard_path(index_dir, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: pq.write_table(table, f))
    return path


def list_shards(index_dir: Path) -> list[tuple[int, Path]]:
    """The complete shards, by number. Only names :func:`shard_path` gives count, so temporary
    files and stray copies (``shard-1.parquet``) are never read as shards."""
    folder = Path(index_dir) / SHARDS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _SHARD_NAME.fullmatch(path.name)
        if match and path == shard_path(index_dir, int(match.group(1))) and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def shard_dtype(path: Path) -> str | None:
    """The dtype shard ``path``'s vectors were computed in (``None`` for shards written before
    lcoemb recorded it). Reads only the Parquet footer."""
    try:
        dtype = (pq.read_schema(path).metadata or {}).get(DTYPE_KEY)
    except (OSError, pa.ArrowException) as error:
        raise IndexFormatError(
            f"{path}: cannot read shard (truncated or not Parquet): {error}"
        ) from None
    return dtype.decode() if dtype is not None else None


def shard_dtypes(index_dir: Path) -> dict[str | None, list[int]]:
    """The dtypes of the complete shards (:func:`shard_dtype`), each with its shard numbers."""
    found: dict[str | None, list[int]] = {}
    for number, path in list_shards(index_dir):
        found.setdefault(shard_dtype(path), []).append(number)
    return found


def read_shard(
    path: Path, *, vectors: bool = True
) -> tuple[pa.Table, np.ndarray | None, list[dict[str, str]]]:
    """A shard's rows (without the vector column), its ``(n, dim)`` float32 vectors (None when
    ``vectors=False``, which skips reading them) and its errors.

    The vectors are a read-only view of the Arrow buffer when the column is one chunk (the
    usual case), so reading an index does not hold two copies of it.
    """
    try:
        with pq.ParquetFile(path) as parquet:
            schema = parquet.schema_arrow
            names = [name for name in schema.names if vectors or name != VECTOR]
            table = parquet.read(columns=names)
    except (OSError, pa.ArrowException) as error:
        raise IndexFormatError(
            f"{path}: cannot read shard (truncated or not Parquet): {error}"
        ) from None
    vector_type = schema.field(VECTOR).type if VECTOR in schema.names else None
    if not (
        isinstance(vector_type, pa.FixedSizeListType)
        and schema.remove_metadata().equals(shard_schema(vector_type.list_size))
    ):
        raise IndexFormatError(f"{path}: not an lcoemb shard; its columns are {schema}")
    try:
        errors = json.loads((schema.metadata or {}).get(ERRORS_KEY, b"[]"))
    except ValueError as error:
        raise IndexFormatError(f"{path}: its errors metadata is not valid JSON: {error}") from None
    array = None
    if vectors:
        column = table.column(VECTOR)
        chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        flat = chunk.flatten().to_numpy(zero_copy_only=False)
        array = flat.reshape(len(chunk), vector_type.list_size)
        table = table.drop_columns([VECTOR])
    return table.replace_schema_metadata(None), array, errors


def read_rows(
    index_dir: Path, *, vectors: bool = True
) -> tuple[pa.Table, np.ndarray | None, list[dict[str, str]]]:
    """Every shard's rows, vectors and errors, concatenated in shard order.

    With no shards the rows are empty and the vectors ``(0, 0)``: the dimension is then known
    only from the manifest or the model."""
    tables, arrays, errors = [], [], []
    for _, path in list_shards(index_dir):
        table, array, shard_errors = read_shard(path, vectors=vectors)
        if arrays and array is not None and array.shape[1] != arrays[0].shape[1]:
            raise IndexFormatError(
                f"{path}: vectors of dimension {array.shape[1]}, but the index's earlier shards "
                f"have {arrays[0].shape[1]}"
            )
        tables.append(table)
        arrays.append(array)
        errors += shard_errors
    rows = pa.concat_tables(tables) if tables else pa.schema(_ROW_FIELDS).empty_table()
    if not vectors:
        return rows, None, errors
    if not arrays:
        return rows, np.zeros((0, 0), np.float32), errors
    return rows, arrays[0] if len(arrays) == 1 else np.concatenate(arrays), errors


def write_manifest(index_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically, marked with :data:`FORMAT` and :data:`FORMAT_VERSION`
    (which :func:`read_manifest` requires) unless the manifest already has them."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(Path(index_dir) / MANIFEST, lambda f: f.write(text.encode("utf-8")))


def read_manifest(index_dir: Path) -> dict[str, Any]:
    """The manifest; :class:`IndexFormatError` naming the file if it is missing, not JSON, not
    an lcoemb index's, or of a format version this lcoemb does not read."""
    path = Path(index_dir) / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{path}: not found, so {index_dir} is not an lcoemb index")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise IndexFormatError(f"{path}: cannot be read as JSON (truncated?): {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f'{path}: not an lcoemb index manifest (no "format": "{FORMAT}")')
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {manifest.get('format_version')!r}; this lcoemb "
            f"reads version {FORMAT_VERSION} (an index from a newer lcoemb needs that version)"
        )
    return manifest


def write_errors(index_dir: Path, errors: Sequence[dict[str, str]]) -> None:
    """Write ``errors.jsonl`` atomically: one JSON object per line (an empty file for none)."""
    text = "".join(json.dumps(error, ensure_ascii=False) + "\n" for error in errors)
    atomic_write(Path(index_dir) / ERRORS, lambda f: f.write(text.encode("utf-8")))


def remove_temp_files(index_dir: Path) -> list[Path]:
    """Delete the temporary files of writes that never finished (a killed build); return them."""
    removed = []
    for folder in (Path(index_dir), Path(index_dir) / SHARDS_DIR):
        for path in sorted(folder.glob(f".*{TEMP_SUFFIX}")):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
