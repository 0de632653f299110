"""Cross-modal retrieval metrics on paired embeddings, and the quick retrieval check on the
generated test split (the quickstart's table; no mteb needed).

The offline mteb benchmark (:mod:`lcoemb.evaluation.offline`) measures retrieval over the same
generators with mteb's evaluators, on its own sizes and with the media stored as dataset files
(clips as mp4); :func:`evaluate_retrieval` encodes the samples as generated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lcoemb.synthetic import OOD_SETS, TASKS, as_input, dataset


def retrieval_metrics(
    queries: np.ndarray, documents: np.ndarray, relevant: list[set[int]] | None = None
) -> dict[str, float]:
    """Recall@1 and nDCG@10 of cosine retrieval.

    ``relevant[i]`` is the set of documents relevant to query ``i`` (default ``{i}``). Several
    relevant documents matter when captions repeat: every document with the same caption is a
    correct answer, so chance is not understated.
    """
    if len(queries) == 0 or len(documents) == 0:
        raise ValueError("retrieval needs at least one query and one document")
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = documents / np.linalg.norm(documents, axis=1, keepdims=True)
    scores = q @ d.T
    relevant = relevant if relevant is not None else [{i} for i in range(len(queries))]
    ranking = np.argsort(-scores, axis=1, kind="stable")
    discounts = 1.0 / np.log2(np.arange(2, 12))
    r1, ndcg = [], []
    for i, rel in enumerate(relevant):
        top = ranking[i, :10]
        r1.append(float(top[0] in rel))
        gains = np.array([float(j in rel) for j in top])
        ideal = discounts[: min(len(rel), 10)].sum()
        ndcg.append(float((gains * discounts[: len(top)]).sum() / ideal))
    return {"R@1": float(np.mean(r1)), "nDCG@10": float(np.mean(ndcg))}


def relevance_by_text(query_texts: list[str], document_texts: list[str]) -> list[set[int]]:
    """Relevant documents per query: those whose text equals the query's own paired text."""
    index: dict[str, set[int]] = {}
    for j, t in enumerate(document_texts):
        index.setdefault(t, set()).add(j)
    return [index.get(t, set()) for t in query_texts]


def _encode_pairs(encoder: Any, samples: list, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The media and the text of each sample, encoded; clips pass all their frames, as stage 1
    saw them."""
    media = [as_input(s, all_frames=True) for s in samples]
    texts = [s.text for s in samples]
    return (
        encoder.encode(media, batch_size=batch_size, show_progress=True),
        encoder.encode(texts, batch_size=batch_size, show_progress=True),
    )


def evaluate_retrieval(encoder: Any, n: int = 50, batch_size: int = 16) -> dict[str, dict]:
    """R@1 and nDCG@10 of every retrieval row of :data:`lcoemb.synthetic.TASKS` (image↔text,
    OCR text→image, audio↔text, video↔text) on the first ``n`` test-split samples of each task.
    A document whose text equals the query's paired text counts as relevant (captions can
    repeat). Clips pass all their frames, as stage 1 saw them."""
    results: dict[str, dict] = {}
    for task in TASKS.values():
        if not task.retrieval:
            continue
        samples = dataset(task.name, "test", n)
        texts = [s.text for s in samples]
        media, text = _encode_pairs(encoder, samples, batch_size)
        relevant = relevance_by_text(texts, texts)
        for row in task.retrieval:
            query = row.split()[-1].split("→")[0]
            q, d = (media, text) if query == task.modality else (text, media)
            results[row] = retrieval_metrics(q, d, relevant)
    return results


def evaluate_ood(encoder: Any, n: int = 40, batch_size: int = 16) -> dict[str, dict]:
    """R@1 and nDCG@10 on the out-of-distribution sets (:data:`lcoemb.synthetic.OOD_SETS`:
    image, OCR, speech, video), media→text and text→media, ``n`` items each with distinct texts
    (one right answer among ``n`` candidates). Nothing in them was generated for training."""
    results: dict[str, dict] = {}
    for ood in OOD_SETS.values():
        media, text = _encode_pairs(encoder, ood.samples(n), batch_size)
        to_text, to_media = ood.retrieval
        results[to_text] = retrieval_metrics(media, text)
        results[to_media] = retrieval_metrics(text, media)
    return results
