"""Every backbone family through the real command line: ``lcoemb analyze``, ``index build`` and
``index search``, and ``encode`` on each family's tiny random checkpoint; ``eval`` and ``grsl
measure`` on SmolVLM and a real ``lcoemb serve`` process on LLaVA-NeXT (one family each, to keep
the run short). None of these commands has per-family code: each family must work through its
backbone module alone.

The per-family modules (``tests/test_backbone_*.py``) cover parity, training, generation and
all-layer states; this module covers the commands around them.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
import soundfile as sf

from lcoemb.cli import main
from lcoemb.testing import (
    make_tiny_gemma3n,
    make_tiny_llava_next,
    make_tiny_qwen2_vl,
    make_tiny_qwen3_omni_thinker,
    make_tiny_qwen3_vl,
    make_tiny_smolvlm,
)
from tests.conftest import tone
from tests.test_serving import _free_port, audio_part, image_part, wait_until_ready

pytestmark = pytest.mark.slow

SR = 16_000
#: decoder depth and width of every tiny checkpoint here (3 layers: 4 states per item)
LAYERS = 3
HIDDEN = 64

#: the size of every tiny checkpoint here
SIZE = {"num_hidden_layers": LAYERS, "hidden_size": HIDDEN}
#: each family's builder, with its per-family pixel cap as in its own test module
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2_vl": lambda p: make_tiny_qwen2_vl(p, **SIZE, max_pixels=8 * 8 * 28 * 28),
    "qwen3_vl": lambda p: make_tiny_qwen3_vl(p, **SIZE, max_pixels=8 * 8 * 32 * 32),
    "qwen3_omni": lambda p: make_tiny_qwen3_omni_thinker(p, **SIZE, max_pixels=8 * 8 * 32 * 32),
    "llava_next": lambda p: make_tiny_llava_next(p, **SIZE),
    "smolvlm": lambda p: make_tiny_smolvlm(p, **SIZE, max_pixels=64 * 64),
    "gemma3n": lambda p: make_tiny_gemma3n(p, **SIZE, max_pixels=64 * 64),
}
#: the families with an audio tower
AUDIO = {"qwen3_omni", "gemma3n"}


@dataclass(frozen=True)
class Family:
    name: str
    path: Path

    @property
    def audio(self) -> bool:
        return self.name in AUDIO


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated offline data (eval, grsl) goes to a temporary cache, never the user's."""
    monkeypatch.setenv("LCOEMB_CACHE", str(tmp_path_factory.getbasetemp() / "lcoemb-cache"))


@pytest.fixture(scope="module", params=list(BUILDERS))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Family:
    """One tiny random checkpoint per family, built once for the module."""
    name = request.param
    return Family(name, BUILDERS[name](tmp_path_factory.mktemp(f"tiny-{name}")))


def _images(folder: Path, n: int) -> list[Path]:
    """``n`` clearly different PNGs of different sizes: noise, stripes and flat colours."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    stripes = np.stack([(x // 8 % 2) * 255, (y // 8 % 2) * 255, x * 3], -1).astype(np.uint8)
    pictures = [
        PIL.Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)),
        PIL.Image.fromarray(stripes),
        PIL.Image.new("RGB", (60, 24), (250, 30, 20)),
        PIL.Image.fromarray(np.full((36, 36, 3), (20, 60, 240), np.uint8)),
    ]
    paths = []
    for i, picture in enumerate(pictures[:n]):
        picture.save(folder / f"image{i}.png")
        paths.append(folder / f"image{i}.png")
    return paths


def _clips(folder: Path, n: int) -> list[Path]:
    """``n`` one-second 16 kHz tones of different pitch and level, as WAV files."""
    paths = []
    for i in range(n):
        wave = tone(1.0, SR, freq=220.0 * (i + 1))[0] * (1.0 - 0.2 * i)
        sf.write(folder / f"clip{i}.wav", wave, SR)
        paths.append(folder / f"clip{i}.wav")
    return paths


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cpu32(family: Family) -> list[str]:
    return ["--model", str(family.path), "--device", "cpu", "--dtype", "float32"]


def test_analyze(family: Family, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    captions = ["random noise", "red and green stripes", "a wide red bar", "a blue square"]
    rows = [
        {"text": c, "image": p.name} for c, p in zip(captions, _images(tmp_path, len(captions)))
    ]
    sounds = ["a low hum", "a middle tone", "a high whistle", "a very high beep"]
    if family.audio:
        rows += [{"text": s, "audio": p.name} for s, p in zip(sounds, _clips(tmp_path, 4))]
    pairs = _jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "analysis"
    args = ["analyze", *_cpu32(family), "--pairs", str(pairs), "--k", "2", "--output", str(out)]
    assert main(args) == 0
    report = json.loads((out / "analysis.json").read_text())
    modalities = {"text", "image"} | ({"audio"} if family.audio else set())
    assert set(report["anisotropy"]) == modalities
    assert report["layers"] == list(range(LAYERS + 1))
    for modality, values in report["anisotropy"].items():
        assert len(values) == LAYERS + 1, modality
        assert all(np.isfinite(v) and -1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in values), values
    # the last layer tells the items apart (the embedding layer, all on one prompt token, cannot)
    assert all(values[-1] < 1.0 - 1e-4 for values in report["anisotropy"].values())
    assert set(report["mutual_knn"]) == {f"{m}-text" for m in modalities - {"text"}}
    assert all(0.0 <= v[-1] <= 1.0 for v in report["mutual_knn"].values())
    assert (out / "anisotropy.png").stat().st_size > 0
    assert "final-layer anisotropy" in capsys.readouterr().out


def test_index_build_and_search(
    family: Family, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "folder"
    src.mkdir()
    (src / "lighthouse.txt").write_text("A short note about a lighthouse by the sea.")
    (src / "recipe.txt").write_text("Mix flour, water and salt; bake the bread for an hour.")
    (image,) = _images(src, 1)
    files = {"lighthouse.txt", "recipe.txt", image.name}
    if family.audio:
        files.add(_clips(src, 1)[0].name)
    out = tmp_path / "index"
    args = ["index", "build", *_cpu32(family), "--input", str(src), "--output", str(out)]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"items in the index: {len(files)}" in printed and "errors: 0" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dimension"] == HIDDEN and manifest["status"] == "complete"

    assert main(["index", "search", str(out), "lighthouse by the sea", "-k", "10", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert {h["path"] for h in hits} == files
    assert [h["rank"] for h in hits] == list(range(1, len(files) + 1))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))

    # an indexed image finds itself first: queries are embedded as the documents were
    assert main(["index", "search", str(out), "--image", str(image), "-k", "1", "--json"]) == 0
    (top,) = json.loads(capsys.readouterr().out)
    assert top["path"] == image.name and top["score"] == pytest.approx(1.0, abs=1e-4)


def test_encode(family: Family, tmp_path: Path) -> None:
    paths = _images(tmp_path, 2)
    rows = [{"text": "a red circle"}, {"image": paths[0].name}, {"text": "hello world"}]
    rows += [{"image": paths[1].name}]
    items = _jsonl(tmp_path / "items.jsonl", rows)
    out = tmp_path / "vectors.npy"
    args = ["encode", *_cpu32(family), "--input", str(items), "--output", str(out), "--quiet"]
    assert main(args) == 0
    vectors = np.load(out)
    assert vectors.shape == (len(rows), HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = vectors @ vectors.T
    assert cosines[~np.eye(len(rows), dtype=bool)].max() < 0.9999  # four different vectors


@pytest.mark.parametrize("family", ["smolvlm"], indirect=True)
def test_grsl_measure_then_eval(
    family: Family, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``grsl measure`` with its own 2-step text-only training, then ``eval`` of that adapter;
    the model has no audio, so an audio task is skipped with the reason."""
    out = tmp_path / "measure"
    args = ["grsl", "measure", "--models", str(family.path), "--train-steps", "2"]
    args += ["--n-generation", "1", "--offline-size", "4", "--output", str(out)]
    assert main(args) == 0
    (row,) = csv.DictReader((out / "scores.csv").open())
    assert row["model"] == str(family.path)
    assert 0.0 <= float(row["generation"]) <= 1.0
    assert 0.0 <= float(row["representation"]) <= 1.0
    (measured,) = json.loads((out / "measure.json").read_text())["models"]
    assert "scene_exact_match" in measured["generation_scores"]
    assert not any("speech" in key for key in measured["generation_scores"])  # no audio tower
    adapter = Path(measured["adapter"])
    assert (adapter / "adapter_config.json").is_file()

    evaluated = tmp_path / "eval"
    tasks = "LCOOfflineTextSTS,LCOOfflineSceneI2T,LCOOfflineSpeechT2A"
    args = ["eval", *_cpu32(family), "--adapter", str(adapter), "--tasks", tasks]
    args += ["--offline-size", "4", "--batch-size", "4", "--output", str(evaluated)]
    capsys.readouterr()
    assert main(args) == 0
    assert "LCOOfflineSceneI2T" in capsys.readouterr().out
    summary = json.loads((evaluated / "summary.json").read_text())
    assert set(summary["tasks"]) == {"LCOOfflineTextSTS", "LCOOfflineSceneI2T"}
    assert all(0.0 <= t["main_score"] <= 1.0 for t in summary["tasks"].values())
    assert "needs audio" in summary["skipped"]["LCOOfflineSpeechT2A"]


@dataclass
class Server:
    client: httpx.Client
    model: str

    def embed(self, inputs: list) -> httpx.Response:
        return self.client.post("/v1/embeddings", json={"model": self.model, "input": inputs})


@pytest.fixture
def server(family: Family, tmp_path: Path) -> Iterator[Server]:
    """``lcoemb serve`` on the family's checkpoint as a real process on a free local port, ready
    (or the test fails with its log); always stopped, killed if SIGTERM does not end it."""
    port = _free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "lcoemb.cli", "serve", *_cpu32(family), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "LCOEMB_API_KEY"}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_until_ready(client, process, log)
            yield Server(client, str(family.path))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@pytest.mark.parametrize("family", ["llava_next"], indirect=True)
def test_serve(server: Server, tmp_path: Path) -> None:
    (png,) = _images(tmp_path, 1)
    response = server.embed(["a red circle", [image_part(png)]])
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    vectors = np.array([d["embedding"] for d in data], dtype=np.float32)
    assert vectors.shape == (2, HIDDEN)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9999

    (wav,) = _clips(tmp_path, 1)
    refused = server.embed(["fine", [audio_part(wav)]])
    assert 400 <= refused.status_code < 500, refused.text
    message = refused.json()["error"]["message"]
    assert "item 1" in message and "audio" in message, message
