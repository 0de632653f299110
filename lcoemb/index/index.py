"""The :class:`Index`: a collection's vectors in Parquet shards, a FAISS index over them, and the
model that embeds its queries.

An index folder holds ``manifest.json`` (the model, adapter, dimension, prompt settings, counts
and times), ``shards/shard-NNNNN.parquet`` (one row per item with its vector, see
:mod:`lcoemb.index.store`), ``index.faiss`` and ``errors.jsonl``. Everything but the FAISS file
is plain JSON and Parquet, readable without lcoemb.

A build walks the source (:mod:`lcoemb.index.source`), cuts the sorted entries into shards of
``shard_size`` and embeds one shard at a time; each shard is written atomically with the errors
met while embedding it. The plan (which entries, in which shards) is fingerprinted in the
manifest, so re-running an interrupted build skips the shards already written and gives the same
index as an uninterrupted one. An update re-walks the source, embeds only new or changed items
(by content hash), drops deleted ones and rebuilds the FAISS index from the shards. Each shard
records the dtype its vectors were computed in; a resumed build or an update computes in that
dtype and refuses another, so an index never mixes two precisions.

Documents are embedded without instruction; queries get the index's query instruction, as
``encode`` and the mteb wrapper treat query-side instructions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from lcoemb import __version__
from lcoemb.devices import dtype_name
from lcoemb.encoder import OmniEncoder, parse_dtype
from lcoemb.index import ann, store
from lcoemb.index.shard import embed_shard
from lcoemb.index.source import DEFAULT_PASSAGE_CHARS, Entry, Walk, walk_source
from lcoemb.mini.registry import DEFAULT_MODEL, EMBEDDED

DEFAULT_SHARD_SIZE = 256
ENGINES = ("local", "ray")

#: the settings a resumed build or an update must share with the index (else it is refused)
IDENTITY = ("model", "adapter", "source", "passage_chars", "shard_size", "index_type")


class IndexSettingsError(ValueError):
    """A build or update whose model, adapter or settings are not the index's own."""


@dataclass
class Hit:
    """One search result: the item's id, its score (inner product of unit vectors: the cosine)
    and its row's metadata (``path``, ``modality``, ``passage``, ``start``, ``end``, ``text``,
    ``content_hash``, ``size``, ``mtime``, ``key``)."""

    id: int
    score: float
    row: dict[str, Any]

    @property
    def path(self) -> str:
        return self.row["path"]

    @property
    def modality(self) -> str:
        return self.row["modality"]


@dataclass
class BuildSummary:
    """What a build or update did: items in the index per modality, items embedded in this run,
    files skipped by type, errors, items removed, and the time it took."""

    modalities: dict[str, int]
    embedded: int
    skipped: dict[str, int]
    errors: int
    seconds: float
    removed: int = 0
    reused: int = 0

    @property
    def items(self) -> int:
        return sum(self.modalities.values())

    def format(self) -> str:
        rate = self.embedded / self.seconds if self.seconds > 0 else 0.0
        per = ", ".join(f"{m} {n}" for m, n in sorted(self.modalities.items())) or "none"
        skipped = sum(self.skipped.values())
        kinds = ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(self.skipped.items()))
        lines = [
            f"items in the index: {self.items} ({per})",
            f"embedded now: {self.embedded} in {self.seconds:.1f} s ({rate:.2f} items/s)"
            + (f"; kept {self.reused} unchanged" if self.reused else "")
            + (f"; removed {self.removed}" if self.removed else ""),
            f"skipped (other file types): {skipped}" + (f" ({kinds})" if skipped else ""),
            f"errors: {self.errors}" + (" (see errors.jsonl)" if self.errors else ""),
        ]
        return "\n".join(lines)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_id(model: str | os.PathLike[str]) -> str:
    """How the manifest names a model: an embedded or hub name as given, a folder absolute."""
    name = os.fspath(model)
    if name in EMBEDDED or not os.path.exists(name):
        return name
    return os.path.abspath(name)


def adapter_id(adapter: str | os.PathLike[str] | None) -> str | None:
    return None if adapter is None else os.path.abspath(os.fspath(adapter))


def plan_fingerprint(entries: Sequence[Entry], shard_size: int) -> str:
    """A hash of what each shard holds (keys and content hashes, in order): a resumed build may
    keep its written shards only if the source still cuts into the same shards."""
    digest = hashlib.sha256(f"{shard_size}\n".encode())
    for e in entries:
        digest.update(f"{e.key}\x1f{e.content_hash}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _chunks(entries: Sequence[Entry], size: int) -> list[list[Entry]]:
    return [list(entries[i : i + size]) for i in range(0, len(entries), size)]


class Index:
    """A searchable collection (see the module docstring). Build one with :meth:`build`, open
    one with :meth:`load`, query it with :meth:`search`, refresh it with :meth:`update`."""

    def __init__(self, path: str | os.PathLike[str], *, encoder: OmniEncoder | None = None):
        self.path = Path(path)
        self.manifest = store.read_manifest(self.path)
        if self.manifest.get("status") != "complete":
            raise store.IndexFormatError(
                f"{self.path}: the index was interrupted while "
                f"{self.manifest.get('status', 'being written')}; run the same "
                "`lcoemb index build` (or `lcoemb index update`) again to finish it"
            )
        self.encoder = encoder
        self.summary: BuildSummary | None = None
        rows, _, _ = store.read_rows(self.path, vectors=False)
        self._adopt(self.manifest, rows, ann.load_ann(self.path / store.FAISS_FILE))

    @classmethod
    def _finished(
        cls,
        path: Path,
        state: tuple[dict[str, Any], pa.Table, Any],
        encoder: OmniEncoder | None,
    ) -> Index:
        """An index whose build just ended: its state is already in memory (from
        :func:`_finish`), so nothing is read back from disk."""
        index = cls.__new__(cls)
        index.path, index.encoder, index.summary = path, encoder, None
        index._adopt(*state)
        return index

    def _adopt(self, manifest: dict[str, Any], rows: pa.Table, faiss_index: Any) -> None:
        """Take a manifest, the rows (without vectors) and the FAISS index as this index's
        state, with the id lookup that :meth:`row` uses."""
        self.manifest, self.rows, self.ann = manifest, rows, faiss_index
        ids = rows.column("id").to_numpy() if rows.num_rows else np.zeros(0, np.int64)
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]

    # ------------------------------------------------------------------ opening

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, encoder: OmniEncoder | None = None) -> Index:
        """Open an index folder. The query model loads on the first :meth:`search` (from the
        manifest's model and adapter) unless ``encoder`` is given."""
        return cls(path, encoder=encoder)

    def __len__(self) -> int:
        return self.rows.num_rows

    def get_encoder(self, *, device: str | None = None, dtype: str | None = None) -> OmniEncoder:
        """The index's own model (loaded once), in the dtype its documents were embedded in
        unless ``dtype`` says otherwise, so that queries and documents match."""
        if self.encoder is None:
            self.encoder = OmniEncoder.from_pretrained(
                self.manifest["model"],
                adapter=self.manifest["adapter"],
                device=device,
                dtype=dtype or self.manifest.get("dtype"),
            )
        return self.encoder

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        source: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        adapter: str | os.PathLike[str] | None = None,
        encoder: OmniEncoder | None = None,
        index_type: str = ann.DEFAULT_FACTORY,
        instruction: str | None = None,
        passage_chars: int = DEFAULT_PASSAGE_CHARS,
        shard_size: int = DEFAULT_SHARD_SIZE,
        batch_size: int | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        strict: bool = False,
        show_progress: bool = False,
        device: str | None = None,
        dtype: str | None = None,
    ) -> Index:
        """Walk ``source`` (a folder or an items JSONL), embed every item with ``model`` (and
        ``adapter``) and write the index folder ``output``; return the opened index, whose
        ``summary`` says what was done.

        Unreadable files are recorded in ``errors.jsonl`` and left out (``strict`` makes the
        first one fatal). Re-running the same build after an interruption continues from the
        last written shard, in the dtype of the shards already written (another ``dtype`` is
        refused). ``engine="ray"`` embeds the shards on a Ray cluster
        (``ray_address``, default: a local one); the index is the same. ``instruction`` is the
        query instruction that :meth:`search` applies; documents are embedded without it.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if shard_size < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("shard_size and batch_size must be >= 1")
        started = time.perf_counter()
        out = Path(output)
        settings = {
            "model": model_id(model),
            "adapter": adapter_id(adapter),
            "source": os.path.abspath(os.fspath(source)),
            "passage_chars": passage_chars,
            "shard_size": shard_size,
            "index_type": index_type,
        }
        previous = _previous_build(out, settings)
        walk = walk_source(
            source, passage_chars=passage_chars, show_progress=show_progress, strict=strict
        )
        plan = plan_fingerprint(walk.entries, shard_size)
        if previous is not None and previous.get("plan") != plan:
            if show_progress:
                print(f"{out}: the source changed since the interrupted build; starting over")
            for _, path in store.list_shards(out):
                path.unlink()
        store.remove_temp_files(out)
        # the shards kept fix the precision of the rest: one index holds one dtype
        recorded = _shards_dtype(out, previous.get("dtype") if previous else None)
        dtype = _refuse_other_dtype(out, recorded, dtype)
        if encoder is not None:
            _refuse_other_dtype(out, recorded, encoder.dtype)
        created = previous.get("created") if previous else None
        manifest = {
            "format": store.FORMAT,
            "format_version": store.FORMAT_VERSION,
            "lcoemb_version": __version__,
            **settings,
            "source_kind": "jsonl" if Path(settings["source"]).is_file() else "folder",
            "prompts": {"query_instruction": instruction, "document_instruction": None},
            "normalized": True,
            # known once a model has loaded (the device picks the default): set again below
            "dtype": dtype_name(encoder.dtype) if encoder is not None else dtype,
            "status": "building",
            "plan": plan,
            "next_id": len(walk.entries),
            "created": created or _now(),
            "updated": _now(),
        }
        out.mkdir(parents=True, exist_ok=True)
        store.write_manifest(out, manifest)
        chunks = _chunks(walk.entries, shard_size)
        done = {n for n, _ in store.list_shards(out)}
        todo = [n for n in range(len(chunks)) if n not in done]
        reused = sum(len(chunks[n]) for n in done if n < len(chunks))
        jobs = [
            (n, chunks[n], range(n * shard_size, n * shard_size + len(chunks[n]))) for n in todo
        ]
        if engine == "ray":
            from lcoemb.index.ray_engine import embed_shards_on_ray

            embedded, ray_dtype = embed_shards_on_ray(
                jobs,
                out,
                walk.root,
                model=model,
                adapter=adapter,
                device=device,
                dtype=dtype,
                batch_size=batch_size,
                strict=strict,
                address=ray_address,
                show_progress=show_progress,
            )
        else:
            if encoder is None:
                encoder = OmniEncoder.from_pretrained(
                    model, adapter=adapter, device=device, dtype=dtype
                )
                _refuse_other_dtype(out, recorded, encoder.dtype)  # "auto" is known only now
            embedded = _embed_locally(
                encoder, out, jobs, walk.root, batch_size, strict, show_progress
            )
        if engine == "local":
            manifest["dtype"] = dtype_name(encoder.dtype)
        else:  # no actor ran when every shard was already written by an earlier run
            _refuse_other_dtype(out, recorded, ray_dtype)
            manifest["dtype"] = ray_dtype or manifest["dtype"] or recorded
        local = encoder if engine == "local" else None
        index = cls._finished(out, _finish(out, manifest, walk, local), local)
        index.summary = BuildSummary(
            modalities=index.modality_counts(),
            embedded=embedded,
            skipped=walk.skipped,
            errors=index.manifest["errors"],
            seconds=time.perf_counter() - started,
            reused=reused,
        )
        return index

    # ------------------------------------------------------------------ updating

    def update(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
        strict: bool = False,
        show_progress: bool = False,
        device: str | None = None,
        dtype: str | None = None,
    ) -> BuildSummary:
        """Re-walk the source: embed new and changed items (by content hash), drop deleted ones,
        keep the rest, and rebuild the FAISS index. ``model``/``adapter``, when given, must be
        the index's own: vectors of two models in one index would be meaningless. New items are
        embedded in the dtype of the index's vectors; another ``dtype`` is refused."""
        started = time.perf_counter()
        m = self.manifest
        given = {"model": model, "adapter": adapter}
        differ = [
            f"{k} {m[k]!r} (the index) vs {v!r}"
            for k, v in (
                ("model", model_id(model) if model else None),
                ("adapter", adapter_id(adapter)),
            )
            if given[k] is not None and m[k] != v
        ]
        if differ:
            raise IndexSettingsError(
                f"{self.path} was built with another model or adapter: {'; '.join(differ)}. "
                "Build a new index for this model instead"
            )
        walk = walk_source(
            m["source"],
            passage_chars=m["passage_chars"],
            show_progress=show_progress,
            strict=strict,
        )
        rows = self.rows
        old = dict(
            zip(
                rows.column("key").to_pylist(),
                zip(rows.column("content_hash").to_pylist(), rows.column("id").to_pylist()),
            )
        )
        old_errors = {e.get("key"): e for e in _shard_errors(self.path) if e.get("key")}
        current = {e.key: e.content_hash for e in walk.entries}
        keep_errors = {k for k, e in old_errors.items() if current.get(k) == e.get("content_hash")}
        new = [
            e
            for e in walk.entries
            if old.get(e.key, (None,))[0] != e.content_hash and e.key not in keep_errors
        ]
        drop = [i for k, (h, i) in old.items() if current.get(k) != h]
        if new:  # refuse another dtype before changing anything
            self._encoder_in_its_dtype(device, dtype)
        self.manifest = m = {**m, "status": "updating", "updated": _now()}
        store.write_manifest(self.path, m)
        removed = self.remove(drop, keep_error_keys=keep_errors, finish=False)
        embedded = self.add(
            new,
            root=walk.root,
            batch_size=batch_size,
            strict=strict,
            show_progress=show_progress,
            device=device,
            dtype=dtype,
            finish=False,
        )
        self._adopt(*_finish(self.path, self.manifest, walk, self.encoder))
        self.summary = BuildSummary(
            modalities=self.modality_counts(),
            embedded=embedded,
            skipped=walk.skipped,
            errors=self.manifest["errors"],
            seconds=time.perf_counter() - started,
            removed=removed,
            reused=len(old) - removed,
        )
        return self.summary

    def add(
        self,
        entries: Sequence[Entry],
        *,
        root: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
        strict: bool = False,
        show_progress: bool = False,
        device: str | None = None,
        dtype: str | None = None,
        finish: bool = True,
    ) -> int:
        """Embed ``entries`` (from :func:`~lcoemb.index.source.walk_source`) into new shards
        with fresh ids; return how many were embedded. ``root`` is where their paths resolve
        (default: the index's source folder)."""
        if not entries:
            return 0
        m = self.manifest
        base = Path(root) if root is not None else source_root(m["source"])
        numbers = [n for n, _ in store.list_shards(self.path)]
        first = (max(numbers) + 1) if numbers else 0
        next_id = int(m["next_id"])
        jobs = []
        for j, chunk in enumerate(_chunks(entries, m["shard_size"])):
            jobs.append((first + j, chunk, range(next_id, next_id + len(chunk))))
            next_id += len(chunk)
        self.manifest = m = {**m, "next_id": next_id}
        store.write_manifest(self.path, m)
        encoder = self._encoder_in_its_dtype(device, dtype)
        embedded = _embed_locally(encoder, self.path, jobs, base, batch_size, strict, show_progress)
        if finish:
            self._rebuild()
        return embedded

    def _encoder_in_its_dtype(self, device: str | None, dtype: str | None) -> OmniEncoder:
        """The index's model, computing in the dtype of the vectors it holds (refusing another:
        one index holds one precision)."""
        recorded = _shards_dtype(self.path, self.manifest.get("dtype"))
        encoder = self.get_encoder(
            device=device, dtype=_refuse_other_dtype(self.path, recorded, dtype)
        )
        _refuse_other_dtype(self.path, recorded, encoder.dtype)
        return encoder

    def remove(
        self,
        ids: Sequence[int],
        *,
        keep_error_keys: set[str] | None = None,
        finish: bool = True,
    ) -> int:
        """Delete the rows with these ids from their shards (each shard rewritten atomically);
        return how many were removed. Errors recorded in the shards are dropped too, except
        those whose key is in ``keep_error_keys`` (files still unreadable and unchanged)."""
        drop = set(int(i) for i in ids)
        removed = 0
        for number, path in store.list_shards(self.path):
            table, vectors, errors = store.read_shard(path)
            keep_errors = [e for e in errors if keep_error_keys and e.get("key") in keep_error_keys]
            mask = [i not in drop for i in table.column("id").to_pylist()]
            if all(mask) and len(keep_errors) == len(errors):
                continue
            removed += mask.count(False)
            kept = table.filter(pa.array(mask, pa.bool_()))
            if kept.num_rows == 0 and not keep_errors:
                path.unlink()
                continue
            store.write_shard(
                self.path,
                number,
                _entries_of(kept),
                kept.column("id").to_pylist(),
                vectors[np.asarray(mask, bool)],
                keep_errors,
                dtype=store.shard_dtype(path),
            )
        if finish:
            self._rebuild()
        return removed

    def _rebuild(self) -> None:
        walk = Walk(root=source_root(self.manifest["source"]), entries=[], skipped={}, errors=[])
        walk.errors = [e for e in _read_errors(self.path) if "key" not in e]
        self._adopt(*_finish(self.path, self.manifest, walk, self.encoder))

    # ------------------------------------------------------------------ searching

    def modality_counts(self) -> dict[str, int]:
        return dict(Counter(self.rows.column("modality").to_pylist()))

    def search(
        self,
        queries: Sequence[Any] | Any,
        k: int = 10,
        *,
        modalities: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best items for each query (text, a media item, or a list of parts for one
        interleaved query; as :meth:`OmniEncoder.encode` takes them), best first. The index's
        query instruction is applied. ``modalities`` keeps only items of those modalities."""
        if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
            queries = [queries]
        vectors = self.get_encoder().encode(
            list(queries),
            batch_size=batch_size,
            instruction=self.manifest["prompts"]["query_instruction"],
        )
        return self.search_vectors(vectors, k, modalities=modalities)

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, *, modalities: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """:meth:`search` for queries already embedded (``(m, d)`` unit vectors from this
        index's model, with its query instruction), e.g. by a server that batches them."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        allowed = None
        if modalities is not None:
            unknown = set(modalities) - {"text", "image", "audio", "video", "interleaved"}
            if unknown:
                raise ValueError(f"unknown modalities {sorted(unknown)}")
            keep = pc.is_in(self.rows.column("modality"), value_set=pa.array(list(modalities)))
            allowed = self.rows.column("id").filter(keep).to_numpy()
        scores, ids = ann.search_ann(self.ann, vectors, k, allowed_ids=allowed)
        return [
            [Hit(int(i), float(s), self.row(int(i))) for s, i in zip(qs, qi) if i >= 0]
            for qs, qi in zip(scores, ids)
        ]

    def row(self, item_id: int) -> dict[str, Any]:
        """The metadata of item ``item_id`` (``KeyError`` if the index has none)."""
        pos = int(np.searchsorted(self._sorted_ids, item_id))
        if pos >= len(self._sorted_ids) or self._sorted_ids[pos] != item_id:
            raise KeyError(f"no item with id {item_id} in {self.path}")
        return self.rows.slice(int(self._order[pos]), 1).to_pylist()[0]


# ---------------------------------------------------------------------- helpers


def source_root(source: str) -> Path:
    """The folder an index's paths are relative to: the source folder, or a JSONL's folder."""
    path = Path(source)
    return path.parent if path.is_file() else path


def _shards_dtype(out: Path, fallback: str | None) -> str | None:
    """The one dtype the shards in ``out`` were computed in, None when it has no shards;
    ``fallback`` (the manifest's) for shards written before lcoemb recorded it. Shards of two
    dtypes are refused, naming them."""
    found = store.shard_dtypes(out)
    known = sorted(d for d in found if d is not None)
    if len(known) > 1:
        detail = "; ".join(f"{d}: shards {found[d]}" for d in known)
        raise store.IndexFormatError(
            f"{out}: its shards were computed in different dtypes ({detail}); build it again"
        )
    return known[0] if known else (fallback if found else None)


def _refuse_other_dtype(
    out: Path, recorded: str | None, dtype: torch.dtype | str | None
) -> torch.dtype | str | None:
    """The dtype to compute ``out``'s new vectors in: ``dtype``, or ``recorded`` (the dtype of
    its vectors so far) when none is given. A ``dtype`` other than ``recorded`` is refused: an
    index holds one precision, and its queries are embedded in it."""
    parsed = parse_dtype(dtype)
    if recorded is None or parsed is None:
        return dtype or recorded
    name = dtype_name(parsed) if isinstance(parsed, torch.dtype) else None  # "auto": later
    if name is not None and name != recorded:
        raise IndexSettingsError(
            f"{out}: its vectors so far were computed in {recorded}, and this run would compute "
            f"in {name}. One index holds one precision: leave out --dtype (it then uses "
            f"{recorded}), or build a new index"
        )
    return dtype


def _previous_build(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an interrupted build of the same settings in ``out`` (to resume), None
    for a new or empty folder; refuse anything else, naming what differs."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise IndexSettingsError(f"{out} exists and is not a folder")
    if not (out / store.MANIFEST).exists():
        if any(out.iterdir()):
            raise IndexSettingsError(
                f"{out} is not empty and holds no lcoemb index; choose another --output"
            )
        return None
    previous = store.read_manifest(out)
    if previous.get("status") == "complete":
        raise IndexSettingsError(
            f"{out} already holds a finished index; use `lcoemb index update {out}` to bring it "
            "up to date, or choose another --output"
        )
    differ = [
        f"{k}: {previous.get(k)!r} -> {v!r}" for k, v in settings.items() if previous.get(k) != v
    ]
    if differ:
        raise IndexSettingsError(
            f"{out} holds an interrupted build with other settings ({'; '.join(differ)}); "
            "re-run it with its own settings, or choose another --output"
        )
    return previous


def _embed_locally(
    encoder: OmniEncoder,
    out: Path,
    jobs: Sequence[tuple[int, Sequence[Entry], Sequence[int]]],
    root: Path,
    batch_size: int | None,
    strict: bool,
    show_progress: bool,
) -> int:
    total = sum(len(entries) for _, entries, _ in jobs)
    embedded = 0
    with tqdm(total=total, desc="Embedding", unit="item", disable=not show_progress) as bar:
        for number, entries, ids in jobs:
            embedded += embed_shard(
                encoder, out, number, entries, ids, root, batch_size=batch_size, strict=strict
            )
            bar.update(len(entries))
    return embedded


def _shard_errors(index_dir: Path) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    for _, path in store.list_shards(index_dir):
        errors += store.read_shard(path, vectors=False)[2]
    return errors


def _read_errors(index_dir: Path) -> list[dict[str, str]]:
    path = index_dir / store.ERRORS
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _entries_of(table: pa.Table) -> list[Entry]:
    """Rows back as entries (for rewriting a shard): the row columns are Entry's fields."""
    names = {f.name for f in dataclasses.fields(Entry)}
    return [Entry(**{k: v for k, v in row.items() if k in names}) for row in table.to_pylist()]


def _finish(
    out: Path, manifest: dict[str, Any], walk: Walk, encoder: OmniEncoder | None
) -> tuple[dict[str, Any], pa.Table, Any]:
    """Build the FAISS index from every shard, write ``errors.jsonl`` and mark the manifest
    complete: the one place a build and an update end. Returns the index's new state (the
    manifest, the rows without vectors, the FAISS index) for :meth:`Index._adopt`."""
    rows, vectors, shard_errors = store.read_rows(out)
    ids = rows.column("id").to_numpy() if rows.num_rows else np.zeros(0, np.int64)
    dim = vectors.shape[1] if vectors is not None and vectors.ndim == 2 and len(vectors) else None
    if dim is None and encoder is not None:
        dim = encoder.embedding_dim
    if vectors is None or len(vectors) == 0:
        vectors = np.zeros((0, dim or manifest.get("dimension") or 1), np.float32)
    index = ann.build_ann(vectors, ids, manifest["index_type"])
    ann.save_ann(index, out / store.FAISS_FILE)
    errors = list(walk.errors) + shard_errors
    store.write_errors(out, errors)
    counts = Counter(rows.column("modality").to_pylist())
    final = {
        **manifest,
        "dimension": int(vectors.shape[1]),
        "items": rows.num_rows,
        "modalities": dict(sorted(counts.items())),
        "skipped": dict(sorted(walk.skipped.items())),
        "errors": len(errors),
        "status": "complete",
        "updated": _now(),
    }
    final.pop("plan", None)
    store.write_manifest(out, final)
    return final, rows, index
