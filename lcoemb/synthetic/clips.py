"""Clips (video description): one shape crossing the frame in a straight line.

``clip``: 8 frames at 4 fps, 112x112 by default, of one shape of one colour crossing 40-55 % of
the frame in a straight line on a grey gradient. Attribute space:
:data:`~lcoemb.synthetic.descriptions.COLOURS` x :data:`~lcoemb.synthetic.descriptions.SHAPES`
x :data:`~lcoemb.synthetic.descriptions.DIRECTIONS` (left, right, up, down) = 160 combinations,
balanced like scenes' (every 160 consecutive indices of a split hold each once). ``text``:
``"a red circle moving left"``. :func:`mp4_bytes` encodes a clip as H.264 mp4, the way video
datasets ship it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import av
import numpy as np
import PIL.Image
import PIL.ImageDraw

from lcoemb.synthetic.descriptions import COLOURS, DIRECTIONS, SHAPES, canonical
from lcoemb.synthetic.samples import ClipSample
from lcoemb.synthetic.scenes import draw_shape, gradient
from lcoemb.synthetic.seeds import balanced_index, sample_rng, uniform

CLIP_SIZE = 112
CLIP_FRAMES = 8
CLIP_FPS = 4.0
#: The unit step of each direction of motion, in image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}


def clip(
    index: int,
    split: str = "train",
    *,
    size: int = CLIP_SIZE,
    frames: int = CLIP_FRAMES,
    fps: float = CLIP_FPS,
) -> ClipSample:
    """Clip ``index`` of ``split``: one shape moving in a straight line, described canonically."""
    combo = balanced_index("clip", split, index, len(COLOURS) * len(SHAPES) * len(DIRECTIONS))
    rest, direction = divmod(combo, len(DIRECTIONS))
    colour, shape = divmod(rest, len(SHAPES))
    attrs = {
        "kind": "clip",
        "colour": list(COLOURS)[colour],
        "shape": SHAPES[shape],
        "direction": DIRECTIONS[direction],
    }
    rng = sample_rng("clip", split, index)
    background = gradient(rng, size)
    r = uniform(rng, 0.09, 0.13) * size
    distance = uniform(rng, 0.40, 0.55) * size
    start = uniform(rng, 0.2, 0.3) * size
    across = uniform(rng, 0.3, 0.7) * size
    angle = math.radians(uniform(rng, -15, 15))
    dx, dy = DIRECTION_VECTORS[attrs["direction"]]
    along_start = start if dx + dy > 0 else size - start  # moving left/up starts at the far side
    out = []
    path = []
    for k in range(frames):
        along = along_start + (dx + dy) * distance * k / max(frames - 1, 1)
        cx, cy = (along, across) if dx else (across, along)
        image = PIL.Image.fromarray(background)
        draw_shape(
            PIL.ImageDraw.Draw(image), attrs["shape"], cx, cy, r, angle, COLOURS[attrs["colour"]]
        )
        out.append(np.asarray(image))
        path.append((cx, cy))
    meta = {"kind": "clip", "split": split, "index": int(index), "path": path, "radius": r}
    return ClipSample(out, float(fps), canonical(attrs), attrs, meta)


def mp4_bytes(frames: Sequence[np.ndarray], fps: float, crf: int | None = 18) -> bytes:
    """H.264 mp4 bytes of ``HxWx3`` uint8 frames at ``int(fps)`` frames per second. ``crf``
    18 is near-lossless; ``None`` leaves the encoder's default quality."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=int(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if crf is not None:
            stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()
