"""The one task table over the generators, and :func:`dataset`.

Each :class:`Task` names a generator and says what the library does with its samples: the
modality of its media, the instruction stage-1 pretraining and generation scoring ask the model
(:mod:`lcoemb.recipes.pretrain`, :mod:`lcoemb.evaluation.generation`), how that generation is
scored and whether the score enters the GRSL's generation axis (:mod:`lcoemb.recipes.grsl`), and
the retrieval rows the quick retrieval check measures on its test split
(:func:`lcoemb.evaluation.retrieval.evaluate_retrieval`, the quickstart's table). The offline
mteb benchmark (:mod:`lcoemb.evaluation.offline`) builds its tasks over the same generators and
reads their modality here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lcoemb.synthetic.clips import clip
from lcoemb.synthetic.digits import digit
from lcoemb.synthetic.ocr import ocr
from lcoemb.synthetic.samples import AnySample
from lcoemb.synthetic.scenes import scene
from lcoemb.synthetic.seeds import SPLIT_IDS, SPLITS
from lcoemb.synthetic.speech import speech


@dataclass(frozen=True)
class Task:
    """One generator ``(index, split) -> sample`` and what its samples are used for."""

    name: str
    generate: Callable[[int, str], AnySample]
    #: the media of its samples: ``image``, ``audio`` or ``video``
    modality: str
    #: what the model is asked after the media (the user's text), in stage 1 and when scored
    instruction: str
    #: how a generated answer is scored against ``text``: ``exact_match``, ``char_accuracy``
    #: (1 − CER) or ``wer`` (word error rate)
    metric: str = "exact_match"
    #: whether that score is part of the GRSL's generation axis
    grsl: bool = False
    #: retrieval rows of the quick check, ``query→document`` (``image→text``...), optionally
    #: after a set name (``OCR text→image``)
    retrieval: tuple[str, ...] = ()


#: Every multimodal generator, in table order.
TASKS: dict[str, Task] = {
    "scene": Task(
        "scene",
        scene,
        "image",
        "Describe the image in a few words.",
        grsl=True,
        retrieval=("image→text", "text→image"),
    ),
    "ocr": Task(
        "ocr",
        ocr,
        "image",
        "What text is written in the image?",
        metric="char_accuracy",
        grsl=True,
        retrieval=("OCR text→image",),
    ),
    "digit": Task("digit", digit, "image", "Which digit is shown?"),
    "speech": Task(
        "speech",
        speech,
        "audio",
        "Transcribe the audio.",
        metric="wer",
        grsl=True,
        retrieval=("audio→text", "text→audio"),
    ),
    "clip": Task(
        "clip",
        clip,
        "video",
        "Describe the video in a few words.",
        retrieval=("video→text", "text→video"),
    ),
}
#: The names of the multimodal generators (text triplets are not among them).
KINDS = tuple(TASKS)


def dataset(kind: str, split: str, n: int, start: int = 0) -> list[AnySample]:
    """Samples ``start .. start + n - 1`` of ``kind`` (one of :data:`KINDS`) in ``split``."""
    if kind not in TASKS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, got n={n}, start={start}")
    generate = TASKS[kind].generate
    return [generate(i, split) for i in range(start, start + n)]
