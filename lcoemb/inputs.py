"""Input values and their loading: text, images, audio, video, interleaved lists and composites.

An item is one part (``str``, ``PIL.Image.Image``, :class:`Audio`, :class:`Video`), a ``list``
of parts (interleaved: the parts keep their order and the prompt names no modality), or a
``dict`` from modality name to one part, ``{"image": img, "text": "caption"}`` (a composite:
the parts are laid out in the reference order video, audio, image, text and the prompt names
the first of image > video > audio present, as mteb's ``LCOEmbedding`` does for a row with
several columns).

Everything a user can pass to :meth:`lcoemb.OmniEncoder.encode` is checked and decoded here, so
that a backbone only ever sees clean data: strings, RGB ``PIL`` images, 16 kHz mono float32
waveforms and ``(T, C, H, W)`` uint8 frame tensors. Checking happens in two steps:

* :func:`inspect_item` is cheap (no decoding). It rejects wrong types, empty strings and missing
  files, and returns a sort key, so a whole input list is validated before any model work starts.
* :func:`load_item` decodes one item when its batch is about to run, so media for a large input
  list is never held in memory all at once.

Every error is an :class:`InputError` that names the item's index and the cause.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch

Modality = Literal["text", "image", "audio", "video"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "audio", "video")

#: Order of a composite's parts in the prompt, as in the reference wrapper (mteb ``LCOEmbedding``).
CONTENT_ORDER: tuple[Modality, ...] = ("video", "audio", "image", "text")

#: Sampling rate every backbone receives audio at (Whisper-style audio towers).
TARGET_SAMPLING_RATE = 16_000


class InputError(ValueError):
    """A user input that cannot be encoded; ``index`` is its position in the input list."""

    def __init__(self, index: int | None, message: str):
        self.index = index
        self.reason = message
        super().__init__(message if index is None else f"item {index}: {message}")


@dataclass(frozen=True)
class Audio:
    """An audio clip: a file path, or an array with its ``sampling_rate``.

    Arrays may be 1-D ``(samples,)`` or 2-D ``(channels, samples)``. Clips are resampled to
    16 kHz and averaged to mono when loaded.
    """

    source: str | os.PathLike[str] | np.ndarray | torch.Tensor
    sampling_rate: int | None = None


@dataclass(frozen=True)
class Video:
    """A video clip: a file path, or a sequence of frames (PIL images or ``HxWx3`` uint8 arrays).

    ``fps`` is the frame rate of a frame sequence. With it, frames are sampled exactly as from a
    file; without it the frames are taken as already sampled (only the frame cap applies).
    """

    source: str | os.PathLike[str] | Sequence[Any] | np.ndarray | torch.Tensor
    fps: float | None = None


Part = str | PIL.Image.Image | Audio | Video
RawItem = Part | Sequence[Part] | Mapping[str, Part]


@dataclass(frozen=True)
class Limits:
    """Caps applied while loading, defaulting to the reference wrapper's behaviour.

    ``video_fps``/``max_video_frames`` follow mteb's ``LCOEmbedding`` (2 fps, at most 64 frames);
    ``max_audio_seconds`` is Qwen2.5-Omni's 300 s chunk limit.
    """

    max_audio_seconds: float = 300.0
    video_fps: float = 2.0
    max_video_frames: int = 64


@dataclass
class LoadedItem:
    """One decoded item: an ordered list of ``(modality, value)`` parts."""

    parts: list[tuple[Modality, Any]]
    interleaved: bool = False

    @property
    def modalities(self) -> list[Modality]:
        return [m for m, _ in self.parts]

    def of(self, modality: Modality) -> list[Any]:
        return [v for m, v in self.parts if m == modality]


@dataclass(frozen=True)
class ItemInfo:
    """Result of :func:`inspect_item`: the item's group (a modality or ``"interleaved"``) and a
    size estimate used to sort batches so that similar lengths are padded together."""

    group: str
    cost: float
    modalities: tuple[Modality, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- inspection


def _part_modality(part: Any, index: int) -> Modality:
    if isinstance(part, str):
        return "text"
    if isinstance(part, PIL.Image.Image):
        return "image"
    if isinstance(part, Audio):
        return "audio"
    if isinstance(part, Video):
        return "video"
    raise InputError(
        index,
        f"unsupported item type {type(part).__name__}; expected str, PIL.Image.Image, "
        "lcoemb.Audio, lcoemb.Video or a list of these",
    )


def _check_path(index: int, kind: str, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(index, f"{kind} file not found: {os.fspath(path)!r}")
    if p.stat().st_size == 0:
        raise InputError(index, f"{kind} file is empty (0 bytes): {os.fspath(path)!r}")
    return p


def _is_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _part_cost(modality: Modality, part: Any, index: int) -> float:
    if modality == "text":
        if not part.strip():
            raise InputError(index, "empty text")
        return float(len(part))
    if modality == "image":
        w, h = part.size
        if w == 0 or h == 0:
            raise InputError(index, f"image has zero size {w}x{h}")
        return float(w * h)
    if modality == "audio":
        if _is_path(part.source):
            path = _check_path(index, "audio", part.source)
            return float(path.stat().st_size)
        if part.sampling_rate is None:
            raise InputError(index, "an audio array needs sampling_rate=")
        n = int(np.shape(part.source)[-1]) if np.ndim(part.source) else 0
        if n == 0:
            raise InputError(index, "zero-length audio clip")
        return n / part.sampling_rate * 32_000  # ~bytes of 16-bit audio at 16 kHz
    if _is_path(part.source):
        return float(_check_path(index, "video", part.source).stat().st_size)
    if len(part.source) == 0:
        raise InputError(index, "video has no frames")
    return float(len(part.source))


def _composite_parts(item: Mapping[Any, Any], index: int) -> list[Any]:
    """The parts of a composite, checked: known modality keys, each holding its own kind."""
    if not item:
        raise InputError(index, "empty composite item (a dict with no parts)")
    parts = []
    for key, part in item.items():
        if key not in MODALITIES:
            raise InputError(
                index, f"unknown composite key {key!r}; expected some of {list(MODALITIES)}"
            )
        if _part_modality(part, index) != key:
            raise InputError(
                index, f"composite part {key!r} holds a {type(part).__name__}, not a {key}"
            )
        parts.append(part)
    return parts


def inspect_item(item: Any, index: int) -> ItemInfo:
    """Validate ``item`` without decoding media; raise :class:`InputError` naming ``index``."""
    if isinstance(item, Mapping):
        parts = _composite_parts(item, index)
        parts.sort(key=lambda p: CONTENT_ORDER.index(_part_modality(p, index)))
        mods = tuple(_part_modality(p, index) for p in parts)
        cost = sum(_part_cost(m, p, index) for m, p in zip(mods, parts))
        return ItemInfo("composite:" + "+".join(sorted(mods)), cost, mods)
    if isinstance(item, (list, tuple)):
        if not item:
            raise InputError(index, "empty interleaved list")
        mods = tuple(_part_modality(p, index) for p in item)
        cost = sum(_part_cost(m, p, index) for m, p in zip(mods, item))
        return ItemInfo("interleaved", cost, mods)
    modality = _part_modality(item, index)
    return ItemInfo(modality, _part_cost(modality, item, index), (modality,))


# --------------------------------------------------------------------------- decoding


def _decode_audio_file(path: Path, index: int) -> tuple[np.ndarray, int]:
    """Decode to ``(channels, samples)`` float32: soundfile first, PyAV for compressed formats."""
    import soundfile as sf

    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(sr)
    except Exception as sf_error:  # libsndfile cannot read mp3/aac/opus in every build
        import av

        try:
            with av.open(os.fspath(path)) as container:
                if not container.streams.audio:
                    raise InputError(index, f"no audio stream in {os.fspath(path)!r}") from None
                stream = container.streams.audio[0]
                chunks = [f.to_ndarray() for f in container.decode(stream)]
                sr = stream.rate
        except InputError:
            raise
        except Exception as av_error:
            raise InputError(
                index, f"cannot decode audio file {os.fspath(path)!r}: {sf_error}; {av_error}"
            ) from av_error
        if not chunks:
            raise InputError(index, f"zero-length audio clip in {os.fspath(path)!r}") from None
        channels = chunks[0].shape[0] if chunks[0].ndim == 2 else 1
        data = np.concatenate([c.reshape(channels, -1) for c in chunks], axis=1)
        if np.issubdtype(data.dtype, np.integer):
            data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
        return data.astype(np.float32), int(sr)


def load_audio(audio: Audio, index: int, limits: Limits) -> np.ndarray:
    """Decode, resample to 16 kHz with a windowed-sinc resampler, average to mono, cap length.

    The order (resample, then mono, then truncate) and the resampler (torchaudio's default
    Hann-windowed sinc) are those of mteb's ``AudioCollator``, so vectors match the reference.
    """
    import torchaudio.functional as AF

    if _is_path(audio.source):
        data, sr = _decode_audio_file(_check_path(index, "audio", audio.source), index)
        if audio.sampling_rate is not None and audio.sampling_rate != sr:
            raise InputError(
                index,
                f"audio file {os.fspath(audio.source)!r} is {sr} Hz but sampling_rate="
                f"{audio.sampling_rate} was given; leave sampling_rate unset for files",
            )
    else:
        data = np.asarray(
            audio.source.detach().cpu() if isinstance(audio.source, torch.Tensor) else audio.source
        )
        sr = audio.sampling_rate
        if sr is None or sr <= 0:
            raise InputError(index, f"an audio array needs a positive sampling_rate, got {sr}")
        if data.ndim not in (1, 2):
            raise InputError(
                index, f"audio array must be 1-D or (channels, samples), got {data.shape}"
            )
        if not np.issubdtype(data.dtype, np.number):
            raise InputError(index, f"audio array has non-numeric dtype {data.dtype}")
        data = data.astype(np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.shape[-1] == 0:
        raise InputError(index, "zero-length audio clip")
    if not np.isfinite(data).all():
        raise InputError(index, "audio contains NaN or infinite samples")
    wave = torch.from_numpy(np.ascontiguousarray(data))
    if sr != TARGET_SAMPLING_RATE:
        wave = AF.resample(wave, sr, TARGET_SAMPLING_RATE)
    mono = wave.mean(dim=0) if wave.shape[0] > 1 else wave[0]
    max_samples = int(limits.max_audio_seconds * TARGET_SAMPLING_RATE)
    return mono[:max_samples].numpy()


def frame_indices(n_frames: int, duration: float | None, limits: Limits) -> list[int]:
    """Indices of the frames to keep: ``k = min(max(1, int(duration*fps)), max_frames, n)`` evenly
    spaced (``linspace(0, n-1, k).round()``), as mteb's ``FramesCollator`` samples them.
    ``duration=None`` means the frames are already sampled, so only the cap applies."""
    k = n_frames if duration is None else max(1, int(duration * limits.video_fps))
    k = min(k, limits.max_video_frames, n_frames)
    return [int(i) for i in np.linspace(0, n_frames - 1, k).round()]


def _decode_video_file(path: Path, index: int, limits: Limits) -> torch.Tensor:
    import av

    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise InputError(index, f"no video stream in {os.fspath(path)!r}")
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.average_rate or stream.guessed_rate
            end = None
            if stream.duration is not None and stream.time_base is not None:
                end = float(stream.duration * stream.time_base)
    except InputError:
        raise
    except Exception as error:
        raise InputError(index, f"cannot decode video file {os.fspath(path)!r}: {error}") from error
    if not frames:
        raise InputError(index, f"video has no frames: {os.fspath(path)!r}")
    # duration as the end of the last frame (n / fps), like torchcodec's end_stream_seconds
    duration = len(frames) / float(rate) if rate else end
    if duration is None:
        raise InputError(index, f"video has no frame rate or duration: {os.fspath(path)!r}")
    keep = frame_indices(len(frames), duration, limits)
    return torch.from_numpy(np.stack([frames[i] for i in keep])).permute(0, 3, 1, 2).contiguous()


def _frame_array(frame: Any, index: int, i: int) -> np.ndarray:
    if isinstance(frame, PIL.Image.Image):
        return np.asarray(frame.convert("RGB"))
    arr = np.asarray(frame.detach().cpu() if isinstance(frame, torch.Tensor) else frame)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(index, f"video frame {i} must be HxWx3, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(index, f"video frame {i} must be uint8, got {arr.dtype}")
    return arr


def load_video(video: Video, index: int, limits: Limits) -> torch.Tensor:
    """Decode a clip to sampled ``(T, 3, H, W)`` uint8 frames."""
    if _is_path(video.source):
        return _decode_video_file(_check_path(index, "video", video.source), index, limits)
    frames = list(video.source)
    if not frames:
        raise InputError(index, "video has no frames")
    duration = None if video.fps is None else len(frames) / video.fps
    keep = frame_indices(len(frames), duration, limits)
    arrays = [_frame_array(frames[i], index, i) for i in keep]
    if len({a.shape for a in arrays}) > 1:
        raise InputError(index, "video frames differ in size")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_image(image: PIL.Image.Image, index: int) -> PIL.Image.Image:
    try:
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as error:  # truncated or corrupt lazily-opened files fail here
        raise InputError(index, f"cannot decode image: {error}") from error


def load_item(item: Any, index: int, limits: Limits = Limits()) -> LoadedItem:
    """Decode one item (see the module docstring); raises :class:`InputError` naming ``index``."""
    info = inspect_item(item, index)
    if info.group == "interleaved":
        raw = list(item)
    elif isinstance(item, Mapping):
        raw = sorted(item.values(), key=lambda p: CONTENT_ORDER.index(_part_modality(p, index)))
    else:
        raw = [item]
    parts: list[tuple[Modality, Any]] = []
    for modality, part in zip(info.modalities, raw):
        if modality == "image":
            part = load_image(part, index)
        elif modality == "audio":
            part = load_audio(part, index, limits)
        elif modality == "video":
            part = load_video(part, index, limits)
        parts.append((modality, part))
    return LoadedItem(parts, interleaved=info.group == "interleaved")


# --------------------------------------------------------------------------- JSONL items


def item_from_record(record: Any, where: str, base_dir: Path | None = None) -> RawItem:
    """Turn one JSON record (``{"text"|"image"|"audio"|"video": ...}`` or ``{"parts": [...]}``)
    into an encoder item. Relative media paths resolve against ``base_dir``. ``where`` (for
    example ``"items.jsonl:7"``) prefixes every error."""
    if not isinstance(record, dict):
        raise InputError(None, f"{where}: expected a JSON object, got {type(record).__name__}")
    if "parts" in record:
        if set(record) != {"parts"} or not isinstance(record["parts"], list) or not record["parts"]:
            raise InputError(None, f"{where}: 'parts' must be the only key and a non-empty list")
        return [
            _part_from_record(p, f"{where} part {i}", base_dir)
            for i, p in enumerate(record["parts"])
        ]
    return _part_from_record(record, where, base_dir)


def _part_from_record(record: Any, where: str, base_dir: Path | None) -> Part:
    keys = set(record) & {"text", "image", "audio", "video"} if isinstance(record, dict) else set()
    if not isinstance(record, dict) or len(keys) != 1:
        raise InputError(
            None,
            f"{where}: expected exactly one of 'text', 'image', 'audio', 'video', got {record!r}",
        )
    (key,) = keys
    value = record[key]
    if not isinstance(value, str):
        raise InputError(None, f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if key == "text":
        return value
    path = Path(value)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if key == "image":
        try:
            return PIL.Image.open(path)
        except FileNotFoundError:
            raise InputError(None, f"{where}: image file not found: {value!r}") from None
        except Exception as error:
            raise InputError(None, f"{where}: cannot open image {value!r}: {error}") from error
    if key == "audio":
        return Audio(path, sampling_rate=record.get("sampling_rate"))
    fps = record.get("fps")
    return Video(path, fps=None if fps is None else float(fps))


def read_items_jsonl(path: str | os.PathLike[str]) -> tuple[list[RawItem], list[int]]:
    """Read an items file (one JSON record per line, see :func:`item_from_record`).

    Returns the items and the 1-based line number of each, so later errors, which name an
    item index, can name the line. Media paths resolve relative to the file's folder. A
    malformed or blank line raises :class:`InputError` with ``file:line``.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise InputError(None, f"input file not found: {os.fspath(path)!r}")
    items: list[RawItem] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                raise InputError(None, f"{where}: blank line (every line must be one JSON object)")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(None, f"{where}: invalid JSON: {error}") from None
            items.append(item_from_record(record, where, base_dir=path.parent))
            lines.append(lineno)
    if not items:
        raise InputError(None, f"{path}: no items")
    return items, lines
