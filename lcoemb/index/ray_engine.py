"""``lcoemb index build --engine ray``: embed an index's shards on a Ray cluster with Ray Data.

The shards still to write become a Ray dataset (one row per shard: its number, ids and
entries). ``map_batches`` runs them through an actor pool, one :class:`~lcoemb.OmniEncoder` per
actor (and one GPU per actor where the cluster has GPUs); each actor writes its shards with
:func:`lcoemb.index.shard.embed_shard`, the same step the local engine runs, into the index
folder, which must therefore be on storage every node sees. The driver then builds the FAISS
index from the shards, so the output is the local engine's, vector for vector.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lcoemb.devices import dtype_name
from lcoemb.encoder import OmniEncoder
from lcoemb.index.shard import embed_shard
from lcoemb.index.source import Entry

#: CPUs each actor reserves (its torch threads); GPUs: one per actor when the cluster has any.
CPUS_PER_ACTOR = 1


class ShardEmbedder:
    """A Ray Data actor: loads the model once, then embeds and writes one shard per row."""

    def __init__(
        self,
        model: str,
        adapter: str | None,
        device: str | None,
        dtype: str | None,
        out: str,
        root: str,
        batch_size: int | None,
        strict: bool,
    ):
        if not torch.cuda.is_available():  # actors share a node's cores: one slice each
            torch.set_num_threads(CPUS_PER_ACTOR)
        self.encoder = OmniEncoder.from_pretrained(
            model, adapter=adapter, device=device, dtype=dtype
        )
        self.out, self.root = Path(out), Path(root)
        self.batch_size, self.strict = batch_size, strict

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embedded = []
        for number, ids, entries in zip(batch["number"], batch["ids"], batch["entries"]):
            rows = [Entry(**e) for e in json.loads(entries)]
            embedded.append(
                embed_shard(
                    self.encoder,
                    self.out,
                    int(number),
                    rows,
                    json.loads(ids),
                    self.root,
                    batch_size=self.batch_size,
                    strict=self.strict,
                )
            )
        return {
            "number": np.asarray(batch["number"]),
            "embedded": np.asarray(embedded),
            "dtype": np.asarray([dtype_name(self.encoder.dtype)] * len(embedded)),
        }


def embed_shards_on_ray(
    jobs: Sequence[tuple[int, Sequence[Entry], Sequence[int]]],
    out: Path,
    root: Path,
    *,
    model: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None,
    device: str | None,
    dtype: str | None,
    batch_size: int | None,
    strict: bool,
    address: str | None = None,
    show_progress: bool = False,
    actors: int | None = None,
) -> tuple[int, str | None]:
    """Write the shards of ``jobs`` (``(number, entries, ids)``) from a Ray actor pool; return
    how many items were embedded and the dtype the actors computed in (``None`` when there was
    nothing to do). Connects to ``address`` (``"auto"`` for the cluster this machine belongs
    to), or starts a local Ray when none is given and none is running.

    Each actor's device picks the default dtype, so with ``dtype=None`` actors on different
    hardware (a GPU node and a CPU without fast bf16) could embed in different precisions: that
    is an error naming both, since queries can match only one."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("--engine ray needs Ray Data: pip install 'lcoemb[ray]'") from error
    if not jobs:
        return 0, None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=show_progress, include_dashboard=False)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        size = actors or max(1, gpus or int(resources.get("CPU", 1)) // CPUS_PER_ACTOR)
        size = min(size, len(jobs))
        rows: list[dict[str, Any]] = [
            {
                "number": number,
                "ids": json.dumps([int(i) for i in ids]),
                "entries": json.dumps([dataclasses.asdict(e) for e in entries]),
            }
            for number, entries, ids in jobs
        ]
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = show_progress
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = dataset.map_batches(
            ShardEmbedder,
            fn_constructor_kwargs={
                "model": os.fspath(model),
                "adapter": None if adapter is None else os.path.abspath(os.fspath(adapter)),
                "device": device,
                "dtype": dtype,
                "out": os.path.abspath(out),
                "root": os.path.abspath(root),
                "batch_size": batch_size,
                "strict": strict,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=size),  # `concurrency=` is deprecated
            num_cpus=CPUS_PER_ACTOR,
            num_gpus=1 if gpus else 0,
        ).take_all()
        dtypes = sorted({str(r["dtype"]) for r in results})
        if len(dtypes) > 1:
            raise RuntimeError(
                f"the Ray actors embedded in different dtypes ({', '.join(dtypes)}): their "
                "devices differ; rebuild with --dtype set to one of them"
            )
        return int(sum(r["embedded"] for r in results)), dtypes[0]
    finally:
        if started_here:
            ray.shutdown()
