"""Cross-modal retrieval metrics on paired embeddings (query i's relevant document is i)."""

from __future__ import annotations

import numpy as np


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
