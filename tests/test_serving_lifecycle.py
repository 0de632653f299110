"""`lcoemb serve` lifecycle and opt-in features, each against a real server process on 127.0.0.1:
a client that goes away mid-batch, SIGTERM with requests in flight, ``--cors-origin``, and
``--allow-url-fetch`` against a small HTTP server started here (on 127.0.0.1 only).

Nothing waits for a fixed time: each step waits, under a deadline that only fails the test, for
what ``/metrics`` or ``/ready`` says the server has done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lcoemb import OmniEncoder
from lcoemb.inputs import ImageRef
from tests.test_serving import (
    _free_port,
    assert_same,
    image_part,
    vectors,
    wait_until_ready,
)

ORIGIN = "http://allowed.test"
#: How long a step may take before the test fails (a test timeout, never a measured bound).
DEADLINE_S = 120
#: --max-fetch-mb of the fetching server, and the size of the file that exceeds it.
FETCH_CAP_MB = 0.25
BIG_BYTES = 1024 * 1024


@dataclass
class Process:
    """A running ``lcoemb serve`` and a client for it."""

    process: subprocess.Popen[bytes]
    client: httpx.Client
    port: int
    log: Path


def _env() -> dict[str, str]:
    """Offline, and without proxies, so that fetches of 127.0.0.1 go straight there."""
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in proxies}
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after :data:`DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextmanager
def serve(model: Path, log: Path, *flags: str) -> Iterator[Process]:
    """``lcoemb serve`` with ``flags``, ready; stopped with SIGTERM unless a test already did."""
    port = _free_port()
    command = [sys.executable, "-m", "lcoemb.cli", "serve", "--model", str(model)]
    command += ["--device", "cpu", "--port", str(port), *flags]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        try:
            wait_until_ready(client, process, log)
            yield Process(process, client, port, log)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` on ``/metrics``; 0 if it is not there yet."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def raw_post(port: int, body: bytes) -> socket.socket:
    """Send ``POST /v1/embeddings`` on a bare socket and return it unread, so the test decides
    when the client goes away."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_client_gone_mid_batch_its_items_are_dropped(omni_path: Path, tmp_path: Path) -> None:
    """Three items wait for a fourth (batch 4, no deadline to speak of); their client hangs up;
    the next request's one item then fills the batch, and only it is embedded."""
    flags = ["--max-batch-size", "4", "--max-wait-ms", "600000"]
    with serve(omni_path, tmp_path / "server.log", *flags) as server:
        client = server.client
        sock = raw_post(server.port, b'{"input": ["one", "two", "three"]}')
        wait_for(lambda: metric(client, "lcoemb_queue_depth") == 3, "the items to be queued")
        sock.close()
        wait_for(
            lambda: metric(client, "lcoemb_requests_total", status="499") == 1,
            "the server to notice the client left",
        )
        assert vectors(client.post("/v1/embeddings", json={"input": ["four"]})).shape[0] == 1
        assert metric(client, "lcoemb_batch_size_count") == 1
        assert metric(client, "lcoemb_batch_size_sum") == 1  # "four" alone reached the model
        assert metric(client, "lcoemb_items_total", modality="text") == 1
        assert metric(client, "lcoemb_queue_depth") == 0
        # no --cors-origin: no CORS header, even for a preflight
        preflight = client.options(
            "/v1/embeddings",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        response = client.get("/health", headers={"Origin": ORIGIN})
        assert "access-control-allow-origin" not in response.headers


def test_sigterm_finishes_requests_in_flight(
    omni_path: Path, default_encoder: OmniEncoder, tmp_path: Path
) -> None:
    """SIGTERM while two items wait for their batch: their request still gets its vectors at once
    (the batcher stops waiting for a fuller batch, here 10 minutes), a new request is refused (503,
    or no connection once the listener is closed), and the process exits."""
    flags = ["--max-batch-size", "64", "--max-wait-ms", "600000"]
    with serve(omni_path, tmp_path / "server.log", *flags) as server, ThreadPoolExecutor(1) as pool:
        client = server.client
        texts = ["in flight", "also in flight"]
        in_flight = pool.submit(client.post, "/v1/embeddings", json={"input": texts})
        wait_for(lambda: metric(client, "lcoemb_queue_depth") == 2, "the items to be queued")
        server.process.send_signal(signal.SIGTERM)

        def draining() -> bool:
            try:
                return client.get("/ready").status_code == 503
            except httpx.TransportError:
                return True

        wait_for(draining, "the server to start draining")
        try:
            late = client.post("/v1/embeddings", json={"input": ["too late"]})
            assert late.status_code == 503, late.text
        except httpx.TransportError:
            pass  # the listener is already closed: refused, as intended
        assert_same(vectors(in_flight.result(timeout=DEADLINE_S)), default_encoder.encode(texts))
        code = server.process.wait(timeout=DEADLINE_S)
    assert code in (0, -signal.SIGTERM), server.log.read_text()
    assert "Application shutdown complete" in server.log.read_text()


class _Media(BaseHTTPRequestHandler):
    """The files the fetching tests name: a PNG, one too large (without a length, so only
    counting while reading can catch it), one declaring too large a length, a missing one, and
    two that never finish (silent, and trickling a byte at a time) until the test releases them."""

    png: bytes = b""
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/photo.png":
            self._head(200, "image/png", len(self.png))
            self.wfile.write(self.png)
        elif self.path == "/big.png":
            self._head(200, "image/png", None)
            for _ in range(BIG_BYTES // 65536):
                self.wfile.write(bytes(65536))
        elif self.path == "/declared.png":
            self._head(200, "image/png", BIG_BYTES)
        elif self.path == "/silent.png":
            self.release.wait(DEADLINE_S)
        elif self.path == "/trickle.png":
            self._head(200, "image/png", None)
            while not self.release.wait(0.05):
                self.wfile.write(b"\x00")
                self.wfile.flush()
        else:
            self._head(404, "text/plain", 0)

    def _head(self, status: int, mime: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet: the test reports what matters."""


@pytest.fixture(scope="module")
def default_encoder(omni_path: Path) -> OmniEncoder:
    """The library's encoder with the server's defaults (the device's own dtype included)."""
    return OmniEncoder.from_pretrained(omni_path, device="cpu")


@pytest.fixture(scope="module")
def media_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A threaded HTTP server on 127.0.0.1 serving :class:`_Media`; its URL and the PNG file."""
    png = tmp_path_factory.mktemp("site") / "photo.png"
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(png)
    _Media.png = png.read_bytes()
    _Media.release.clear()
    site = ThreadingHTTPServer(("127.0.0.1", 0), _Media)
    site.daemon_threads = True
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}", png
    finally:
        _Media.release.set()
        site.shutdown()
        site.server_close()


@pytest.fixture(scope="module")
def fetching(omni_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A server with --allow-url-fetch, small fetch caps, and --cors-origin."""
    flags = ["--allow-url-fetch", "--max-fetch-mb", str(FETCH_CAP_MB), "--fetch-timeout-s", "1"]
    flags += ["--cors-origin", ORIGIN, "--max-wait-ms", "20"]
    log = tmp_path_factory.mktemp("fetching") / "server.log"
    with serve(omni_path, log, *flags) as server:
        yield server


def url_part(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_cors_header_only_for_the_allowed_origin(fetching: Process) -> None:
    client = fetching.client
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = client.options("/v1/embeddings", headers={"Origin": ORIGIN} | preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    response = client.post("/v1/embeddings", json={"input": "hi"}, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    other = client.post(
        "/v1/embeddings", json={"input": "hi"}, headers={"Origin": "http://other.test"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_url_fetch_embeds_the_fetched_image(
    fetching: Process, media_site: tuple[str, Path], default_encoder: OmniEncoder
) -> None:
    site, png = media_site
    body = {"input": ["text first", [url_part(f"{site}/photo.png")], [image_part(png)]]}
    got = vectors(fetching.client.post("/v1/embeddings", json=body))
    assert_same(got, default_encoder.encode(["text first", ImageRef(png), ImageRef(png)]))


@pytest.mark.parametrize(
    ("path", "phrase", "code"),
    [
        ("/big.png", "over the server's limit", "too_large"),
        ("/declared.png", "over the server's limit", "too_large"),
        ("/silent.png", "no answer within 1 s", "fetch_timeout"),
        ("/trickle.png", "no answer within 1 s", "fetch_timeout"),
        ("/missing.png", "HTTP 404", "fetch_failed"),
    ],
)
def test_url_fetch_failures_are_400_naming_the_item(
    fetching: Process, media_site: tuple[str, Path], path: str, phrase: str, code: str
) -> None:
    site, _ = media_site
    body = {"input": ["fine", [url_part(f"{site}{path}")]]}
    response = fetching.client.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith(f"item 1: cannot fetch image from {site}{path}"), error
    assert phrase in error["message"] and error["code"] == code, error
    assert vectors(fetching.client.post("/v1/embeddings", json={"input": "after"})).shape[0] == 1
