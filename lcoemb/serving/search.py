"""Search over an index with the served model: what ``lcoemb serve --index`` adds.

The query is parsed by :func:`~lcoemb.serving.requests.parse_request` (as one item of
``/v1/embeddings``, so it has the same shapes, limits and checks) and embedded by the server's
batcher; this module holds what is specific to search: refusing an index of another model at
startup, the request's ``k``/``modality``, the FAISS look-up and the answer's rows, and the file
behind a media row (looked up by id only, never by a path a client gives).
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcoemb.index.index import (
    Hit,
    Index,
    IndexSettingsError,
    adapter_id,
    model_id,
    source_root,
)
from lcoemb.index.store import read_manifest
from lcoemb.serving.requests import (
    ApiError,
    EmbeddingRequest,
    ModelInfo,
    RequestLimits,
    Scratch,
    parse_request,
)

#: The most results one search may ask for: FAISS allocates a heap of ``k`` per query.
MAX_K = 1000
#: Modalities whose rows are files that ``/v1/media/{id}`` serves.
MEDIA_MODALITIES = ("image", "audio", "video")
#: Every modality an index row can have (``interleaved``: a JSONL record of several parts).
ROW_MODALITIES = ("text", "image", "audio", "video", "interleaved")


def check_index(
    path: str | os.PathLike[str], model: str | os.PathLike[str], adapter: str | None
) -> dict[str, Any]:
    """Refuse, before any model loads, an index that is unfinished or was built with another
    model or adapter: its vectors would not be comparable with the served model's queries, and
    every search would quietly return noise. Return its manifest."""
    try:
        manifest = read_manifest(Path(path))
    except (OSError, ValueError) as error:  # IndexFormatError is a ValueError
        raise IndexSettingsError(f"--index {os.fspath(path)!r}: {error}") from None
    if manifest.get("status") != "complete":
        raise IndexSettingsError(
            f"--index {os.fspath(path)!r} is not a finished index (status "
            f"{manifest.get('status')!r}); finish it with `lcoemb index build` or `update`"
        )
    served = {"model": model_id(model), "adapter": adapter_id(adapter)}
    differ = [
        f"{key} {manifest.get(key)!r} (the index) vs {value!r} (served)"
        for key, value in served.items()
        if manifest.get(key) != value
    ]
    if differ:
        raise IndexSettingsError(
            f"--index {os.fspath(path)!r} was built with another model or adapter than the one "
            f"served: {'; '.join(differ)}. Serve the index's model, or build an index with this one"
        )
    return manifest


@dataclass
class SearchRequest:
    """A checked search: the query as a one-item embedding request, and what to return."""

    query: EmbeddingRequest
    k: int
    modalities: list[str] | None


def parse_search(
    body: Any, model: ModelInfo, limits: RequestLimits, workdir: Scratch, index: Index
) -> SearchRequest:
    """Check a ``/v1/search`` body; the query goes through the embeddings parser as ``input``
    (a string, one content part, or a list of parts that make one interleaved query), with the
    index's query instruction, as :meth:`Index.search` embeds queries."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    query = body.get("query")
    if not (isinstance(query, (str, dict)) or (isinstance(query, list) and query)):
        raise ApiError(
            400,
            "query must be a string, a content part or a non-empty list of content parts",
            param="query",
        )
    k = body.get("k", 10)
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise ApiError(400, f"k must be an integer between 1 and {MAX_K}", param="k")
    modalities = body.get("modality")
    if isinstance(modalities, str):
        modalities = [modalities]
    if modalities is not None and (
        not isinstance(modalities, list)
        or not modalities
        or any(m not in ROW_MODALITIES for m in modalities)
    ):
        raise ApiError(
            400,
            f"modality must be a non-empty list of {', '.join(ROW_MODALITIES)}",
            param="modality",
        )
    try:
        parsed = parse_request(
            {
                "input": [query],
                "model": body.get("model"),
                "instruction": index.manifest["prompts"]["query_instruction"],
            },
            model,
            limits,
            workdir,
        )
    except ApiError as error:
        if error.param == "input":  # name the field the client sent
            error.param = "query"
        raise
    return SearchRequest(parsed, k, modalities)


def hit_json(rank: int, hit: Hit, index: Index) -> dict[str, Any]:
    """One result as ``/v1/search`` answers it; media rows get the URL that serves their file."""
    row = hit.row
    result: dict[str, Any] = {
        "rank": rank,
        "id": hit.id,
        "score": hit.score,
        "modality": row["modality"],
        "path": row["path"],
        "passage": row.get("passage"),
        "text": row.get("text"),
    }
    if _serves_media(index, row):
        result["media_url"] = f"/v1/media/{hit.id}"
    return result


def media_file(index: Index, item_id: int) -> tuple[Path, str] | None:
    """The file of media row ``item_id`` and its content type, or None (unknown id, a text or
    JSONL row, a file gone, or a path that resolves, symlinks included, outside the source
    folder). Only the index's own row names the file: a client never gives a path."""
    try:
        row = index.row(item_id)
    except KeyError:
        return None
    if not _serves_media(index, row):
        return None
    root = source_root(index.manifest["source"]).resolve()
    path = (root / row["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    kind, _ = mimetypes.guess_type(path.name)
    return path, kind or "application/octet-stream"


def _serves_media(index: Index, row: dict[str, Any]) -> bool:
    """Only rows of a folder source are files of their own (a JSONL row names a line)."""
    return row["modality"] in MEDIA_MODALITIES and index.manifest.get("source_kind") == "folder"
