"""Hardening of input handling: scaling, rate checks, strict JSONL records, bounded decoding
memory, file descriptors, and the ``encode`` output file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

import lcoemb.inputs
import lcoemb.training
from lcoemb.cli import main
from lcoemb.commands import save_npy_atomic
from lcoemb.config import TrainConfig
from lcoemb.inputs import (
    Audio,
    ImageRef,
    InputError,
    Limits,
    Video,
    frame_indices,
    inspect_item,
    load_audio,
    load_item,
    load_video,
    read_items_jsonl,
)
from lcoemb.training import DataError, collate_triplets, load_triplets
from lcoemb.training.trainer import train
from tests.conftest import tone, write_m4a


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ----------------------------------------------------------------------------- integer audio


def _int16_tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    return np.round(tone(seconds, sr, channels=channels) * 32767).astype(np.int16)


def test_integer_audio_arrays_are_scaled_like_audio_files():
    pcm = _int16_tone(1.0, 16_000)[0]
    expected = load_audio(Audio(pcm.astype(np.float32) / 32768, 16_000), 0, Limits())
    for source in (pcm, torch.from_numpy(pcm)):
        np.testing.assert_allclose(load_audio(Audio(source, 16_000), 0, Limits()), expected)
    wide = pcm.astype(np.int32) << 16  # the same samples as 32-bit PCM
    np.testing.assert_allclose(load_audio(Audio(wide, 16_000), 0, Limits()), expected, atol=1e-7)
    unsigned = (pcm.astype(np.int32) + 32768).astype(np.uint16)  # centred at 2**15
    np.testing.assert_allclose(load_audio(Audio(unsigned, 16_000), 0, Limits()), expected)


def test_bfloat16_tensors_load_as_audio_and_video_frames():
    """numpy has no bfloat16: such tensors are widened rather than failing with a TypeError."""
    wave = torch.from_numpy(tone(0.5, 16_000)[0]).to(torch.bfloat16)
    got = load_audio(Audio(wave, 16_000), 0, Limits())
    np.testing.assert_array_equal(got, wave.float().numpy())
    frames = torch.zeros(2, 8, 8, 3, dtype=torch.bfloat16)
    with pytest.raises(InputError, match=r"item 4: video frame 0 must be uint8, got float32"):
        load_video(Video(frames), 4, Limits())


@pytest.mark.parametrize("samples", [np.ones(100, bool), np.ones(100, np.complex64)])
def test_bool_and_complex_audio_arrays_are_rejected(samples):
    with pytest.raises(InputError, match=r"item 3: audio samples must be integers or floats"):
        load_item(Audio(samples, 16_000), 3)


def test_int16_audio_array_embeds_like_its_float_samples(omni_encoder):
    pcm = _int16_tone(1.0, 16_000)[0]
    vecs = omni_encoder.encode([Audio(pcm, 16_000), Audio(pcm.astype(np.float32) / 32768, 16_000)])
    assert _cosine(vecs[0], vecs[1]) > 0.9999


def test_packed_integer_audio_through_pyav_is_scaled_and_deinterleaved(tmp_path):
    """soundfile cannot read a .mov; PyAV gives packed s16 frames, (1, samples * channels)."""
    sr = 22_050
    pcm = _int16_tone(1.0, sr, channels=2)
    path = tmp_path / "stereo.mov"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=sr)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), "s16", "stereo")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    wave = load_audio(Audio(path), 0, Limits())
    expected = load_audio(Audio(pcm.astype(np.float32) / 32768, sr), 0, Limits())
    assert wave.shape == expected.shape == (16_000,)
    np.testing.assert_allclose(wave, expected, atol=1e-6)


# ----------------------------------------------------------------------------- rates and text


@pytest.mark.parametrize("rate", [0, -16_000, 16_000.5, float("nan"), True, "16000"])
def test_bad_sampling_rates_fail_at_inspection_with_the_index(media, rate):
    for source in (np.zeros(100, np.float32), media["wav16k"]):
        with pytest.raises(InputError, match=r"item 4: sampling_rate must be a positive whole"):
            inspect_item(Audio(source, sampling_rate=rate), 4)
    # whole numbers of any numeric type are fine
    samples = tone(0.5, 8_000)[0]
    expected = load_audio(Audio(samples, 8_000), 0, Limits())
    for whole in (8_000.0, np.int64(8_000), np.float32(8_000)):
        assert inspect_item(Audio(samples, whole), 0).cost > 0
        np.testing.assert_array_equal(load_audio(Audio(samples, whole), 0, Limits()), expected)


@pytest.mark.parametrize("fps", [-2, 0, float("nan"), float("inf"), True, "2"])
def test_bad_fps_fails_at_inspection_with_the_index(media, fps):
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(10)]
    for source in (frames, media["mp4"]):
        with pytest.raises(InputError, match=r"item 6: fps must be a positive finite number"):
            inspect_item(Video(source, fps=fps), 6)
    # positive fractions of any numeric type are fine: 10 frames at 2.5 fps are 4 s -> 8 frames
    for fine in (2.5, np.float64(2.5)):
        (video,) = load_item(Video(frames, fps=fine), 0).of("video")
        assert video.shape[0] == 8


def test_text_with_a_lone_surrogate_fails_at_inspection():
    with pytest.raises(InputError, match=r"item 2: text is not valid Unicode: surrogates"):
        inspect_item(["fine", "a\ud800b"], 2)


# ----------------------------------------------------------------------------- JSONL records


def test_encode_records_accept_their_options(tmp_path, media):
    path = tmp_path / "items.jsonl"
    records = [
        {"audio": str(media["wav16k"]), "sampling_rate": 16_000},
        {"video": str(media["mp4"]), "fps": 10},
        {"parts": [{"text": "a"}, {"audio": str(media["wav16k"]), "sampling_rate": 16000.0}]},
    ]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in records).encode())
    items, lines = read_items_jsonl(path)
    assert lines == [1, 2, 3]
    assert items[0] == Audio(media["wav16k"], 16_000) and items[1] == Video(media["mp4"], 10)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"text": "a", "foo": 1}, r":1: unknown key\(s\) 'foo' for 'text'"),
        ({"image": "pic.png", "sampling_rate": 16000}, r":1: unknown key\(s\) 'sampling_rate'"),
        ({"audio": "tone.wav", "fps": 2}, r":1: unknown key\(s\) 'fps' for 'audio'"),
        ({"video": "clip.mp4", "sampling_rate": 1}, r":1: unknown key\(s\) 'sampling_rate'"),
        ({"parts": [{"text": "a"}, {"text": "b", "x": 0}]}, r":1 part 1: unknown key\(s\) 'x'"),
        ({"video": "clip.mp4", "fps": "fast"}, r":1: fps must be a positive finite number"),
        ({"video": "clip.mp4", "fps": -2}, r":1: fps must be a positive finite number"),
        ({"audio": "tone.wav", "sampling_rate": "high"}, r":1: sampling_rate must be a posit"),
        ({"audio": "tone.wav", "sampling_rate": 0}, r":1: sampling_rate must be a positive"),
        ({"text": "a\ud800"}, r":1: text is not valid Unicode"),
    ],
)
def test_bad_encode_records_name_file_and_line(tmp_path, media, line, message):
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "pic.png")
    (tmp_path / "clip.mp4").symlink_to(media["mp4"])
    (tmp_path / "tone.wav").symlink_to(media["wav16k"])
    path = _jsonl(tmp_path / "items.jsonl", [line])
    with pytest.raises(InputError, match=r"items\.jsonl" + message):
        read_items_jsonl(path)


def test_non_utf8_bytes_in_an_encode_file_name_the_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"items\.jsonl:2: not valid UTF-8"):
        read_items_jsonl(path)


# ----------------------------------------------------------------------------- bounded decoding


def _decode_all_then_sample(path: Path, limits: Limits) -> torch.Tensor:
    """The reference: every frame decoded to RGB, then sampled (the behaviour to keep)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        duration = len(frames) / float(stream.average_rate)
    keep = frame_indices(len(frames), duration, limits)
    return torch.from_numpy(np.stack([frames[i] for i in keep])).permute(0, 3, 1, 2)


@pytest.mark.parametrize("miscount", [0, -7, 9])
def test_video_frames_equal_decoding_everything_then_sampling(media, monkeypatch, miscount):
    """Also when the demuxed packet count is not the true frame count (then it is redone)."""
    count = lcoemb.inputs._demuxed_frames
    monkeypatch.setattr(lcoemb.inputs, "_demuxed_frames", lambda c, s: count(c, s) + miscount)
    for name, limits in [
        ("mp4", Limits()),
        ("mp4_long", Limits()),
        ("mp4_long", Limits(video_fps=3.0, max_video_frames=200)),
    ]:
        expected = _decode_all_then_sample(media[name], limits)
        assert torch.equal(load_video(Video(media[name]), 0, limits), expected)


def test_capped_audio_equals_the_whole_clip_resampled_then_cut(tmp_path):
    """Only the part the cap keeps (and the resampler's reach) is read: a NaN tail after it is
    never seen, and the kept samples are exactly those of resampling the whole clip."""
    sr, cap = 44_100, Limits(max_audio_seconds=1.0)
    wave = tone(6.0, sr, channels=2)
    reference = AF.resample(torch.from_numpy(wave), sr, 16_000).mean(0)[:16_000].numpy()
    spoiled = wave.copy()
    spoiled[:, 5 * sr :] = np.nan
    sf.write(tmp_path / "a.wav", spoiled.T, sr, subtype="FLOAT")
    for audio in (Audio(tmp_path / "a.wav"), Audio(spoiled, sr)):
        np.testing.assert_allclose(load_audio(audio, 0, cap), reference, atol=1e-6)
    pcm = np.round(wave * 32767).astype(np.int16)
    reference = AF.resample(torch.from_numpy(pcm / np.float32(32768)), sr, 16_000).mean(0)
    np.testing.assert_allclose(load_audio(Audio(pcm, sr), 0, cap), reference[:16_000], atol=1e-6)
    compressed = Audio(write_m4a(tmp_path / "a.m4a", wave, sr))  # PyAV stops decoding early
    whole = load_audio(compressed, 0, Limits(max_audio_seconds=60.0))
    assert len(whole) > 5 * 16_000
    np.testing.assert_allclose(load_audio(compressed, 0, cap), whole[:16_000], atol=1e-6)


_PEAK_RSS = """
import resource, sys
from pathlib import Path
from lcoemb.inputs import Audio, Limits, Video, load_audio, load_video
kind, path = sys.argv[1], Path(sys.argv[2])
if kind == "video":
    load_video(Video(path), 0, Limits())
else:
    load_audio(Audio(path), 0, Limits())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_mb(kind: str, path: Path) -> float:
    """Peak resident memory of a fresh process that loads ``path`` once."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, kind, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def _write_video_fast(path: Path, seconds: int, fps: int = 10) -> Path:
    """A 160x120 H.264 clip written with the ultrafast preset: ten minutes take about a second,
    and decoding it whole to RGB would take ~350 MB."""
    tiles = [np.full((120, 160, 3), 40 * i, np.uint8) for i in range(6)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(tiles[(i // fps) % len(tiles)], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.slow
def test_a_ten_minute_video_costs_about_what_a_ten_second_one_does(tmp_path):
    short = _peak_rss_mb("video", _write_video_fast(tmp_path / "short.mp4", 10))
    long = _peak_rss_mb("video", _write_video_fast(tmp_path / "long.mp4", 600))
    assert long - short < 100, (short, long)


def _write_wav_in_chunks(path: Path, seconds: int, sr: int = 8_000) -> Path:
    minute = tone(60.0, sr)[0]
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(seconds // 60):
            f.write(minute)
    return path


@pytest.mark.slow
def test_an_hour_of_audio_costs_about_what_the_300_second_cap_does(tmp_path):
    capped = _peak_rss_mb("audio", _write_wav_in_chunks(tmp_path / "five.wav", 300))
    hour = _peak_rss_mb("audio", _write_wav_in_chunks(tmp_path / "hour.wav", 3_600))
    assert hour - capped < 50, (capped, hour)


# ----------------------------------------------------------------------------- file descriptors


_ENCODE_UNDER_FD_LIMIT = """
import resource, sys
from lcoemb.cli import main
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
model, items, out = sys.argv[1:]
args = ["encode", "--model", model, "--input", items, "--output", out, "--device", "cpu"]
sys.exit(main([*args, "--quiet", "--batch-size", "100"]))
"""


def test_encoding_300_image_lines_stays_under_256_open_files(omni_path, tmp_path):
    for i in range(300):
        PIL.Image.new("RGB", (16, 12), (i % 256, 0, 0)).save(tmp_path / f"{i}.png")
    items = _jsonl(tmp_path / "items.jsonl", [{"image": f"{i}.png"} for i in range(300)])
    out = tmp_path / "vectors.npy"
    result = subprocess.run(
        [sys.executable, "-c", _ENCODE_UNDER_FD_LIMIT, str(omni_path), str(items), str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(out).shape[0] == 300


def test_image_refs_are_inspected_and_loaded_without_keeping_files_open(tmp_path):
    png = tmp_path / "gray.png"
    PIL.Image.new("L", (10, 6), 77).save(png)
    before = len(os.listdir("/proc/self/fd"))
    info = inspect_item(ImageRef(png), 0)
    (image,) = load_item(["see", ImageRef(png)], 0).of("image")
    assert len(os.listdir("/proc/self/fd")) == before
    assert info.group == "image" and info.cost == 60
    assert image.mode == "RGB" and image.size == (10, 6) and image.getpixel((0, 0)) == (77,) * 3


def test_bad_image_refs_name_the_item(tmp_path, media):
    with pytest.raises(InputError, match=r"item 5: image file not found"):
        inspect_item(ImageRef(tmp_path / "missing.png"), 5)
    with pytest.raises(InputError, match=r"item 5: cannot open image .*corrupt\.png"):
        inspect_item({"image": ImageRef(media["png_corrupt"]), "text": "x"}, 5)


def test_collating_image_triplets_opens_no_file(tmp_path):
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "cat.png")
    record = {
        "anchor": {"image": "cat.png"},
        "positive": {"text": "a cat", "image": "cat.png"},
        "negative": "a dog",
    }
    triplets = load_triplets(_jsonl(tmp_path / "calib.jsonl", [record] * 600)).triplets
    before = len(os.listdir("/proc/self/fd"))
    batch = collate_triplets(triplets)
    assert len(os.listdir("/proc/self/fd")) == before
    assert lcoemb.training.ImageRef is ImageRef
    assert batch["anchor"][0] == ImageRef(tmp_path / "cat.png")
    assert batch["positive"][599] == [ImageRef(tmp_path / "cat.png"), "a cat"]


def test_an_undecodable_image_in_training_names_its_data_line(omni_path, tmp_path):
    """The encoder opens training images now, so the trainer maps its item error to the line."""
    PIL.Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    PIL.Image.fromarray(noise).save(tmp_path / "bad.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "bad.png").read_bytes()[:200])  # truncated
    data = _jsonl(
        tmp_path / "calib.jsonl",
        [
            {"anchor": "a red square", "positive": {"image": "red.png"}},
            {"anchor": "a broken file", "positive": {"text": "broken", "image": "bad.png"}},
        ],
    )
    config = TrainConfig(
        model=str(omni_path),
        data=[str(data)],
        output=str(tmp_path / "run"),
        max_steps=1,
        batch_size=2,
        mini_batch_size=2,
        lora_r=4,
        lora_alpha=8,
        precision="fp32",
        device="cpu",
    )
    with pytest.raises(DataError, match=r"calib\.jsonl:2: field 'positive': cannot decode image"):
        train(config)


# ----------------------------------------------------------------------------- encode output


def test_encode_output_gets_the_mode_of_an_ordinary_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_npy_atomic(tmp_path / "out" / "vectors.npy", np.eye(2, dtype=np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "vectors.npy").stat().st_mode & 0o777 == 0o644
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "vectors.npy"), np.eye(2))
    assert os.listdir(tmp_path / "out") == ["vectors.npy"]


def test_an_unusable_output_is_refused_before_the_model_loads(tmp_path, capsys):
    items = _jsonl(tmp_path / "items.jsonl", [{"text": "hello"}])
    (tmp_path / "file.txt").write_text("not a folder")
    missing_model = str(tmp_path / "no-such-model")  # loading it would fail with another error
    for output, says in [
        (tmp_path, "is a folder"),
        (tmp_path / "file.txt" / "sub" / "vectors.npy", "file.txt' is not a folder"),
    ]:
        args = ["encode", "--model", missing_model, "--input", str(items), "--output", str(output)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert says in err and "no-such-model" not in err, err
