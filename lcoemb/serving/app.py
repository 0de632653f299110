"""The OpenAI-compatible embeddings server behind ``lcoemb serve``.

``POST /v1/embeddings`` takes OpenAI's request (plus multimodal content parts and vLLM's
``messages``, see :mod:`lcoemb.serving.requests`) and answers in OpenAI's schema, so the official
clients work unchanged; vectors are those of :meth:`OmniEncoder.encode` on the same items.

Decisions a client can see:

* ``usage`` counts the text tokens of each item's text parts with the backbone's tokenizer
  (before the prompt template and truncation); media count 0 tokens.
* With an API key, ``/v1/*`` needs ``Authorization: Bearer KEY``; ``/health``, ``/ready`` and
  ``/metrics`` stay open, since probes and scrapers seldom carry secrets and reveal nothing.
* ``/health`` answers as soon as the process serves; ``/ready`` only once the model has loaded
  (it loads in the background, so a slow load is visible rather than a refused connection) and
  not while shutting down.
* On SIGTERM uvicorn stops accepting connections and waits for requests in flight; requests that
  still arrive get 503, and the model worker finishes every queued item before the process ends.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from lcoemb.config import ServeConfig
from lcoemb.encoder import OmniEncoder
from lcoemb.index.index import Index
from lcoemb.inputs import InputError
from lcoemb.serving.batcher import Batcher, Closed, Embedded, Job, QueueFull
from lcoemb.serving.requests import (
    ApiError,
    EmbeddingRequest,
    ModelInfo,
    RequestLimits,
    Scratch,
    item_error,
    parse_request,
)
from lcoemb.serving.search import check_index, hit_json, media_file, parse_search

log = logging.getLogger("lcoemb.serve")

#: How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_S = 0.05


class Metrics:
    """The server's Prometheus metrics, in a registry of its own so apps built in one process
    (tests) do not collide in the global one."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lcoemb_requests",
            "Embedding requests by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.items = Counter(
            "lcoemb_items",
            "Items embedded, by modality group",
            ["modality"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lcoemb_batch_size",
            "Items per model batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lcoemb_queue_depth", "Items waiting for the model", registry=self.registry
        )
        self.latency = Histogram(
            "lcoemb_request_latency_seconds", "Embedding request latency", registry=self.registry
        )


class _State:
    """What the endpoints share: the model once loaded, and whether the server is draining."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.model: ModelInfo | None = None
        self.batcher: Batcher | None = None
        self.index: Index | None = None
        self.load_error: BaseException | None = None
        self.draining = False
        self.created = int(time.time())
        #: called if the model fails to load; serve() stops the server with it
        self.on_load_error: Callable[[], None] = lambda: None

    def start(self, encoder: OmniEncoder) -> None:
        self.batcher = Batcher(
            encoder,
            max_batch_size=self.config.max_batch_size,
            max_wait_ms=self.config.max_wait_ms,
            max_queue=self.config.max_queue,
            on_batch=self.metrics.batch_size.observe,
            on_depth=self.metrics.queue_depth.set,
        )
        if self.config.index is not None:
            self.index = Index.load(self.config.index, encoder=encoder)
        self.model = ModelInfo(self.config.model, encoder.embedding_dim, encoder.modalities)

    def load(self) -> None:
        try:
            encoder = OmniEncoder.from_pretrained(
                self.config.model,
                adapter=self.config.adapter,
                device=self.config.device,
                dtype=self.config.dtype,
            )
            self.start(encoder)
        except Exception as error:  # reported by serve(), which then exits non-zero
            log.exception("cannot load model %r or its index", self.config.model)
            self.load_error = error
            self.on_load_error()
            return
        log.info("model %r loaded; ready", self.config.model)


def create_app(config: ServeConfig, encoder: OmniEncoder | None = None) -> FastAPI:
    """The ASGI app; without ``encoder`` the model named by ``config`` loads in the background
    once the app starts (``/ready`` says when). An ``index`` of another model is refused here,
    before the (slow) model load, so the mistake costs seconds, not minutes. With an ``index``
    and no ``dtype`` the model computes in the index's dtype, as its documents were embedded."""
    if config.index is not None:
        manifest = check_index(config.index, config.model, config.adapter)
        if config.dtype is None:  # queries in the dtype the documents were embedded in
            config = dataclasses.replace(config, dtype=manifest.get("dtype"))
    state = _State(config)
    if encoder is not None:
        state.start(encoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None
        if state.batcher is None:
            loader = threading.Thread(target=state.load, name="lcoemb-load", daemon=True)
            loader.start()
        yield
        state.draining = True
        if loader is not None:
            await asyncio.to_thread(loader.join)
        if state.batcher is not None:
            await asyncio.to_thread(state.batcher.close)

    app = FastAPI(title="lcoemb", lifespan=lifespan)
    app.state.lcoemb = state
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if state.model is None or state.draining:
            status = "draining" if state.draining else "loading"
            return JSONResponse({"status": status}, status_code=503)
        return JSONResponse({"status": "ready", "model": state.model.name})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            _authorize(request, config.api_key)
        except ApiError as error:
            return error.response()
        entry = {"id": config.model, "object": "model", "created": state.created}
        return JSONResponse({"object": "list", "data": [entry | {"owned_by": "lcoemb"}]})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await _answer(state, _embeddings(request, state))

    @app.post("/v1/search")
    async def search(request: Request) -> Response:
        return await _answer(state, _search(request, state))

    @app.get("/v1/media/{item_id}")
    async def media(request: Request, item_id: str) -> Response:
        try:
            return await _media(request, state, item_id)
        except ApiError as error:
            return error.response()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        if config.index is None:
            return HTMLResponse(_NO_INDEX_PAGE)
        auth = "true" if config.api_key is not None else "false"
        return HTMLResponse(_SEARCH_PAGE.read_text("utf-8").replace("{{AUTH_REQUIRED}}", auth))

    return app


#: The search page at ``/`` (one self-contained file; ``{{AUTH_REQUIRED}}`` is filled in).
_SEARCH_PAGE = Path(__file__).parent / "static" / "search.html"
_NO_INDEX_PAGE = (
    '<!doctype html><html lang="en"><meta charset="utf-8"><title>lcoemb</title>'
    "<main><h1>lcoemb</h1><p>This server has no index to search. Build one with "
    "<code>lcoemb index build</code> and start the server with "
    "<code>lcoemb serve --index INDEX</code>.</p></main></html>"
)


async def _answer(state: _State, work: Awaitable[Response]) -> Response:
    """Run a ``/v1`` request that embeds, as an OpenAI-style error on failure, counting it in
    the request metrics whatever its outcome."""
    start = time.perf_counter()
    status = 500
    try:
        response = await work
        status = response.status_code
        return response
    except ApiError as error:
        status = error.status
        return error.response()
    except Exception:
        log.exception("request failed")
        return ApiError(500, "internal server error", kind="server_error").response()
    finally:
        state.metrics.requests.labels(str(status)).inc()
        state.metrics.latency.observe(time.perf_counter() - start)


def _authorize(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), api_key.encode()):
        raise ApiError(
            401,
            "missing or invalid API key (send Authorization: Bearer KEY)",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 from its declared length or, failing that, as soon as more
    than ``limit`` bytes arrive (a chunked body declares none)."""
    too_large = ApiError(413, f"request body over the server's limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _embeddings(request: Request, state: _State) -> Response:
    config = state.config
    _authorize(request, config.api_key)
    body = await _read_json(request, state)
    assert state.model is not None  # _read_json refuses requests while the model loads
    async with _scratch() as workdir:
        parsed = await run_in_threadpool(
            parse_request, body, state.model, RequestLimits.from_config(config), workdir
        )
        results = await _embed(request, state, parsed)
    return JSONResponse(_response_body(parsed, results, state.model.name))


@asynccontextmanager
async def _scratch() -> AsyncIterator[Scratch]:
    """A request's upload folder, removed afterwards off the event loop (if it was made); the
    removal is shielded, so it completes even when the client's going away cancels the request."""
    scratch = Scratch()
    try:
        yield scratch
    finally:
        if scratch.used:
            await asyncio.shield(asyncio.ensure_future(run_in_threadpool(scratch.cleanup)))


async def _search(request: Request, state: _State) -> Response:
    """``/v1/search``: the query embedded by the batcher with all other traffic, then looked up
    in the index (FAISS in a thread: it blocks, briefly, and the event loop must not)."""
    config = state.config
    _authorize(request, config.api_key)
    if config.index is None:
        raise _no_index()
    body = await _read_json(request, state)
    index = state.index
    assert state.model is not None and index is not None  # both set before the model is
    async with _scratch() as workdir:
        parsed = await run_in_threadpool(
            parse_search, body, state.model, RequestLimits.from_config(config), workdir, index
        )
        (result,) = await _embed(request, state, parsed.query)
    (hits,) = await run_in_threadpool(
        index.search_vectors, result.vector[None, :], parsed.k, modalities=parsed.modalities
    )
    data = [hit_json(rank, hit, index) for rank, hit in enumerate(hits, start=1)]
    return JSONResponse({"object": "list", "data": data, "model": state.model.name})


async def _media(request: Request, state: _State, item_id: str) -> Response:
    """``/v1/media/{id}``: the file of an indexed media row, found by its id alone."""
    _authorize(request, state.config.api_key)
    if state.config.index is None:
        raise _no_index()
    if state.index is None:
        raise ApiError(
            503, "the index is still loading", kind="server_error", headers={"Retry-After": "5"}
        )
    found = None
    if item_id.isdecimal() and len(item_id) <= 18:  # an int64 id, never a path
        found = await run_in_threadpool(media_file, state.index, int(item_id))
    if found is None:
        raise ApiError(
            404, f"no media item with id {item_id!r} in the index", code="media_not_found"
        )
    path, kind = found
    return FileResponse(path, media_type=kind, headers={"X-Content-Type-Options": "nosniff"})


def _no_index() -> ApiError:
    return ApiError(
        404,
        "this server has no index; start it with `lcoemb serve --index INDEX`",
        code="index_not_found",
    )


async def _read_json(request: Request, state: _State) -> Any:
    """The JSON body of a request that needs the model, refused while it loads or shuts down."""
    config = state.config
    if state.draining:
        raise ApiError(503, "the server is shutting down", kind="server_error")
    if state.model is None or state.batcher is None:
        raise ApiError(
            503, "the model is still loading", kind="server_error", headers={"Retry-After": "5"}
        )
    raw = await _read_body(request, int(config.max_body_mb * 1024 * 1024))
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    return body


async def _embed(request: Request, state: _State, parsed: EmbeddingRequest) -> list[Embedded]:
    """Embed a parsed request's items through the batcher (so they are batched with all other
    traffic and bounded by its queue) and wait for them, counting them in the metrics. Its
    media files must stay on disk until this returns."""
    assert state.batcher is not None
    jobs = [
        Job(item, group, texts, parsed.instruction, parsed.dimensions)
        for item, group, texts in zip(parsed.items, parsed.groups, parsed.texts)
    ]
    try:
        state.batcher.submit(jobs)
    except QueueFull:
        raise ApiError(
            429,
            "the server is busy (its queue is full); retry later",
            kind="rate_limit_error",
            headers={"Retry-After": "1"},
        ) from None
    except Closed:
        raise ApiError(503, "the server is shutting down", kind="server_error") from None
    results = await _results(request, jobs)
    for group in parsed.groups:
        state.metrics.items.labels(group).inc()
    return results


async def _results(request: Request, jobs: list[Job]) -> list[Embedded]:
    """Wait for every job; if the client goes away first, cancel them so the worker skips the
    ones not yet started. The lowest-index failed item fails the request."""
    waiting = asyncio.gather(
        *(asyncio.wrap_future(job.future) for job in jobs), return_exceptions=True
    )
    while not (await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S))[0]:
        if await request.is_disconnected():
            for job in jobs:
                job.future.cancel()
            raise ApiError(499, "the client closed the request")
    results = waiting.result()
    for index, result in enumerate(results):
        if isinstance(result, InputError):
            raise item_error(index, result)
        if isinstance(result, BaseException):
            raise result
    return results


def _response_body(parsed: EmbeddingRequest, results: list[Embedded], model: str) -> dict:
    """OpenAI's response; ``base64`` is the little-endian float32 bytes, as OpenAI sends."""
    data: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        vector = result.vector.astype("<f4")
        embedding: Any = (
            vector.tolist()
            if parsed.encoding_format == "float"
            else base64.b64encode(vector.tobytes()).decode("ascii")
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(result.tokens for result in results)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class _Server(uvicorn.Server):
    """uvicorn's server, marking the app as draining the moment a shutdown signal arrives, so
    that requests still reaching it get 503 and ``/ready`` fails while in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, state: _State):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.state.draining = True
        if self.state.batcher is not None:  # requests in flight finish now, not after max wait
            self.state.batcher.flush()
        super().handle_exit(sig, frame)


def serve(config: ServeConfig) -> None:
    """Run the server until SIGINT/SIGTERM; raise if the model could not be loaded (a server
    that can never be ready must exit rather than answer 503 forever)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    app = create_app(config)
    state: _State = app.state.lcoemb
    server = _Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_level="info"), state
    )
    state.on_load_error = lambda: setattr(server, "should_exit", True)
    server.run()
    if state.load_error is not None:
        raise state.load_error
