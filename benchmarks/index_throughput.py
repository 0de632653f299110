"""Search speed and recall of the FAISS index behind ``lcoemb index``: exact search vs HNSW32.

What it measures
----------------
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

Random unit vectors in hundreds of dimensions are the hard case for graph indexes: all
pairwise cosines concentrate near 0, so a query's true neighbours are barely closer than the
rest. Real embeddings cluster, and HNSW's recall on them is higher at the same ``ef_search``;
read the recall column as a floor and the latencies as representative.

Run
---
    python benchmarks/index_throughput.py            # n=100,000, d=576, 1,000 queries
    python benchmarks/index_throughput.py --quick    # smoke run, a few seconds
    python benchmarks/index_throughput.py --n 20000 --dim 64 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from functools import partial

import faiss
import numpy as np

from lcoemb.index.ann import DEFAULT_FACTORY, build_ann, search_ann

HNSW = "HNSW32"
EF_SEARCH = (16, 64, 128)
#: A timing counts as quiet when other processes used at most this share of the CPU.
QUIET = 0.05


class OtherLoad:
    """Share of all cores used by *other* processes (and hypervisor steal) during a block.

    Read from ``/proc/stat`` minus this process's own CPU time; ``None`` where there is no
    ``/proc/stat``.
    """

    share: float | None = None

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        idle = ticks[3] + ticks[4]  # idle + iowait
        return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> OtherLoad:
        self._start = (self._busy(), sum(os.times()[:4]), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = self._busy(), sum(os.times()[:4]), time.perf_counter()
        busy0, own0, wall0 = self._start
        if busy is None or busy0 is None:
            return
        other = (busy - busy0) - (own - own0)
        # clamped: /proc/stat counts whole clock ticks, which over-counts very short blocks
        self.share = min(1.0, max(0.0, other / ((wall - wall0) * (os.cpu_count() or 1))))


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


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k ids that ``found`` contains."""
    return float(np.mean([np.isin(e, f).mean() for f, e in zip(found, exact)]))


def one_by_one(index: faiss.Index, queries: np.ndarray, k: int, **kwargs: int) -> None:
    """One ``search_ann`` call per query, as ``lcoemb index search`` answers a single query."""
    for q in queries:
        search_ann(index, q[None], k, **kwargs)


def search_section(args: argparse.Namespace) -> list[dict[str, str]]:
    """Exact ``Flat`` against ``HNSW32`` at several ``ef_search``: build, latency, recall@k."""
    vectors = random_unit(args.n, args.dim, args.seed)
    queries = random_unit(args.queries, args.dim, args.seed + 1)
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


def print_table(rows: list[dict[str, str]]) -> None:
    header = list(rows[0])
    widths = [max(len(h), *(len(row[h]) for row in rows)) for h in header]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(row[h].ljust(w) for h, w in zip(header, widths)) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small collection (a few seconds)")
    p.add_argument("--n", type=int, default=100_000, help="vectors in the collection")
    p.add_argument("--dim", type=int, default=576, help="dimension (576 = LCO-Mini)")
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
        args.n, args.queries, args.repeats = 5000, 100, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}; "
        f"{faiss.omp_get_max_threads()} FAISS threads on {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"n={args.n:,} random unit vectors, d={args.dim}, {args.queries:,} queries, k={args.k}, "
        f"best of {args.repeats}; recall against exact {DEFAULT_FACTORY} search"
    )
    print()
    print_table(search_section(args))


if __name__ == "__main__":
    main()
