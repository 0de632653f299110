"""FAISS index helpers of ``lcoemb index``: exactness against numpy, id mapping, filters,
removal, persistence and the errors a user can trigger."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lcoemb.index.ann import (
    add_vectors,
    build_ann,
    load_ann,
    remove_ids,
    save_ann,
    search_ann,
)

N, D, K = 600, 32, 10
APPROXIMATE = ["HNSW32", "IVF16,PQ8"]
ALL_TYPES = ["Flat", *APPROXIMATE]
# settings under which each type scans its whole (small) collection: every allowed id is reachable
EXHAUSTIVE = {"Flat": {}, "HNSW32": {"ef_search": N}, "IVF16,PQ8": {"nprobe": 16}}


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors, row ids with gaps (as after updates), queries."""
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(1_000_000, size=N, replace=False)).astype(np.int64)
    return unit(rng, N), ids, unit(rng, 25)


@pytest.fixture(scope="module")
def built(data) -> dict[str, faiss.Index]:
    vectors, ids, _ = data
    return {factory: build_ann(vectors, ids, factory) for factory in ALL_TYPES}


def brute_force(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


@pytest.mark.parametrize("n_queries", [1, 25])  # FAISS uses BLAS from 20 queries on
def test_flat_equals_brute_force_with_gappy_ids(data, built, n_queries):
    vectors, ids, queries = data
    scores, found = search_ann(built["Flat"], queries[:n_queries], K)
    want_scores, want_ids = brute_force(vectors, ids, queries[:n_queries], K)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


def test_flat_filter_is_exact_top_k_within_allowed_set(data, built):
    vectors, ids, queries = data
    keep = np.random.default_rng(1).random(N) < 0.2
    scores, found = search_ann(built["Flat"], queries, K, allowed_ids=ids[keep])
    want_scores, want_ids = brute_force(vectors[keep], ids[keep], queries, K)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


@pytest.mark.parametrize("factory", ALL_TYPES)
def test_filter_returns_only_allowed_ids(data, built, factory):
    """The selector names row ids; through IndexIDMap2 (Flat, HNSW) FAISS must translate them
    to internal positions, while IVF stores the row ids itself."""
    vectors, ids, queries = data
    allowed = ids[np.random.default_rng(2).random(N) < 0.1]
    scores, found = search_ann(
        built[factory], queries, K, allowed_ids=allowed, **EXHAUSTIVE[factory]
    )
    assert np.isin(found, allowed).all()  # no -1 either: the whole collection was reachable
    assert (np.diff(scores, axis=1) <= 0).all()
    if factory != "IVF16,PQ8":  # PQ scores are approximations of the cosine
        rows = np.searchsorted(ids, found)
        np.testing.assert_allclose(
            scores, np.einsum("qd,qkd->qk", queries, vectors[rows]), atol=1e-5
        )


def test_hnsw_with_ef_search_covering_the_collection_is_exact(data, built):
    vectors, ids, queries = data
    allowed = ids[::3]
    _, found = search_ann(built["HNSW32"], queries, K, allowed_ids=allowed, ef_search=N)
    _, want = brute_force(vectors[::3], allowed, queries, K)
    np.testing.assert_array_equal(found, want)


def test_ivf_nprobe_reaches_the_index(data):
    """IVF over flat codes probing every list is exact; the default (nprobe=1) is not."""
    vectors, ids, queries = data
    index = build_ann(vectors, ids, "IVF16,Flat")
    _, want = brute_force(vectors, ids, queries, K)
    np.testing.assert_array_equal(search_ann(index, queries, K, nprobe=16)[1], want)
    assert not np.array_equal(search_ann(index, queries, K)[1], want)


def test_empty_allowed_set_finds_nothing(built, data):
    scores, found = search_ann(built["Flat"], data[2], K, allowed_ids=np.array([], np.int64))
    assert (found == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("factory", ALL_TYPES)
def test_k_larger_than_collection(data, built, factory):
    _, ids, queries = data
    k = N + 50
    # default settings: HNSW and IVF (nprobe=1) then find fewer than the collection, so FAISS's
    # own empty slots are checked too
    scores, found = search_ann(built[factory], queries[:3], k)
    assert found.shape == scores.shape == (3, k)
    for row_ids, row_scores in zip(found, scores):
        hits = row_ids != -1
        n_hits = hits.sum()
        assert hits[:n_hits].all() and not hits[n_hits:].any()  # results first, then padding
        assert np.isneginf(row_scores[n_hits:]).all()
        assert np.isin(row_ids[:n_hits], ids).all()
        assert len(np.unique(row_ids[:n_hits])) == n_hits
    hits = (found != -1).sum(axis=1)
    assert (hits == N).all() if factory == "Flat" else (hits < N).all()


@pytest.mark.parametrize("factory", ALL_TYPES)
def test_save_load_round_trip(tmp_path, data, built, factory):
    _, ids, queries = data
    path = tmp_path / "vectors.faiss"
    save_ann(built[factory], path)
    loaded = load_ann(path)
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.faiss"]  # no temporary left
    assert type(loaded) is type(built[factory]) and loaded.ntotal == N
    for kwargs in ({}, {"allowed_ids": ids[::4]}):
        before = search_ann(built[factory], queries, K, **kwargs)
        after = search_ann(loaded, queries, K, **kwargs)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_array_equal(after[0], before[0])


def test_save_replaces_atomically_and_cleans_up_on_failure(tmp_path, data, built, monkeypatch):
    path = tmp_path / "vectors.faiss"
    save_ann(built["Flat"], path)
    save_ann(built["HNSW32"], path)  # overwrite
    assert isinstance(faiss.downcast_index(load_ann(path).index), faiss.IndexHNSW)
    original = path.read_bytes()

    def crash(index, filename):
        with open(filename, "wb") as f:
            f.write(b"half an index")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_ann(built["Flat"], path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.faiss"]


def test_load_errors_name_the_file(tmp_path, data, built):
    missing = tmp_path / "missing.faiss"
    with pytest.raises(FileNotFoundError, match=r"missing\.faiss"):
        load_ann(missing)
    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(b"this is not an index")
    with pytest.raises(ValueError, match=r"cannot read FAISS index .*garbage\.faiss"):
        load_ann(garbage)
    good = tmp_path / "good.faiss"
    save_ann(built["HNSW32"], good)
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.faiss"):
        load_ann(truncated)


def test_remove_in_place_for_flat(data):
    vectors, ids, queries = data
    index = build_ann(vectors, ids)
    assert isinstance(index, faiss.IndexIDMap2)
    gone = np.random.default_rng(3).random(N) < 0.3
    assert remove_ids(index, np.append(ids[gone], 5_000_000))  # unknown ids are ignored
    assert index.ntotal == N - gone.sum()
    scores, found = search_ann(index, queries, K)
    want_scores, want_ids = brute_force(vectors[~gone], ids[~gone], queries, K)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)
    # IndexIDMap2's reverse map follows the removal: reconstruct by row id still works
    np.testing.assert_array_equal(index.reconstruct(int(ids[~gone][-1])), vectors[~gone][-1])


def test_remove_in_place_for_ivf(data):
    """IVF stores the row ids itself, so removal keeps every other id right."""
    vectors, ids, _ = data
    index = build_ann(vectors, ids, "IVF16,Flat")
    assert remove_ids(index, ids[:100])
    assert index.ntotal == N - 100
    _, found = search_ann(index, vectors[100:110], 1, nprobe=16)
    np.testing.assert_array_equal(found[:, 0], ids[100:110])


def test_remove_refused_for_hnsw_leaves_index_intact(data, built):
    _, ids, queries = data
    index = built["HNSW32"]
    before = search_ann(index, queries, K)
    assert remove_ids(index, ids[:10]) is False
    assert index.ntotal == N
    after = search_ann(index, queries, K)
    np.testing.assert_array_equal(after[1], before[1])


def test_remove_refused_for_id_map_over_ivf(data):
    """FAISS's IndexIDMap2 over IVF removes rows but then maps the rest to wrong ids."""
    vectors, ids, _ = data
    index = build_ann(vectors, ids, "IDMap2,IVF16,Flat")
    assert isinstance(index, faiss.IndexIDMap2)  # the factory's own map is kept, not wrapped
    assert remove_ids(index, ids[:10]) is False
    assert index.ntotal == N
    _, found = search_ann(index, vectors[100:110], 1, nprobe=16)
    np.testing.assert_array_equal(found[:, 0], ids[100:110])


def test_add_vectors_extends_the_index(data):
    vectors, ids, queries = data
    index = build_ann(vectors[:200], ids[:200])
    add_vectors(index, vectors[200:], ids[200:])
    _, want = brute_force(vectors, ids, queries, K)
    np.testing.assert_array_equal(search_ann(index, queries, K)[1], want)
    with pytest.raises(ValueError, match="unique"):
        add_vectors(index, vectors[:2], np.array([7, 7]))
    with pytest.raises(ValueError, match=">= 0"):
        add_vectors(index, vectors[:2], np.array([7, -1]))
    with pytest.raises(ValueError, match="dimension 16, the index has dimension 32"):
        add_vectors(index, vectors[:2, :16], np.array([7, 8]))
    assert index.ntotal == N


def test_empty_flat_index_searches_to_nothing(data):
    queries = data[2]
    index = build_ann(np.empty((0, D), np.float32), np.empty(0, np.int64))
    assert index.ntotal == 0
    for kwargs in ({}, {"allowed_ids": np.array([1, 2])}):
        scores, found = search_ann(index, queries, 5, **kwargs)
        assert found.shape == (len(queries), 5)
        assert (found == -1).all() and np.isneginf(scores).all()


def test_bad_factory_string_is_a_readable_value_error(data):
    vectors, ids, _ = data
    with pytest.raises(ValueError, match=r"invalid FAISS index factory string 'HNSW32,Bogus'"):
        build_ann(vectors, ids, "HNSW32,Bogus")


@pytest.mark.parametrize(
    ("factory", "n", "need"), [("IVF1024,Flat", N, 1024), ("IVF16,PQ8", 100, 256)]
)
def test_too_few_vectors_to_train_is_a_readable_value_error(data, factory, n, need):
    vectors, ids, _ = data
    with pytest.raises(ValueError) as err:
        build_ann(vectors[:n], ids[:n], factory)
    message = str(err.value)
    assert f"{factory!r}" in message and f"on {n} vectors" in message
    assert f"needs at least {need} training vectors" in message
    assert "Clustering.cpp" not in message


def test_training_sample_is_capped_and_seeded(data):
    vectors, ids, _ = data
    with pytest.raises(ValueError, match=r"on 200 vectors .*train_size=200.*needs at least 256"):
        build_ann(vectors, ids, "IVF16,PQ8", train_size=200)
    a, b, c = (build_ann(vectors, ids, "IVF16,Flat", train_size=300, seed=s) for s in (0, 0, 1))
    centroids = [x.quantizer.reconstruct_n(0, 16) for x in (a, b, c)]
    np.testing.assert_array_equal(centroids[0], centroids[1])
    assert not np.array_equal(centroids[0], centroids[2])


def test_query_errors(data, built):
    _, _, queries = data
    with pytest.raises(ValueError, match="dimension 16, the index has dimension 32"):
        search_ann(built["Flat"], queries[:, :16], K)
    with pytest.raises(ValueError, match="2-D"):
        search_ann(built["Flat"], queries[0], K)
    with pytest.raises(ValueError, match="k must be >= 1"):
        search_ann(built["Flat"], queries, 0)
    with pytest.raises(ValueError, match="ef_search applies to IndexHNSW indexes"):
        search_ann(built["Flat"], queries, K, ef_search=64)
    with pytest.raises(ValueError, match="nprobe applies to IndexIVF indexes"):
        search_ann(built["HNSW32"], queries, K, nprobe=4)


def test_float64_and_non_contiguous_queries_are_accepted(data, built):
    _, _, queries = data
    want = search_ann(built["Flat"], queries, K)[1]
    fortran = np.asfortranarray(queries.astype(np.float64))
    np.testing.assert_array_equal(search_ann(built["Flat"], fortran, K)[1], want)
