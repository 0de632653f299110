"""The one task table over the generators, and :func:`dataset`.

Each :class:`Task` names a generator and says what the library does with its samples: the
modality of its media, the instruction stage-1 pretraining and generation scoring ask the model
(:mod:`lcoemb.recipes.pretrain`, :mod:`lcoemb.evaluation.generation`), how that generation is
scored and whether the score enters the GRSL's generation axis (:mod:`lcoemb.recipes.grsl`), and
the retrieval rows the quick retrieval check measures on its test split
(:func:`lcoemb.evaluation.retrieval.evaluate_retrieval`, the quickstart's table). The offline
mteb benchmark (:mod:`lcoemb.evaluation.offline`) builds its tasks over the same generators and
reads their modality here.

:data:`OOD_SETS` are the out-of-distribution evaluation sets: media and texts that no training
generator (stage 1 or the text-only corpora) produces, so retrieval on them measures
generalisation rather than memorisation (:func:`lcoemb.evaluation.retrieval.evaluate_ood`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from lcoemb.synthetic.clips import clip
from lcoemb.synthetic.digits import digit
from lcoemb.synthetic.ocr import ocr, open_ocr
from lcoemb.synthetic.ood import ood_visual_set
from lcoemb.synthetic.ood_text import ood_text_set
from lcoemb.synthetic.samples import AnySample
from lcoemb.synthetic.scenes import scene
from lcoemb.synthetic.seeds import SPLIT_IDS, SPLITS
from lcoemb.synthetic.speech import speech, utterance
from lcoemb.synthetic.wide import clip_styled, clip_wide, scene_styled, scene_wide


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
    #: whether its texts come from the installed open-vocabulary corpus
    #: (:mod:`~lcoemb.synthetic.corpus`), whose fingerprint then names cached features
    corpus: bool = False


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
    # open vocabulary and a wider grammar (stage 1 only; the OOD sets below test them)
    "utterance": Task(
        "utterance", utterance, "audio", "Transcribe the audio.", metric="wer", corpus=True
    ),
    "words": Task(
        "words",
        open_ocr,
        "image",
        "What text is written in the image?",
        metric="char_accuracy",
        corpus=True,
    ),
    # captions vary their template and synonyms: word error rate, not exact match
    "scene_wide": Task(
        "scene_wide", scene_wide, "image", "Describe the image in a few words.", metric="wer"
    ),
    "clip_wide": Task(
        "clip_wide", clip_wide, "video", "Describe the video in a few words.", metric="wer"
    ),
    # the wide grammar in many renderings (domain randomisation; none is an OOD rendering)
    "scene_styled": Task(
        "scene_styled", scene_styled, "image", "Describe the image in a few words.", metric="wer"
    ),
    "clip_styled": Task(
        "clip_styled", clip_styled, "video", "Describe the video in a few words.", metric="wer"
    ),
}
#: The names of the multimodal generators (text triplets are not among them).
KINDS = tuple(TASKS)


@dataclass(frozen=True)
class OODSet:
    """An out-of-distribution evaluation set: ``n`` samples with pairwise distinct texts (one
    right answer per retrieval query), disjoint from every training generator in ``held_out``."""

    name: str
    kind: str
    modality: str
    samples: Callable[[int], list[AnySample]]
    held_out: str

    @property
    def retrieval(self) -> tuple[str, str]:
        """Its two retrieval rows, media→text and text→media (``OOD speech→text``...)."""
        return (f"OOD {self.name}→text", f"OOD text→{self.name}")


#: The out-of-distribution sets, by name: what each holds out from training.
OOD_SETS: dict[str, OODSet] = {
    "image": OODSet(
        "image",
        "ood_scene",
        "image",
        functools.partial(ood_visual_set, "ood_scene"),
        "shapes never solid (outlined, striped, dotted, checked), other sizes, noise/checker/"
        "stripe backgrounds, captions in wordings no training generator uses",
    ),
    "OCR": OODSet(
        "OCR",
        "ood_ocr",
        "image",
        functools.partial(ood_text_set, "ood_ocr"),
        "words never rendered in training (wamerican's eval partition), 5 held-out font families",
    ),
    "speech": OODSet(
        "speech",
        "ood_speech",
        "audio",
        functools.partial(ood_text_set, "ood_speech"),
        "sentences never spoken in training (fortunes' eval partition), 2 held-out voices and "
        "19 held-out voice variants",
    ),
    "video": OODSet(
        "video",
        "ood_clip",
        "video",
        functools.partial(ood_visual_set, "ood_clip"),
        "objects never solid, other sizes, per-frame noise or patterned backgrounds, captions "
        "in wordings no training generator uses",
    ),
}


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
