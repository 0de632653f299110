"""Input values and their loading: text, images, audio, video, interleaved lists and composites.

An item is one part (``str``, ``PIL.Image.Image``, :class:`ImageRef`, :class:`Audio`,
:class:`Video`), a ``list`` of parts (interleaved: the parts keep their order and the prompt
names no modality), or a ``dict`` from modality name to one part, ``{"image": img, "text":
"caption"}`` (a composite: the parts are laid out in the reference order video, audio, image,
text and the prompt names the first of image > video > audio present, as mteb's
``LCOEmbedding`` does for a row with several columns).

Everything a user can pass to :meth:`lcoemb.OmniEncoder.encode` is checked and decoded here, so
that a backbone only ever sees clean data: strings, RGB ``PIL`` images, 16 kHz mono float32
waveforms and ``(T, C, H, W)`` uint8 frame tensors. Checking happens in two steps:

* :func:`inspect_item` is cheap (no decoding). It rejects wrong types, empty or invalid text,
  missing files, unreadable image headers and bad sampling or frame rates, and returns a sort
  key, so a whole input list is validated before any model work starts.
* :func:`load_item` decodes one item when its batch is about to run, so media for a large input
  list is never held in memory all at once. Decoding reads only what is kept: audio up to the
  length cap, and of a video file only the sampled frames are converted to pixels.

Image files are passed as :class:`ImageRef` (a path) rather than ``PIL.Image.open(path)``: an
opened image holds its file descriptor until it is decoded, so a few hundred of them exceed the
usual limit on open files. An :class:`ImageRef` is opened only while it is inspected or decoded.

Every error is an :class:`InputError` that names the item's index and the cause.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import PIL.Image
import soundfile as sf
import torch
import torchaudio.functional as AF

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


@dataclass(frozen=True)
class ImageRef:
    """An image file, opened only while it is inspected or decoded (see the module docstring).

    The attribute is called ``source`` like :class:`Audio`'s and :class:`Video`'s, so code that
    identifies media by their ``source`` treats all three alike.
    """

    source: Path


Part = str | PIL.Image.Image | ImageRef | Audio | Video
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
    if isinstance(part, (PIL.Image.Image, ImageRef)):
        return "image"
    if isinstance(part, Audio):
        return "audio"
    if isinstance(part, Video):
        return "video"
    raise InputError(
        index,
        f"unsupported item type {type(part).__name__}; expected str, PIL.Image.Image, "
        "lcoemb.inputs.ImageRef, lcoemb.Audio, lcoemb.Video or a list of these",
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


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` to Python, never a rate)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _audio_rate(audio: Audio, index: int) -> int | None:
    """``audio.sampling_rate`` as a positive int (``None`` for a file that does not give one).

    Resamplers work on whole Hz, so ``16000.0`` is accepted and ``16000.5`` is not; checking
    here keeps a zero or negative rate from surfacing as a ``ZeroDivisionError`` mid-batch.
    """
    rate = audio.sampling_rate
    if rate is None:
        if _is_path(audio.source):
            return None
        raise InputError(index, "an audio array needs sampling_rate=")
    whole = _is_number(rate) and (isinstance(rate, numbers.Integral) or float(rate).is_integer())
    if whole and rate > 0:
        return int(rate)
    raise InputError(index, f"sampling_rate must be a positive whole number of Hz, got {rate!r}")


def _video_fps(video: Video, index: int) -> float | None:
    """``video.fps`` as a positive finite float, or ``None`` (frames already sampled)."""
    fps = video.fps
    if fps is None:
        return None
    if _is_number(fps) and math.isfinite(fps) and fps > 0:
        return float(fps)
    raise InputError(index, f"fps must be a positive finite number, got {fps!r}")


def _part_cost(modality: Modality, part: Any, index: int) -> float:
    if modality == "text":
        if not part.strip():
            raise InputError(index, "empty text")
        try:
            part.encode("utf-8")  # lone surrogates (from "\ud800" in JSON) cannot be tokenised
        except UnicodeEncodeError as error:
            raise InputError(
                index, f"text is not valid Unicode: {error.reason} at position {error.start}"
            ) from None
        return float(len(part))
    if modality == "image":
        if isinstance(part, ImageRef):
            path = _check_path(index, "image", part.source)
            try:  # reads the header only, and closes the file at once
                with PIL.Image.open(path) as image:
                    w, h = image.size
            except Exception as error:
                raise InputError(
                    index, f"cannot open image {os.fspath(path)!r}: {error}"
                ) from error
        else:
            w, h = part.size
        if w == 0 or h == 0:
            raise InputError(index, f"image has zero size {w}x{h}")
        return float(w * h)
    if modality == "audio":
        rate = _audio_rate(part, index)
        if _is_path(part.source):
            path = _check_path(index, "audio", part.source)
            return float(path.stat().st_size)
        n = int(np.shape(part.source)[-1]) if np.ndim(part.source) else 0
        if n == 0:
            raise InputError(index, "zero-length audio clip")
        return n / rate * 32_000  # ~bytes of 16-bit audio at 16 kHz
    _video_fps(part, index)
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


def _as_numpy(value: Any) -> np.ndarray:
    """An array or tensor as numpy; tensors in dtypes numpy lacks (bfloat16) are widened first."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
    return np.asarray(value)


def _float_samples(data: np.ndarray, index: int) -> np.ndarray:
    """Samples as float32 in [-1, 1), scaled as audio files are: signed integers by
    ``2**(bits-1)``, unsigned ones centred first. Unscaled integers would reach the model
    thousands of times too loud, so ``Audio(int16_array, sr)`` must equal the same file."""
    kind = data.dtype.kind
    if kind == "f":
        return data.astype(np.float32)
    if kind not in "iu":
        raise InputError(index, f"audio samples must be integers or floats, got dtype {data.dtype}")
    half = float(2 ** (8 * data.dtype.itemsize - 1))
    out = data.astype(np.float32)
    if kind == "u":
        out -= half
    out /= half
    return out


def _input_samples(rate: int, limits: Limits) -> int:
    """How many input samples at ``rate`` decide the first ``max_audio_seconds`` of 16 kHz output.

    torchaudio's windowed-sinc resampler computes output in blocks of ``rate / gcd`` input
    samples (at most one second) with a kernel reaching past a block by at most ``rate + 7``
    samples, so ``2 * rate + 8`` more samples leave every kept output sample exactly as it is
    when the whole clip is resampled, while a one-hour file costs what a capped one does.
    """
    return math.ceil(limits.max_audio_seconds * rate) + 2 * rate + 8


def _decode_audio_file(path: Path, index: int, limits: Limits) -> tuple[np.ndarray, int]:
    """Decode to ``(channels, samples)`` float32, reading no further than :func:`_input_samples`:
    soundfile first, PyAV for compressed formats."""
    name = os.fspath(path)
    try:
        rate = sf.info(name).samplerate
        data, _ = sf.read(
            name, frames=_input_samples(rate, limits), dtype="float32", always_2d=True
        )
        return np.ascontiguousarray(data.T), int(rate)
    except Exception as sf_error:  # libsndfile cannot read mp3/aac/opus in every build
        try:
            with av.open(name) as container:
                if not container.streams.audio:
                    raise InputError(index, f"no audio stream in {name!r}") from None
                stream = container.streams.audio[0]
                rate = stream.rate
                wanted = _input_samples(rate, limits)
                chunks, have = [], 0
                for frame in container.decode(stream):
                    chunk = frame.to_ndarray()
                    if not frame.format.is_planar:  # packed: (1, samples * channels)
                        chunk = chunk.reshape(-1, len(frame.layout.channels)).T
                    chunks.append(chunk)
                    have += chunk.shape[1]
                    if have >= wanted:
                        break
        except InputError:
            raise
        except Exception as av_error:
            raise InputError(
                index, f"cannot decode audio file {name!r}: {sf_error}; {av_error}"
            ) from av_error
        if not chunks:
            raise InputError(index, f"zero-length audio clip in {name!r}") from None
        return _float_samples(np.concatenate(chunks, axis=1), index), int(rate)


def load_audio(audio: Audio, index: int, limits: Limits) -> np.ndarray:
    """Decode, resample to 16 kHz with a windowed-sinc resampler, average to mono, cap length.

    The order (resample, then mono, then truncate) and the resampler (torchaudio's default
    Hann-windowed sinc) are those of mteb's ``AudioCollator``, so vectors match the reference.
    Only the part that the cap keeps (plus the resampler's reach) is decoded and resampled.
    """
    rate = _audio_rate(audio, index)
    if _is_path(audio.source):
        data, sr = _decode_audio_file(_check_path(index, "audio", audio.source), index, limits)
        if rate is not None and rate != sr:
            raise InputError(
                index,
                f"audio file {os.fspath(audio.source)!r} is {sr} Hz but sampling_rate="
                f"{rate} was given; leave sampling_rate unset for files",
            )
    else:
        assert rate is not None  # _audio_rate requires it for arrays
        sr = rate
        data = _as_numpy(audio.source)
        if data.ndim not in (1, 2):
            raise InputError(
                index, f"audio array must be 1-D or (channels, samples), got {data.shape}"
            )
        data = _float_samples(data[..., : _input_samples(sr, limits)], index)
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


def _rgb_frames(name: str, keep: Collection[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode the first video stream, converting to RGB only the frames in ``keep``; return
    those and the number of frames decoded. The other frames are decoded but never converted to
    arrays, so memory is bounded by ``keep``, not by the clip's length."""
    frames: dict[int, np.ndarray] = {}
    count = 0
    with av.open(name) as container:
        for count, frame in enumerate(container.decode(container.streams.video[0]), start=1):
            if count - 1 in keep:
                frames[count - 1] = frame.to_ndarray(format="rgb24")
    return frames, count


def _demuxed_frames(container: Any, stream: Any) -> int:
    """The stream's frame count from demuxing alone (one packet per frame in the usual case):
    far cheaper than decoding, and what the frame selection needs before decoding starts."""
    return sum(1 for packet in container.demux(stream) if packet.size)


def _decode_video_file(path: Path, index: int, limits: Limits) -> torch.Tensor:
    """Sample a file's frames as :func:`frame_indices` does, decoding only the kept ones.

    The frame count comes from demuxing (cheap: no decoding); if decoding then finds another
    count, the frames are chosen again from the true count, so the result is always that of
    sampling the fully decoded clip.
    """
    name = os.fspath(path)
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise InputError(index, f"no video stream in {name!r}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            end = None
            if stream.duration is not None and stream.time_base is not None:
                end = float(stream.duration * stream.time_base)
            packets = _demuxed_frames(container, stream)

        def sample(n: int) -> list[int]:
            # duration as the end of the last frame (n / fps), like torchcodec's end_stream_seconds
            duration = n / float(rate) if rate else end
            if duration is None:
                raise InputError(index, f"video has no frame rate or duration: {name!r}")
            return frame_indices(n, duration, limits)

        keep = sample(packets) if packets else []
        frames, count = _rgb_frames(name, set(keep))
        if count and count != packets:
            keep = sample(count)
            if not frames.keys() >= set(keep):
                frames, _ = _rgb_frames(name, set(keep))
    except InputError:
        raise
    except Exception as error:
        raise InputError(index, f"cannot decode video file {name!r}: {error}") from error
    if not count:
        raise InputError(index, f"video has no frames: {name!r}")
    return torch.from_numpy(np.stack([frames[i] for i in keep])).permute(0, 3, 1, 2).contiguous()


def _frame_array(frame: Any, index: int, i: int) -> np.ndarray:
    if isinstance(frame, PIL.Image.Image):
        return np.asarray(frame.convert("RGB"))
    arr = _as_numpy(frame)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(index, f"video frame {i} must be HxWx3, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(index, f"video frame {i} must be uint8, got {arr.dtype}")
    return arr


def load_video(video: Video, index: int, limits: Limits) -> torch.Tensor:
    """Decode a clip to sampled ``(T, 3, H, W)`` uint8 frames."""
    fps = _video_fps(video, index)
    if _is_path(video.source):
        return _decode_video_file(_check_path(index, "video", video.source), index, limits)
    frames = list(video.source)
    if not frames:
        raise InputError(index, "video has no frames")
    duration = None if fps is None else len(frames) / fps
    keep = frame_indices(len(frames), duration, limits)
    arrays = [_frame_array(frames[i], index, i) for i in keep]
    if len({a.shape for a in arrays}) > 1:
        raise InputError(index, "video frames differ in size")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_image(image: PIL.Image.Image | ImageRef, index: int) -> PIL.Image.Image:
    """Decode to RGB; an :class:`ImageRef` is opened here and closed before returning."""
    what = f"image {os.fspath(image.source)!r}" if isinstance(image, ImageRef) else "image"
    try:
        if isinstance(image, ImageRef):
            with PIL.Image.open(image.source) as opened:
                return opened.convert("RGB")  # a loaded copy, valid after the file closes
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as error:  # truncated or corrupt lazily-opened files fail here
        raise InputError(index, f"cannot decode {what}: {error}") from error


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

#: The keys a record may have besides its one modality key.
_RECORD_OPTIONS: dict[str, tuple[str, ...]] = {
    "text": (),
    "image": (),
    "audio": ("sampling_rate",),
    "video": ("fps",),
}


def item_from_record(record: Any, where: str, base_dir: Path | None = None) -> RawItem:
    """Turn one JSON record (``{"text"|"image"|"audio"|"video": ...}``, with ``sampling_rate``
    beside ``audio`` and ``fps`` beside ``video``, or ``{"parts": [...]}``) into an encoder item.

    Relative media paths resolve against ``base_dir``. Every part is checked as
    :func:`inspect_item` checks it (files exist, image headers open, rates are valid), so a bad
    line fails when read, before any model loads; an unknown key is an error, not ignored, so a
    typo such as ``"sampling_rte"`` cannot silently change a vector. ``where`` (for example
    ``"items.jsonl:7"``) prefixes every error. Images come back as :class:`ImageRef`.
    """
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
    keys = set(record) & set(_RECORD_OPTIONS) if isinstance(record, dict) else set()
    if not isinstance(record, dict) or len(keys) != 1:
        raise InputError(
            None,
            f"{where}: expected exactly one of 'text', 'image', 'audio', 'video', got {record!r}",
        )
    (key,) = keys
    unknown = [k for k in record if k != key and k not in _RECORD_OPTIONS[key]]
    if unknown:
        allowed = ", ".join(repr(k) for k in (key, *_RECORD_OPTIONS[key]))
        raise InputError(
            None,
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for {key!r} (allowed: "
            f"{allowed})",
        )
    value = record[key]
    if not isinstance(value, str):
        raise InputError(None, f"{where}: {key!r} must be a string, got {type(value).__name__}")
    part: Part
    if key == "text":
        part = value
    else:
        path = Path(value)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if key == "image":
            part = ImageRef(path)
        elif key == "audio":
            part = Audio(path, sampling_rate=record.get("sampling_rate"))
        else:
            part = Video(path, fps=record.get("fps"))
    try:
        inspect_item(part, 0)
    except InputError as error:
        raise InputError(None, f"{where}: {error.reason}") from None
    return part


def json_lines(path: Path, name: str) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, record, problem)`` for each line of a JSONL file; ``problem`` is the
    message (``name:line: ...``) for a line that is not one JSON value: not UTF-8, blank or
    invalid JSON, and ``record`` is then None. The file is read as bytes and decoded line by line,
    so a bad byte is reported at its own line, and the caller decides to raise or to skip."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{name}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield lineno, None, f"{where}: not valid UTF-8: {error}"
                continue
            if not line.strip():
                yield lineno, None, f"{where}: blank line (every line must be one JSON object)"
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as error:
                yield lineno, None, f"{where}: invalid JSON: {error}"


def read_items_jsonl(path: str | os.PathLike[str]) -> tuple[list[RawItem], list[int]]:
    """Read an items file (one JSON record per line, see :func:`item_from_record`).

    Returns the items and the 1-based line number of each, so later errors, which name an
    item index, can name the line. Media paths resolve relative to the file's folder. A
    malformed or blank line, or one that is not UTF-8, raises :class:`InputError` with
    ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(None, f"input file not found: {os.fspath(path)!r}")
    items: list[RawItem] = []
    lines: list[int] = []
    for lineno, record, problem in json_lines(path, os.fspath(path)):
        if problem is not None:
            raise InputError(None, problem)
        items.append(item_from_record(record, f"{path}:{lineno}", base_dir=path.parent))
        lines.append(lineno)
    if not items:
        raise InputError(None, f"{path}: no items")
    return items, lines
