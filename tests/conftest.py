"""Shared fixtures: tiny random checkpoints built locally and deterministic media files."""

from __future__ import annotations

import functools
import os
from pathlib import Path

# `make test` runs the suite on pytest-xdist workers. Each gets its share of the cores, before
# torch starts its thread pool, and so do the processes its tests start (the CLI, servers,
# torchrun): OpenMP threads that outnumber the cores stall at every barrier, which made
# parallel workers slower than one.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from lcoemb.testing import make_tiny_qwen2_5_omni_thinker, make_tiny_qwen2_5_vl

# Images are capped at 8x8 merged patches so the tiny vision tower stays fast.
TINY_MAX_PIXELS = 8 * 8 * 28 * 28


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def omni_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen2_5_omni_thinker(
        tmp_path_factory.mktemp("tiny-omni"), max_pixels=TINY_MAX_PIXELS
    )


@pytest.fixture(scope="session")
def vl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-vl"), max_pixels=TINY_MAX_PIXELS)


@pytest.fixture(scope="session")
def omni_encoder(omni_path: Path):
    from lcoemb import OmniEncoder

    # the reference precision, which the parity tests compare against on every CPU
    return OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="bfloat16")


@pytest.fixture(scope="session")
def omni_adapter(omni_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random, non-identity LoRA adapter for the tiny thinker (q and v projections)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    base = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni_path)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    )
    torch.manual_seed(0)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    out = tmp_path_factory.mktemp("tiny-omni-adapter") / "adapter"
    lora.save_pretrained(out)
    return out


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine (channels, samples) float32, each channel at a slightly different level."""
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave * (1 - 0.2 * c) for c in range(channels)])


def write_video(path: Path, seconds: float, fps: int, size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 clip of a square moving left to right over a coloured background."""
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((h, w, 3), (30, 60, 90), np.uint8)
            x = int(i / max(1, seconds * fps - 1) * (w - 16))
            img[16:32, x : x + 16] = (250, 200, 20)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_m4a(path: Path, wave: np.ndarray, sr: int) -> Path:
    """AAC audio in an MP4 container (a compressed format soundfile does not read)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        samples = (wave[0] * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    files: dict[str, Path] = {}
    sf.write(d / "tone16k.wav", tone(2.0, 16_000)[0], 16_000)
    sf.write(d / "stereo44k.wav", tone(1.5, 44_100, channels=2).T, 44_100)
    sf.write(d / "empty.wav", np.zeros((0,), np.float32), 16_000)
    files["wav16k"], files["wav44k_stereo"], files["wav_empty"] = (
        d / "tone16k.wav",
        d / "stereo44k.wav",
        d / "empty.wav",
    )
    files["m4a"] = write_m4a(d / "tone.m4a", tone(1.0, 22_050), 22_050)
    files["mp4"] = write_video(d / "clip.mp4", seconds=3, fps=10)
    files["mp4_long"] = write_video(d / "long.mp4", seconds=40, fps=4, size=(32, 32))
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    files["wav_corrupt"], files["mp4_corrupt"], files["png_corrupt"] = (
        d / "corrupt.wav",
        d / "corrupt.mp4",
        d / "corrupt.png",
    )
    files["audio_only_mp4"] = write_m4a(d / "audio_only.mp4", tone(1.0, 16_000), 16_000)
    return files


@functools.cache
def gemm_rows_independent() -> bool:
    """Whether this CPU's GEMMs give a row the same bits whatever the number of rows, in bf16
    (LCO-Mini's SmolLM2) and float32 (its unmerged LoRA), at LCO-Mini's shapes.

    Bit-identity between an item's batched and unbatched vectors rests on it. It held on the
    AMD EPYC the fast paths were built on; on an Intel Xeon with AMX, oneDNN picks GEMM kernels
    by row count, so batched rows move by a last bit, which SmolLM2 in bf16 amplifies to
    cosines of ~0.9994 (as it does for the plain forward's own batching)."""
    generator = torch.Generator().manual_seed(0)
    cases = [(torch.bfloat16, 1536, 576), (torch.float32, 576, 16)]
    for dtype, k, n in cases:
        w = torch.randn(n, k, generator=generator).to(dtype)
        x = torch.randn(700, k, generator=generator).to(dtype)
        full = F.linear(x, w)
        if not all(torch.equal(F.linear(x[:m], w), full[:m]) for m in (1, 44, 200)):
            return False
    return True


def assert_within_one_bf16_step(got: torch.Tensor, expected: torch.Tensor) -> None:
    """``got`` equals ``expected`` but for at most 0.1 % of its values, each off by at most one
    bf16 step: a kernel that sums in another order on some CPUs (an Intel Xeon), bit-identical
    on others (an AMD EPYC)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    differ = got != expected
    assert differ.float().mean() <= 1e-3, float(differ.float().mean())
    step = expected.float().abs() * 2.0**-7  # bf16 keeps 8 significant bits
    assert ((got.float() - expected.float()).abs() <= step)[differ].all()
