"""`lcoemb serve`: the OpenAI-compatible embeddings server, run as a real process on 127.0.0.1.

One server (the tiny random Qwen2.5-Omni, on CPU) serves the whole module; its vectors are
compared with those of an in-test :class:`OmniEncoder` on the same items. A server without a
media root is built in-process from the same encoder, for the one check that needs it.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import PIL.Image
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.inputs import ImageRef
from lcoemb.serving import ServeConfig, create_app
from tests.conftest import tone, write_video

API_KEY = "test-key"
MAX_ITEMS = 8
READY_TIMEOUT_S = 120


@dataclass
class Server:
    url: str
    model: str
    media_root: Path
    client: httpx.Client
    pid: int
    tmpdir: Path  # the server process's TMPDIR, where requests put their uploads

    def uploads(self) -> list[Path]:
        """Request upload folders still on disk."""
        return sorted(self.tmpdir.glob("lcoemb-serve-*"))

    def rss_mb(self) -> float:
        """The server process's resident memory now (``VmRSS``), in MB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return (
            int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            / 1024
        )

    def embed(self, body: dict[str, Any]) -> httpx.Response:
        return self.client.post("/v1/embeddings", json={"model": self.model} | body)


@dataclass
class Media:
    png: Path
    wav: Path
    mp4: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def image_part(png: bytes | Path) -> dict[str, Any]:
    data = png.read_bytes() if isinstance(png, Path) else png
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def audio_part(wav: bytes | Path) -> dict[str, Any]:
    data = wav.read_bytes() if isinstance(wav, Path) else wav
    return {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"},
    }


def video_part(mp4: bytes | Path) -> dict[str, Any]:
    data = mp4.read_bytes() if isinstance(mp4, Path) else mp4
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()
    return {"type": "video_url", "video_url": {"url": url}}


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    cosines = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosines.min() >= 0.9999, cosines


def wait_until_ready(client: httpx.Client, process: subprocess.Popen, log: Path) -> None:
    """Poll ``/ready`` until the server process has loaded its model (the log explains any
    failure: the process died, or it was not ready within ``READY_TIMEOUT_S``)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            if client.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    folder = tmp_path_factory.mktemp("serve-media")
    rng = np.random.default_rng(0)
    png = folder / "photo.png"
    PIL.Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(png)
    wav = folder / "tone.wav"
    sf.write(wav, tone(1.0, 16_000)[0], 16_000)
    mp4 = write_video(folder / "clip.mp4", seconds=1.0, fps=4)
    return Media(png, wav, mp4)


@pytest.fixture(scope="module")
def server(
    omni_path: Path, media: Media, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("media-root")
    (root / "photo.png").write_bytes(media.png.read_bytes())
    (root / "link.png").symlink_to(media.png)  # resolves outside the root
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve-log") / "server.log"
    tmpdir = tmp_path_factory.mktemp("serve-tmp")
    env = os.environ | {
        "TMPDIR": str(tmpdir),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "LCOEMB_API_KEY": API_KEY,
    }
    command = [
        sys.executable,
        "-m",
        "lcoemb.cli",
        "serve",
        "--model",
        str(omni_path),
        "--device",
        "cpu",
        "--port",
        str(port),
        "--max-body-mb",
        "1",
        "--max-items-per-request",
        str(MAX_ITEMS),
        "--max-batch-size",
        "16",
        "--max-wait-ms",
        "50",
        "--media-root",
        str(root),
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        try:
            wait_until_ready(client, process, log_path)
            yield Server(url, str(omni_path), root, client, process.pid, tmpdir)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
    # a graceful shutdown: uvicorn finishes the lifespan, then re-raises the signal it caught
    log_text = log_path.read_text()
    assert code in (0, -signal.SIGTERM), log_text
    assert "Application shutdown complete" in log_text, log_text


@pytest.fixture(scope="module")
def encoder(omni_path: Path) -> OmniEncoder:
    """The library's encoder with the server's defaults (the device's own dtype included)."""
    return OmniEncoder.from_pretrained(omni_path, device="cpu")


def test_health_ready_models(server: Server) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    assert server.client.get("/ready").status_code == 200
    models = server.client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [server.model]


def test_openai_client_text(server: Server, encoder: OmniEncoder) -> None:
    texts = ["a cat on a mat", "the quarterly report", "ein Hund"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    for fmt in ("float", openai.NOT_GIVEN):  # unless told, the client asks for base64 itself
        result = client.embeddings.create(model=server.model, input=texts, encoding_format=fmt)
        got = np.array([d.embedding for d in result.data], dtype=np.float32)
        assert_same(got, encoder.encode(texts))
    tokenizer = encoder.backbone.tokenizer
    expected_tokens = sum(len(tokenizer(t).input_ids) for t in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected_tokens
    single = client.embeddings.create(model=server.model, input="a cat on a mat")
    assert_same(np.array([single.data[0].embedding], dtype=np.float32), encoder.encode(texts[:1]))


def test_media_and_interleaved_items_equal_encode(
    server: Server, media: Media, encoder: OmniEncoder
) -> None:
    response = server.embed(
        {
            "input": [
                [image_part(media.png)],
                [audio_part(media.wav)],
                [video_part(media.mp4)],
                [{"type": "text", "text": "a photo of"}, image_part(media.png)],
                "plain text",
                [{"type": "image_url", "image_url": {"url": "photo.png"}}],  # under --media-root
                [
                    {
                        "type": "image_url",
                        "image_url": {"url": f"file://{server.media_root}/photo.png"},
                    }
                ],
            ]
        }
    )
    image = ImageRef(media.png)
    expected = encoder.encode(
        [
            image,
            Audio(media.wav),
            Video(media.mp4),
            ["a photo of", image],
            "plain text",
            image,
            image,
        ]
    )
    assert_same(vectors(response), expected)
    assert response.json()["usage"]["prompt_tokens"] > 0


def test_messages_shape(server: Server, media: Media, encoder: OmniEncoder) -> None:
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image_part(media.png)]}
    ]
    one = server.embed({"messages": conversation})
    two = server.embed({"messages": [conversation, [{"role": "user", "content": "hello"}]]})
    assert_same(vectors(one), encoder.encode([["look", ImageRef(media.png)]]))
    assert_same(vectors(two), encoder.encode([["look", ImageRef(media.png)], "hello"]))


def test_dimensions_and_base64(server: Server, media: Media, encoder: OmniEncoder) -> None:
    body = {"input": ["short vectors", [image_part(media.png)]], "dimensions": 16}
    response = server.embed(body | {"encoding_format": "base64"})
    assert response.status_code == 200, response.text
    got = np.stack(
        [
            np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
            for d in response.json()["data"]
        ]
    )
    assert got.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert_same(got, encoder.encode(["short vectors", ImageRef(media.png)], dimensions=16))
    assert_same(vectors(server.embed(body)), got)


def test_concurrent_mixed_requests_are_batched(
    server: Server, media: Media, encoder: OmniEncoder
) -> None:
    parts = [image_part(media.png), audio_part(media.wav), video_part(media.mp4)]
    bodies = []
    for i in range(48):
        kind = i % 4
        bodies.append({"input": [f"request {i}"] if kind == 3 else [[parts[kind]]]})
    with ThreadPoolExecutor(max_workers=48) as pool:
        responses = list(pool.map(server.embed, bodies))
    got = np.concatenate([vectors(r) for r in responses])
    raws = [ImageRef(media.png), Audio(media.wav), Video(media.mp4)]
    expected = encoder.encode([f"request {i}" if i % 4 == 3 else raws[i % 4] for i in range(48)])
    assert_same(got, expected)

    families = {
        f.name: f for f in text_string_to_metric_families(server.client.get("/metrics").text)
    }
    samples = {(s.name, s.labels.get("le")): s.value for s in families["lcoemb_batch_size"].samples}
    assert samples[("lcoemb_batch_size_count", None)] > samples[("lcoemb_batch_size_bucket", "1.0")]
    statuses = {s.labels["status"] for s in families["lcoemb_requests"].samples}
    assert "200" in statuses
    assert "lcoemb_queue_depth" in families and "lcoemb_request_latency_seconds" in families


def test_bad_item_fails_only_its_own_request(
    server: Server, media: Media, encoder: OmniEncoder
) -> None:
    truncated = media.png.read_bytes()[:200]
    bodies = [{"input": [[image_part(truncated if i == 3 else media.png)]]} for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(server.embed, bodies))
    assert responses[3].status_code == 400
    assert "item 0" in responses[3].json()["error"]["message"]
    good = np.concatenate([vectors(r) for i, r in enumerate(responses) if i != 3])
    assert_same(good, encoder.encode([ImageRef(media.png)] * 7))


def test_api_key_required(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as anonymous:
            response = anonymous.post("/v1/embeddings", json={"input": "hi"})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert anonymous.get("/v1/models").status_code == 401
            assert anonymous.get("/health").status_code == 200


def _bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A 1-bit PNG declaring ``width x height`` pixels in a few tens of KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = zlib.compress(bytes(height * (1 + (width + 7) // 8)), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _empty_wav() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(0, dtype=np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def _hostile_cases(media: Media, outside: Path) -> list[tuple[str, Any, int, str]]:
    """(name, JSON body or raw bytes, expected status, a phrase of the error message)."""
    part = {"type": "image_url", "image_url": {"url": ""}}
    path = lambda url: {"input": [[part | {"image_url": {"url": url}}]]}  # noqa: E731
    return [
        ("body over the limit", {"input": "x" * (2 * 1024 * 1024)}, 413, "limit"),
        ("not JSON", b"{this is not json", 400, "not valid JSON"),
        ("input of a wrong type", {"input": 5}, 400, "input must be"),
        (
            "text of a wrong type",
            {"input": [[{"type": "text", "text": 3}]]},
            400,
            "must be a string",
        ),
        ("dimensions of a wrong type", {"input": "a", "dimensions": "8"}, 400, "dimensions"),
        ("token ids", {"input": [[1, 2, 3]]}, 400, "token-id"),
        ("unknown part type", {"input": [[{"type": "hologram"}]]}, 400, "unknown content part"),
        ("other model", {"input": "a", "model": "gpt-4"}, 404, "not served"),
        ("empty text", {"input": ["ok", "  "]}, 400, "item 1: empty text"),
        (
            "bad base64",
            {"input": [[{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]]},
            400,
            "base64",
        ),
        ("truncated PNG", {"input": [[image_part(media.png.read_bytes()[:200])]]}, 400, "decode"),
        (
            "decompression bomb",
            {"input": ["fine", [image_part(_bomb_png())]]},
            400,
            "item 1: image",
        ),
        ("zero-length WAV", {"input": [[audio_part(_empty_wav())]]}, 400, "audio"),
        (
            "corrupt MP4",
            {"input": [[video_part(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)]]},
            400,
            "video",
        ),
        ("http URL", path("https://example.com/cat.png"), 400, "not enabled"),
        ("relative path escaping the root", path("../photo.png"), 400, "outside the media root"),
        (
            "absolute path outside the root",
            path(f"file://{outside}"),
            400,
            "outside the media root",
        ),
        ("symlink out of the root", path("link.png"), 400, "outside the media root"),
        ("missing file under the root", path("nope.png"), 400, "not found"),
        ("too many items", {"input": ["a"] * (MAX_ITEMS + 1)}, 400, "at most"),
    ]


def test_hostile_inputs_get_4xx(server: Server, media: Media) -> None:
    def attack() -> None:
        for name, body, status, phrase in _hostile_cases(media, media.png):
            if isinstance(body, bytes):
                response = server.client.post(
                    "/v1/embeddings", content=body, headers={"Content-Type": "application/json"}
                )
            else:
                response = server.embed(body)
            assert response.status_code == status, (name, response.text)
            error = response.json()["error"]
            assert phrase in error["message"], (name, error)
            assert error["type"] and "code" in error and "param" in error, name
            assert server.client.get("/health").status_code == 200, name

    attack()  # the first round may fill caches (decoders, allocator arenas)
    settled = server.rss_mb()
    for _ in range(3):
        attack()
    # memory stays bounded: repeated hostile requests leave nothing behind
    assert server.rss_mb() - settled < 50, (settled, server.rss_mb())
    # the server still embeds after all of them
    assert vectors(server.embed({"input": "still here"})).shape[0] == 1
    assert server.uploads() == []  # nor anything on disk


def test_uploads_are_removed_after_each_request(server: Server, media: Media) -> None:
    """Media uploads live in a per-request folder that is gone once the response is out,
    whether the request succeeded or failed."""
    assert server.embed({"input": [[image_part(media.png)], [audio_part(media.wav)]]}).is_success
    bad = {"input": [[image_part(media.png)], [{"type": "input_audio", "input_audio": {}}]]}
    assert server.embed(bad).status_code == 400
    assert server.uploads() == []


def test_chunked_body_over_the_limit(server: Server) -> None:
    """A body without Content-Length is cut off once it passes the limit while being read."""
    chunks = (b" " * 65536 for _ in range(32))  # 2 MiB of whitespace, streamed
    response = server.client.post(
        "/v1/embeddings", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_in_process_app_without_media_root_and_with_a_small_queue(
    omni_path: Path, encoder: OmniEncoder
) -> None:
    """Paths are refused without --media-root; a request the queue cannot hold gets 429."""
    config = ServeConfig(model=str(omni_path), max_queue=2)
    with TestClient(create_app(config, encoder=encoder), base_url="http://127.0.0.1") as client:
        body = {"input": [[{"type": "image_url", "image_url": {"url": "/tmp/photo.png"}}]]}
        response = client.post("/v1/embeddings", json=body)
        assert response.status_code == 400
        assert "not enabled" in response.json()["error"]["message"]
        busy = client.post("/v1/embeddings", json={"input": ["a", "b", "c"]})
        assert busy.status_code == 429
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        assert client.post("/v1/embeddings", json={"input": ["no", "key"]}).status_code == 200
