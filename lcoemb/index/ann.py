"""The FAISS side of ``lcoemb index``: build, update, persist and search the vector index.

Rows of the Parquet shards carry int64 row ids that are not ``0..n-1`` once items have been
removed, so every index here answers with those row ids: index types that store ids of their
own (IVF) keep them, every other type is wrapped in ``faiss.IndexIDMap2``. Vectors are
L2-normalised, so the metric is inner product and scores are cosines, best first.

FAISS signals misuse with ``RuntimeError`` carrying a C++ location; the functions here turn the
errors a user can cause (a bad factory string, too few vectors to train, a corrupt file, a wrong
query dimension) into ``ValueError`` messages that say what was asked and what is needed.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import faiss
import numpy as np

#: Exact inner-product search: no training, no recall loss; the default until a collection is
#: large enough for search latency to matter (see ``benchmarks/index_throughput.py``).
DEFAULT_FACTORY = "Flat"

_ID_MAPS = (faiss.IndexIDMap, faiss.IndexIDMap2)
# "Error in <function> at <file>:<line>: [Error: '<condition>' failed: ]<message>"
_FAISS_PREFIX = re.compile(r"^Error in .*? at \S+:\d+: (?:Error: '.*?' failed: )?", re.DOTALL)
_CLUSTERS = re.compile(r"at least as large as number of clusters \((\d+)\)")


def _faiss_message(err: RuntimeError) -> str:
    """FAISS's own sentence without the C++ function signature and source location."""
    return _FAISS_PREFIX.sub("", str(err)).strip()


def _core(index: faiss.Index) -> faiss.Index:
    """The index that does the searching, below any id map and pre-transforms (PCA, OPQ...)."""
    index = faiss.downcast_index(index)
    while isinstance(index, (*_ID_MAPS, faiss.IndexPreTransform)):
        index = faiss.downcast_index(index.index)
    return index


def _matrix(x: np.ndarray, d: int, what: str) -> np.ndarray:
    """``x`` as the C-contiguous float32 ``(n, d)`` array FAISS reads through a raw pointer."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, {d}) array, got shape {x.shape}")
    if x.shape[1] != d:
        raise ValueError(f"{what} have dimension {x.shape[1]}, the index has dimension {d}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _row_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """Checked int64 ids: -1 is FAISS's "no result", and a repeated id would make two rows
    indistinguishable in results (``IndexIDMap2`` would silently keep only one of them)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids must be a 1-D array of {n} ids (one per vector), got {ids.shape}")
    if n and ids.min() < 0:
        raise ValueError(f"ids must be >= 0 (-1 means 'no result'), got {ids.min()}")
    if np.unique(ids).size != n:
        raise ValueError("ids must be unique within one call")
    return ids


def build_ann(
    vectors: np.ndarray,
    ids: np.ndarray,
    factory: str = DEFAULT_FACTORY,
    *,
    train_size: int = 100_000,
    seed: int = 0,
) -> faiss.Index:
    """A FAISS inner-product index over ``vectors``, answering with ``ids``.

    ``factory`` is a ``faiss.index_factory`` string ("Flat", "HNSW32", "IVF1024,PQ64", ...).
    Index types that need training (IVF, PQ, SQ, PCA) are trained on a random sample of at most
    ``train_size`` vectors drawn with ``seed``: k-means cost grows with the sample while its
    quality saturates at a few hundred points per centroid. An empty collection gives an empty,
    searchable index for types that need no training.

    Raises ``ValueError`` for a factory string FAISS cannot parse and when there are too few
    vectors to train (IVFk needs k vectors, 8-bit PQ and IVF+PQ need 256).
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D (n, d) array, got shape {vectors.shape}")
    n, d = vectors.shape
    vectors = _matrix(vectors, d, "vectors")
    ids = _row_ids(ids, n)
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(
            f"invalid FAISS index factory string {factory!r} for {d}-dimensional inner-product "
            f"vectors: {_faiss_message(err)}"
        ) from err
    if not index.is_trained:
        core = _core(index)
        if isinstance(core, (faiss.IndexPQ, faiss.IndexIVFPQ)):
            # reorders PQ centroids for Hamming pre-filtering (polysemous_ht), which search_ann
            # never enables; it costs ~10 s per build whatever the collection size
            core.do_polysemous_training = False
        sample = vectors
        if n > train_size:
            rows = np.random.default_rng(seed).choice(n, size=train_size, replace=False)
            sample = vectors[np.sort(rows)]
        try:
            index.train(sample)
        except RuntimeError as err:
            message = _faiss_message(err)
            need = _CLUSTERS.search(message)
            if need:
                message = f"it needs at least {need.group(1)} training vectors"
            raise ValueError(
                f"cannot train FAISS index {factory!r} on {len(sample)} vectors (collection of "
                f"{n}, train_size={train_size}): {message}; use fewer lists or centroids, or "
                f"{DEFAULT_FACTORY!r}"
            ) from err
    if not isinstance(index, _ID_MAPS) and not isinstance(_core(index), faiss.IndexIVF):
        index = faiss.IndexIDMap2(index)
    index.add_with_ids(vectors, ids)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add ``vectors`` under ``ids``, which must not be in the index yet (FAISS does not check).

    A trained index keeps its centroids and codebooks: vectors added later are encoded with
    them, so after large drifts in the collection a rebuild (``build_ann``) gives better recall.
    """
    vectors = _matrix(vectors, index.d, "vectors")
    index.add_with_ids(vectors, _row_ids(ids, len(vectors)))


def remove_ids(index: faiss.Index, ids: np.ndarray) -> bool:
    """Remove ``ids`` in place; ``False`` when this index type cannot, so the caller rebuilds.

    ``IndexIDMap``/``IndexIDMap2`` remove correctly only over an index that renumbers its rows
    on removal (flat codes: Flat, PQ, SQ). Over HNSW FAISS refuses; over IVF it removes the
    rows but then maps the remaining ones to the wrong ids, so both count as "cannot". Other
    types either remove (IVF, which stores the ids itself) or raise before changing anything.
    Ids that are not in the index are ignored.
    """
    top = faiss.downcast_index(index)
    if isinstance(top, _ID_MAPS) and not isinstance(_core(top.index), faiss.IndexFlatCodes):
        return False
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
    try:
        index.remove_ids(selector)
    except RuntimeError:
        return False
    return True


def save_ann(index: faiss.Index, path: Path) -> None:
    """Write ``index`` to ``path`` so that a reader sees the old file or the new one, never half.

    The index goes to a temporary file in the same folder (same filesystem, so ``os.replace``
    is an atomic rename), is flushed to disk, then replaces ``path``; an interrupted save leaves
    the previous index intact and no temporary file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_ann(path: Path) -> faiss.Index:
    """Read an index written by :func:`save_ann`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FAISS index file not found: {path}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise ValueError(
            f"cannot read FAISS index {path} (corrupt or not a FAISS index; rebuild it): "
            f"{_faiss_message(err)}"
        ) from err


def _search_params(
    index: faiss.Index,
    allowed_ids: np.ndarray | None,
    ef_search: int | None,
    nprobe: int | None,
) -> faiss.SearchParameters:
    """Per-call parameters for the index's own type, filled from its current settings.

    FAISS silently ignores fields of the wrong parameter class (``nprobe`` on HNSW, ``efSearch``
    on IVF), hence the explicit errors. The selector goes on the outermost parameters: an
    ``IndexIDMap``/``IndexIDMap2`` translates it from row ids to its internal positions and
    hands the same object down, and pre-transforms pass it through. (Nesting it inside
    ``SearchParametersPreTransform.index_params`` instead would skip that translation.)
    """
    core = _core(index)
    for name, value, kind in (
        ("ef_search", ef_search, faiss.IndexHNSW),
        ("nprobe", nprobe, faiss.IndexIVF),
    ):
        if value is not None and not isinstance(core, kind):
            raise ValueError(
                f"{name} applies to {kind.__name__} indexes, this is {type(core).__name__}"
            )
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if isinstance(core, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(
            efSearch=core.hnsw.efSearch if ef_search is None else ef_search
        )
    elif isinstance(core, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=core.nprobe if nprobe is None else nprobe)
    else:
        params = faiss.SearchParameters()
    if allowed_ids is not None:
        params.sel = faiss.IDSelectorBatch(allowed_ids)
    return params


def search_ann(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    allowed_ids: np.ndarray | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ids for each query, and their inner-product scores, best first.

    Returns ``scores`` (m, k) float32 and ``ids`` (m, k) int64; slots with no result (``k`` larger
    than the collection or the allowed set, or an approximate index finding fewer) hold id -1
    and score ``-inf``. ``allowed_ids`` restricts results to those row ids (e.g. one modality):
    exact for Flat; HNSW and IVF apply it while searching, so a small allowed set can return
    fewer than ``k`` results. ``ef_search`` (HNSW) and ``nprobe`` (IVF) override the index's
    setting for this call only. ``queries`` is (m, d), converted to float32 if needed.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = _matrix(queries, index.d, "queries")
    if allowed_ids is not None:
        allowed_ids = np.unique(np.asarray(allowed_ids, dtype=np.int64))
    params = _search_params(index, allowed_ids, ef_search, nprobe)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    # FAISS allocates per-query heaps of size k: never ask for more rows than can exist
    found = min(k, index.ntotal, k if allowed_ids is None else allowed_ids.size)
    if found and len(queries):
        scores[:, :found], ids[:, :found] = index.search(queries, found, params=params)
        scores[ids == -1] = -np.inf
    return scores, ids
