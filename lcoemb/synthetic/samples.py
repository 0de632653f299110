"""What a generator returns, and the one conversion of a sample into an encoder item.

Each generator returns plain values: a :class:`Sample` (``image``: 224x224 RGB ``PIL`` image),
an :class:`AudioSample` (``wave``: 16 kHz mono float32) or a :class:`ClipSample` (``frames``:
``HxWx3`` uint8 arrays, ``fps``), each with ``text``, ``attrs`` (the semantic attributes that
``text`` states; :func:`lcoemb.synthetic.parse_description` recovers them from the text) and
``meta`` (how it was rendered: font, voice, background...). :func:`as_input` turns one into what
:meth:`lcoemb.OmniEncoder.encode` takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image

from lcoemb.inputs import Audio, Video

#: The side of every generated image, in pixels.
IMAGE_SIZE = 224


@dataclass(frozen=True)
class Sample:
    """An image sample: ``image`` (RGB, 224x224) and the ``text`` that describes or reads it."""

    image: PIL.Image.Image
    text: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioSample:
    """A speech sample: ``wave`` (mono float32 at ``sampling_rate``) and its transcript."""

    wave: np.ndarray
    sampling_rate: int
    text: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.wave) / self.sampling_rate


@dataclass(frozen=True)
class ClipSample:
    """A video sample: ``frames`` (``HxWx3`` uint8 arrays) at ``fps``, and its description."""

    frames: list[np.ndarray]
    fps: float
    text: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


AnySample = Sample | AudioSample | ClipSample


def as_input(sample: AnySample, *, all_frames: bool = False) -> Any:
    """The media of ``sample`` as :meth:`lcoemb.OmniEncoder.encode` takes it: the image, an
    :class:`~lcoemb.inputs.Audio`, or a :class:`~lcoemb.inputs.Video`.

    A clip keeps its ``fps`` by default, so the encoder samples its frames at its own video rate
    (``Limits.video_fps``: 4 of a generated clip's 8 frames, as from the offline benchmark's mp4
    files). ``all_frames=True`` passes the frames without fps, i.e. as already sampled: every
    frame reaches the model (up to its frame cap), exactly as stage-1 pretraining saw them.
    """
    if isinstance(sample, Sample):
        return sample.image
    if isinstance(sample, AudioSample):
        return Audio(sample.wave, sampling_rate=sample.sampling_rate)
    return Video(sample.frames) if all_frames else Video(sample.frames, fps=sample.fps)
