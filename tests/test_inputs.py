"""Loading and validation of every input kind, and the errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
import torchaudio

from lcoemb.inputs import (
    Audio,
    InputError,
    Limits,
    Video,
    frame_indices,
    inspect_item,
    load_item,
    read_items_jsonl,
)
from tests.conftest import tone

# ----------------------------------------------------------------------------- audio


def test_audio_file_is_resampled_to_16k_mono_with_the_reference_resampler(media):
    item = load_item(Audio(media["wav44k_stereo"]), 0)
    (wave,) = item.of("audio")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 24_000  # 1.5 s at 16 kHz
    # same numbers as mteb's AudioCollator: torchaudio Resample, then the channel mean
    stereo = torch.from_numpy(tone(1.5, 44_100, channels=2))
    expected = torchaudio.transforms.Resample(44_100, 16_000)(stereo).mean(0).numpy()
    np.testing.assert_allclose(wave, expected, atol=1e-4)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16_000 / len(wave) - 440) < 2  # the tone survives


def test_compressed_audio_decodes_through_pyav(media):
    (wave,) = load_item(Audio(media["m4a"]), 0).of("audio")
    assert abs(len(wave) - 16_000) < 1_600  # ~1 s; AAC adds priming samples
    assert np.abs(wave).max() > 0.1


def test_audio_array_needs_sampling_rate_and_is_capped():
    with pytest.raises(InputError, match=r"item 4: an audio array needs sampling_rate"):
        inspect_item(Audio(np.zeros(100, np.float32)), 4)
    long = Audio(np.ones(16_000 * 5, np.float32), sampling_rate=16_000)
    (wave,) = load_item(long, 0, Limits(max_audio_seconds=2)).of("audio")
    assert len(wave) == 32_000


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (lambda m: Audio(m["wav_empty"]), r"item 3: audio file is empty|item 3: zero-length"),
        (lambda m: Audio(np.zeros(0, np.float32), sampling_rate=16_000), r"item 3: zero-length"),
        (lambda m: Audio(m["wav_corrupt"]), r"item 3: cannot decode audio file .*corrupt\.wav"),
        (lambda m: Audio(m["wav16k"].with_name("nope.wav")), r"item 3: audio file not found"),
        (
            lambda m: Audio(np.full(10, np.nan, np.float32), sampling_rate=8_000),
            r"item 3: audio contains NaN",
        ),
        (lambda m: Audio(m["wav16k"], sampling_rate=8_000), r"item 3: .* is 16000 Hz but"),
    ],
)
def test_bad_audio_errors_name_the_item(media, item, pattern):
    with pytest.raises(InputError, match=pattern):
        load_item(item(media), 3)


def test_zero_length_wav_file_is_rejected(media):
    with pytest.raises(InputError, match=r"item 0: zero-length audio clip"):
        load_item(Audio(media["wav_empty"]), 0)


# ----------------------------------------------------------------------------- video


def test_video_file_is_sampled_at_2fps(media):
    (frames,) = load_item(Video(media["mp4"]), 0).of("video")
    # 3 s at 10 fps = 30 frames -> int(3 * 2) = 6 frames, (T, C, H, W) uint8
    assert frames.shape == (6, 3, 48, 64) and frames.dtype == torch.uint8
    # the square moves right: its column of maximum brightness increases
    cols = [int(f[0].float().mean(0).argmax()) for f in frames]
    assert cols == sorted(cols) and cols[-1] > cols[0]


def test_long_video_is_capped_at_max_frames(media):
    (frames,) = load_item(Video(media["mp4_long"]), 0).of("video")
    assert frames.shape[0] == 64
    (frames,) = load_item(Video(media["mp4_long"]), 0, Limits(max_video_frames=10)).of("video")
    assert frames.shape[0] == 10


def test_frame_list_with_and_without_fps():
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(20)]
    (v,) = load_item(Video(frames, fps=10), 0).of("video")  # 2 s -> 4 frames
    assert [int(f[0, 0, 0]) for f in v] == [0, 6, 13, 19]
    (v,) = load_item(Video(frames), 0).of("video")  # already sampled: all kept
    assert v.shape[0] == 20
    pil = [PIL.Image.new("RGB", (8, 6), (i, 0, 0)) for i in range(3)]
    (v,) = load_item(Video(pil), 0).of("video")
    assert v.shape == (3, 3, 6, 8)


def test_frame_indices_match_reference_rule():
    lim = Limits()
    assert frame_indices(30, 3.0, lim) == [0, 6, 12, 17, 23, 29]
    assert frame_indices(5, 10.0, lim) == [0, 1, 2, 3, 4]  # never more than n
    assert frame_indices(100, 0.2, lim) == [0]  # at least one
    assert len(frame_indices(1000, 500.0, lim)) == 64


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (lambda m: Video([]), r"item 2: video has no frames"),
        (lambda m: Video(m["mp4_corrupt"]), r"item 2: cannot decode video file .*corrupt\.mp4"),
        (lambda m: Video(m["audio_only_mp4"]), r"item 2: no video stream"),
        (lambda m: Video(m["mp4"].with_name("missing.mp4")), r"item 2: video file not found"),
        (lambda m: Video([np.zeros((4, 4), np.uint8)]), r"item 2: video frame 0 must be HxWx3"),
    ],
)
def test_bad_video_errors_name_the_item(media, item, pattern):
    with pytest.raises(InputError, match=pattern):
        load_item(item(media), 2)


# ----------------------------------------------------------------------------- text, images, types


def test_empty_text_and_unknown_types_are_rejected():
    with pytest.raises(InputError, match=r"item 7: empty text"):
        inspect_item("   ", 7)
    with pytest.raises(InputError, match=r"item 1: unsupported item type int"):
        inspect_item(42, 1)
    with pytest.raises(InputError, match=r"item 1: unsupported item type dict"):
        inspect_item(["ok", {"text": "x"}], 1)
    with pytest.raises(InputError, match=r"item 0: empty interleaved list"):
        inspect_item([], 0)


def test_corrupt_image_file_in_jsonl_names_the_line(tmp_path, media):
    path = tmp_path / "items.jsonl"
    path.write_text(
        json.dumps({"text": "ok"}) + "\n" + json.dumps({"image": str(media["png_corrupt"])})
    )
    with pytest.raises(InputError, match=r"items\.jsonl:2: cannot open image .*corrupt\.png"):
        read_items_jsonl(path)


def test_truncated_image_fails_at_load_with_index(tmp_path):
    path = tmp_path / "cut.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"item 9: cannot decode image"):
        load_item(PIL.Image.open(path), 9)


def test_images_become_rgb_and_interleaved_order_is_kept():
    gray = PIL.Image.new("L", (10, 10), 128)
    item = load_item(["a caption", gray, "more text"], 0)
    assert item.interleaved and item.modalities == ["text", "image", "text"]
    assert item.of("image")[0].mode == "RGB"


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_items_and_errors_name_file_and_line(tmp_path, media):
    good = tmp_path / "items.jsonl"
    lines = [
        {"text": "hello"},
        {"audio": str(media["wav16k"])},
        {"video": str(media["mp4"])},
        {"parts": [{"text": "x"}, {"audio": str(media["wav16k"])}]},
    ]
    good.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    items, numbers = read_items_jsonl(good)
    assert numbers == [1, 2, 3, 4]
    assert isinstance(items[1], Audio) and isinstance(items[3], list)

    bad_cases = {
        '{"text": "a"}\n{"text": \n': r"items\.jsonl:2: invalid JSON",
        '{"text": "a"}\n\n{"text": "b"}\n': r"items\.jsonl:2: blank line",
        '{"txt": "a"}\n': r"items\.jsonl:1: expected exactly one of",
        '{"text": 3}\n': r"items\.jsonl:1: 'text' must be a string",
        '{"image": "nope.png"}\n': r"items\.jsonl:1: image file not found",
        '{"parts": []}\n': r"items\.jsonl:1: 'parts' must be",
        "[1, 2]\n": r"items\.jsonl:1: expected a JSON object",
        "": r"items\.jsonl: no items",
    }
    for content, pattern in bad_cases.items():
        good.write_text(content)
        with pytest.raises(InputError, match=pattern):
            read_items_jsonl(good)


def test_composite_items_are_laid_out_in_reference_order():
    from lcoemb.prompts import SUFFIXES, build_content

    image = PIL.Image.new("RGB", (8, 8))
    item = load_item({"text": "a caption", "image": image}, 0)
    assert item.modalities == ["image", "text"] and not item.interleaved
    content = build_content(item)
    assert [c["type"] for c in content] == ["image", "text", "text"]
    assert content[-1]["text"] == SUFFIXES["image"]
    assert inspect_item({"image": image, "text": "x"}, 0).group == "composite:image+text"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({}, "empty composite"),
        ({"picture": "x"}, "unknown composite key 'picture'"),
        ({"image": "not an image"}, "composite part 'image' holds a str"),
        ({"text": ""}, "empty text"),
    ],
)
def test_bad_composites_name_the_item(item, message):
    with pytest.raises(InputError, match=f"item 5: {message}"):
        inspect_item(item, 5)
