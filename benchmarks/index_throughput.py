"""``lcoemb index`` speed: building against plain encoding, Ray against local, HNSW against exact.

Sections (``--sections``, all by default)
-----------------------------------------
* ``build``: ``Index.build`` on a generated mixed folder (``--per-kind`` scene images, spoken
  captions, moving-shape clips and text notes, from ``lcoemb mini demo-folder``) with the
  embedded default model, against plain ``OmniEncoder.encode`` over the same items: the limit,
  since a build must embed them all. Both use one loaded model (its towers warmed up first),
  so the difference is what a build adds: walking, hashing, decoding, writing shards, FAISS.
  Goal: build items/s >= 0.9x encode items/s.
* ``ray``: a build with ``--engine ray`` on a local Ray cluster of 2 CPUs (started before
  timing, as an existing cluster is), two actors of one thread each, against the local engine's
  build of the same shards (one process, two threads, the model already loaded). The Ray time
  includes each actor loading the model. Goal: >= 0.8x.
* ``search``: exact search against HNSW32, below.

Search
------
``lcoemb.index.ann`` on ``--n`` random unit vectors of ``--dim`` dimensions (576 = LCO-Mini's
embedding width), seeded, float32, L2-normalised as the encoder writes them, with row ids
``0..n-1``; ``--queries`` further random unit vectors ask for their ``--k`` best matches.

* ``Flat`` (``DEFAULT_FACTORY``): exact inner product, the limit every approximate index is
  measured against (its recall is 1 by definition; the tests check it equals numpy's top-k).
* ``HNSW32`` (wrapped in ``IndexIDMap2`` like every index without ids of its own) at
  ``ef_search`` 16 (FAISS's default), 64 and 128: recall@k is the share of the exact top-k ids
  it returns, averaged over the queries.

Per index: the build time (``build_ann``: training where needed, adding every vector), and the
search latency per query, batched (all queries in one ``search_ann`` call, which FAISS spreads
over its OpenMP threads) and single (one call per query, as ``lcoemb index search`` serves a
query typed at the command line). Every search is warmed up once and timed ``--repeats`` times;
the fastest run counts. Each timing also records how much of the CPU *other* processes used
meanwhile (``/proc/stat``): on a small machine any other process slows the OpenMP threads down
several-fold, so a search whose best run was not quiet (> 5 %) is run again, up to
``--retries`` times, and the table shows the worst load among a row's kept runs (the build,
timed once, included).

Isotropic random unit vectors (the default) in hundreds of dimensions are the worst case for
graph indexes: all pairwise cosines concentrate near 0, so a query's true neighbours are barely
closer than the rest and HNSW's recall collapses as ``n`` grows. Real embeddings have a low
intrinsic dimension; ``--intrinsic-dim r`` draws the vectors (and queries) near a random
r-dimensional subspace instead (a rank-r Gaussian signal plus isotropic noise of 0.3 its norm),
where neighbours stand out. Latencies barely depend on the data; recall does.

Run
---
    python benchmarks/index_throughput.py            # n=100,000, d=576, 1,000 queries
    python benchmarks/index_throughput.py --quick    # smoke run, a few seconds
    python benchmarks/index_throughput.py --intrinsic-dim 32   # embedding-like structure
    python benchmarks/index_throughput.py --n 20000 --dim 64 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import faiss
import numpy as np
from common import OtherLoad, print_table

from lcoemb.index.ann import DEFAULT_FACTORY, build_ann, search_ann

HNSW = "HNSW32"
EF_SEARCH = (16, 64, 128)
#: A timing counts as quiet when other processes used at most this share of the CPU.
QUIET = 0.05
#: With --intrinsic-dim: norm of the isotropic noise added to the unit-norm subspace signal.
NOISE = 0.3


class Timing:
    """The fastest of several runs of one measurement, and how busy the machine was during it."""

    def __init__(self) -> None:
        self.seconds = float("inf")
        self.other: float | None = None  # other processes' CPU share during the kept run

    def run(self, fn: Callable[[], object]) -> object:
        with OtherLoad() as load:
            start = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - start
        if seconds < self.seconds:
            self.seconds, self.other = seconds, load.share
        return result

    @property
    def quiet(self) -> bool:
        return self.other is None or self.other <= QUIET

    def repeat(self, fn: Callable[[], object], repeats: int, retries: int) -> object:
        """Warm up, time ``repeats`` runs, then up to ``retries`` more while the best was noisy."""
        fn()  # page the index in, start the OpenMP pool
        for _ in range(repeats):
            result = self.run(fn)
        for _ in range(retries):
            if self.quiet:
                break
            result = self.run(fn)
        return result


def make_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Seeded unit vectors and queries: isotropic, or near an ``--intrinsic-dim`` subspace.

    The subspace variant is a rank-r Gaussian signal (norm ~1) in a random orthonormal basis
    plus isotropic noise of norm ~``NOISE``, so the nearest neighbours stand out from the rest
    as they do among real embeddings.
    """
    r = args.intrinsic_dim
    basis = None
    if r:
        gaussian = np.random.default_rng(args.seed + 2).standard_normal((args.dim, r))
        basis = np.linalg.qr(gaussian)[0].T.astype(np.float32)  # (r, dim), orthonormal rows

    def unit(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        if basis is not None:
            signal = rng.standard_normal((n, r), dtype=np.float32) @ basis / np.sqrt(r)
            x = signal + x * (NOISE / np.sqrt(args.dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return unit(args.n, args.seed), unit(args.queries, args.seed + 1)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k ids that ``found`` contains."""
    return float(np.mean([np.isin(e, f).mean() for f, e in zip(found, exact)]))


def one_by_one(index: faiss.Index, queries: np.ndarray, k: int, **kwargs: int) -> None:
    """One ``search_ann`` call per query, as ``lcoemb index search`` answers a single query."""
    for q in queries:
        search_ann(index, q[None], k, **kwargs)


def search_section(args: argparse.Namespace) -> list[dict[str, str]]:
    """Exact ``Flat`` against ``HNSW32`` at several ``ef_search``: build, latency, recall@k."""
    vectors, queries = make_data(args)
    ids = np.arange(args.n, dtype=np.int64)
    rows = []
    exact = None
    for factory, settings in [(DEFAULT_FACTORY, [None]), (HNSW, EF_SEARCH)]:
        build = Timing()
        index = build.run(partial(build_ann, vectors, ids, factory))
        for ef in settings:
            kwargs = {} if ef is None else {"ef_search": ef}
            batch, single = Timing(), Timing()
            _, found = batch.repeat(
                partial(search_ann, index, queries, args.k, **kwargs), args.repeats, args.retries
            )
            single.repeat(
                partial(one_by_one, index, queries, args.k, **kwargs), args.repeats, args.retries
            )
            if exact is None:
                exact = found
            loads = [t.other for t in (build, batch, single) if t.other is not None]
            rows.append(
                {
                    "index": factory,
                    "ef_search": "-" if ef is None else str(ef),
                    "build s": f"{build.seconds:.2f}",
                    "batch ms/query": f"{batch.seconds / args.queries * 1e3:.3f}",
                    "single ms/query": f"{single.seconds / args.queries * 1e3:.3f}",
                    f"recall@{args.k}": f"{recall(found, exact):.3f}",
                    "other load": f"{max(loads):.0%}" if loads else "n/a",
                }
            )
    return rows


def _timed(fn: Callable[[], object]) -> tuple[object, float, float | None]:
    with OtherLoad() as load:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, load.share


def _row(name: str, items: int, seconds: float, limit: float, other: float | None) -> dict:
    return {
        "run": name,
        "items": str(items),
        "seconds": f"{seconds:.1f}",
        "items/s": f"{items / seconds:.3f}",
        "vs limit": f"{limit / seconds:.2f}x",
        "other load": "n/a" if other is None else f"{other:.0%}",
    }


def build_section(args: argparse.Namespace, folder: Path) -> list[dict[str, str]]:
    """``Index.build`` against ``OmniEncoder.encode`` on the same items and the same model."""
    from lcoemb import OmniEncoder
    from lcoemb.index import Index
    from lcoemb.index.source import walk_source

    encoder = OmniEncoder.from_pretrained(args.model, device="cpu")
    walk = walk_source(folder)
    items = [entry.item(walk.root) for entry in walk.entries]
    by_kind = {}
    for entry, item in zip(walk.entries, items):
        by_kind.setdefault(entry.modality, item)
    encoder.encode(list(by_kind.values()))  # load every tower once, outside the timings
    _, encode_s, encode_load = _timed(lambda: encoder.encode(items, batch_size=args.batch_size))
    out = folder.parent / "index"
    index, build_s, build_load = _timed(
        lambda: Index.build(
            folder, out, model=args.model, encoder=encoder, batch_size=args.batch_size
        )
    )
    assert len(index) == len(items), index.summary.format()
    n = len(items)
    return [
        _row("OmniEncoder.encode (the limit)", n, encode_s, encode_s, encode_load),
        _row("Index.build, local engine", n, build_s, encode_s, build_load),
    ]


def ray_section(args: argparse.Namespace, folder: Path) -> list[dict[str, str]]:
    """``--engine ray`` on a local 2-CPU Ray cluster against the local engine's build.

    A shard is the unit of work an actor takes, so both builds use shards of half
    ``--per-kind`` items (8 shards, 4 per actor); the same shards give the same vectors.
    """
    import ray

    from lcoemb import OmniEncoder
    from lcoemb.index import Index

    shard_size = max(1, args.per_kind // 2)
    encoder = OmniEncoder.from_pretrained(args.model, device="cpu")
    local, local_s, local_load = _timed(
        lambda: Index.build(
            folder,
            folder.parent / "index-local",
            model=args.model,
            encoder=encoder,
            shard_size=shard_size,
            batch_size=args.batch_size,
        )
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        index, ray_s, load = _timed(
            lambda: Index.build(
                folder,
                folder.parent / "index-ray",
                model=args.model,
                engine="ray",
                device="cpu",
                shard_size=shard_size,
                batch_size=args.batch_size,
            )
        )
    finally:
        ray.shutdown()
    assert len(index) == len(local)
    n = len(index)
    return [
        _row(f"local engine, shards of {shard_size}", n, local_s, local_s, local_load),
        _row(f"Ray engine, 2 actors, shards of {shard_size}", n, ray_s, local_s, load),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small collections (a minute or two)")
    p.add_argument(
        "--sections", default="build,ray,search", help="comma-separated: build, ray, search"
    )
    p.add_argument("--model", default="lco-mini", help="model of the build sections")
    p.add_argument("--per-kind", type=int, default=50, help="demo files per kind (build, ray)")
    p.add_argument("--batch-size", type=int, default=8, help="encode batch size (build, ray)")
    p.add_argument("--n", type=int, default=100_000, help="vectors in the collection")
    p.add_argument("--dim", type=int, default=576, help="dimension (576 = LCO-Mini)")
    p.add_argument(
        "--intrinsic-dim",
        type=int,
        default=0,
        help="0: isotropic random vectors; r > 0: vectors near a random r-dimensional subspace",
    )
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per search; best counts")
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="extra runs of a search while its best run shared the CPU with other processes",
    )
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.repeats, args.per_kind = 5000, 100, 1, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}; "
        f"{faiss.omp_get_max_threads()} FAISS threads on {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.2f}"
    )
    if {"build", "ray"} & set(sections):
        from lcoemb.synthetic import write_demo_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "collection"
            write_demo_folder(folder, args.per_kind)
            for name, section in (("build", build_section), ("ray", ray_section)):
                if name in sections:
                    print(
                        f"\n{name}: {4 * args.per_kind} generated items ({args.per_kind} images, "
                        f"speech clips, videos and notes), model {args.model}, "
                        f"batch {args.batch_size}"
                    )
                    print_table(section(args, folder))
    if "search" in sections:
        print(
            f"\nsearch: n={args.n:,} random unit vectors, d={args.dim}, "
            + (f"near a {args.intrinsic_dim}-d subspace, " if args.intrinsic_dim else "isotropic, ")
            + f"{args.queries:,} queries, k={args.k}, "
            f"best of {args.repeats}; recall against exact {DEFAULT_FACTORY} search"
        )
        print_table(search_section(args))


if __name__ == "__main__":
    main()
