"""Embedding one shard of an index: the single step every engine runs (the local loop in
:mod:`lcoemb.index.index`, the actors of :mod:`lcoemb.index.ray_engine`), so all engines write
the same shards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lcoemb.devices import dtype_name
from lcoemb.encoder import OmniEncoder
from lcoemb.index import store
from lcoemb.index.source import Entry
from lcoemb.inputs import InputError


def embed_shard(
    encoder: OmniEncoder,
    index_dir: Path,
    number: int,
    entries: Sequence[Entry],
    ids: Sequence[int],
    root: Path,
    *,
    batch_size: int | None = None,
    strict: bool = False,
) -> int:
    """Embed ``entries`` and write them as shard ``number`` with the errors met; return how many
    were embedded. The single step every engine runs, so all engines write the same shards."""
    failures: dict[int, str] = {}
    items: list[Any] = []
    for i, entry in enumerate(entries):
        try:
            items.append(entry.item(root))
        except InputError as error:  # the reason may open with the path the row names
            failures[i] = error.reason.removeprefix(f"{entry.path}: ")
            items.append(None)
    good = [i for i in range(len(entries)) if i not in failures]

    def failed(position: int, error: InputError) -> None:
        i = good[position]
        if strict:
            raise InputError(None, f"{entries[i].path}: {error.reason}") from error
        failures[i] = error.reason

    vectors = encoder.encode([items[i] for i in good], batch_size=batch_size, on_error=failed)
    if strict and failures:
        i = min(failures)
        raise InputError(None, f"{entries[i].path}: {failures[i]}")
    kept = [p for p, i in enumerate(good) if i not in failures]
    errors = [
        {
            "path": entries[i].path,
            "error": failures[i],
            "key": entries[i].key,
            "content_hash": entries[i].content_hash,
        }
        for i in sorted(failures)
    ]
    rows = [entries[good[p]] for p in kept]
    store.write_shard(
        index_dir,
        number,
        rows,
        [ids[good[p]] for p in kept],
        vectors[kept],
        errors,
        dtype=dtype_name(encoder.dtype),
    )
    return len(rows)
