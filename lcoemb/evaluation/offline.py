"""The offline benchmark: real mteb tasks over data the project generates, for machines with no
dataset hub.

Each task is an mteb ``AbsTask`` subclass with its own ``load_data``; mteb runs it exactly like
a hub task (same evaluators, same scores, same result files). The data comes from the
deterministic generators of :mod:`lcoemb.synthetic` (``test`` split, never used in training;
document pages from :mod:`lcoemb.synthetic.pages`), and is cached as ``datasets`` folders under
``$LCOEMB_CACHE/offline`` (default ``~/.cache/lcoemb/offline``), keyed by :data:`OFFLINE_VERSION`.

============================  ======================  ========================================
task                          type / modalities       data (size)
============================  ======================  ========================================
LCOOfflineSceneT2I            retrieval text→image    200 scene captions → 200 scene images
LCOOfflineSceneI2T            retrieval image→text    200 scene images → 200 captions
LCOOfflineDigitZeroShot       zero-shot, image        200 digit images, 10 labels
LCOOfflineShapeZeroShot       zero-shot, image        200 scene images, 5 shape labels
LCOOfflineDocRetrieval        documents text→image    5 languages × 40 pages (eng vie msa tha lao)
LCOOfflineSpeechA2T           retrieval audio→text    100 espeak-ng clips (8 voices) → texts
LCOOfflineSpeechT2A           retrieval text→audio    100 texts → espeak-ng clips
LCOOfflineClipV2T             retrieval video→text    100 moving-shape clips (mp4) → captions
LCOOfflineTextSTS             STS, text               300 pairs: paraphrase 2, one change 1,
                                                      unrelated 0
============================  ======================  ========================================

Retrieval relevance is by text: every document whose caption equals the query's is relevant
(captions can repeat), so chance is not understated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.abstasks.zeroshot_classification import AbsTaskZeroShotClassification

from lcoemb.cache import cache_entry, cache_root
from lcoemb.evaluation.retrieval import relevance_by_text
from lcoemb.synthetic import (
    DATA_VERSION,
    DIGIT_NAMES,
    SHAPES,
    TASKS,
    dataset,
    mp4_bytes,
    parse_description,
    triplets,
)
from lcoemb.synthetic.pages import LANGUAGES, PAGES_VERSION, page

OFFLINE_VERSION = "1"
BENCHMARK_NAME = "offline"
_SPLIT = "test"


def _data_version() -> str:
    return f"v{OFFLINE_VERSION}-data{DATA_VERSION}-pages{PAGES_VERSION}"


def _metadata(name: str, description: str, **fields: Any) -> TaskMetadata:
    base: dict[str, Any] = {
        "description": description,
        "reference": "https://github.com/lcoemb/lcoemb",
        "dataset": {"path": f"lcoemb/{name}", "revision": _data_version()},
        "eval_splits": [_SPLIT],
        "eval_langs": ["eng-Latn"],
        "date": ("2026-11-01", "2026-11-27"),
        "domains": [],
        "task_subtypes": [],
        "license": "cc-by-4.0",
        "annotations_creators": "derived",
        "dialect": [],
        "sample_creation": "created",
        "bibtex_citation": "",
    }
    return TaskMetadata(name=name, **(base | fields))


def _cached(name: str, build: Any) -> datasets.DatasetDict:
    """``build()`` once, then from disk: a ``DatasetDict`` under the cache root."""
    path = cache_root() / "offline" / _data_version() / name
    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    with cache_entry(path) as tmp:
        build().save_to_disk(str(tmp))
    return datasets.load_from_disk(str(path))


def _qrels(query_ids: list[str], doc_ids: list[str], texts: list[str]) -> dict:
    """Relevance by text: query i's relevant documents are those whose text equals its own."""
    relevant = relevance_by_text(texts, texts)
    return {q: {doc_ids[j]: 1 for j in sorted(rel)} for q, rel in zip(query_ids, relevant)}


def _split(queries: datasets.Dataset, corpus: datasets.Dataset, qrels: dict) -> dict:
    return {
        "default": {
            _SPLIT: RetrievalSplitData(
                queries=queries, corpus=corpus, relevant_docs=qrels, top_ranked=None
            )
        }
    }


# --------------------------------------------------------------------------- set builders


def _media_text_set(kind: str, n: int) -> datasets.DatasetDict:
    """``n`` test samples of a generator kind: one media column and ``text``. Clips are stored
    as near-lossless H.264 mp4, as video datasets ship them."""
    samples = dataset(kind, _SPLIT, n)
    modality = TASKS[kind].modality
    if modality == "audio":
        column, feature = "audio", datasets.Audio()
        media = [{"array": s.wave, "sampling_rate": s.sampling_rate} for s in samples]
    elif modality == "video":
        column, feature = "video", datasets.Video()
        media = [mp4_bytes(s.frames, s.fps) for s in samples]
    else:
        column, feature = "image", datasets.Image()
        media = [s.image for s in samples]
    ds = datasets.Dataset.from_dict({column: media, "text": [s.text for s in samples]})
    return datasets.DatasetDict({_SPLIT: ds.cast_column(column, feature)})


def _pages_set(language: str, n: int) -> datasets.DatasetDict:
    pages = [page(language, i) for i in range(n)]
    ds = datasets.Dataset.from_dict(
        {"image": [p.image for p in pages], "text": [p.text for p in pages]}
    )
    return datasets.DatasetDict({_SPLIT: ds.cast_column("image", datasets.Image())})


def _sts_set(n: int) -> datasets.DatasetDict:
    """Graded text pairs from the triplet generator: (anchor, paraphrase) 2, (anchor, anchor
    with one attribute changed) 1, (anchor, the next triplet's anchor) 0."""
    per = n // 3
    ts = triplets(_SPLIT, per + 1)
    first, second, score = [], [], []
    for i in range(per):
        t = ts[i]
        for other, value in ((t.positive, 2.0), (t.negative, 1.0), (ts[i + 1].anchor, 0.0)):
            first.append(t.anchor)
            second.append(other)
            score.append(value)
    ds = datasets.Dataset.from_dict({"sentence1": first, "sentence2": second, "score": score})
    return datasets.DatasetDict({_SPLIT: ds})


# --------------------------------------------------------------------------- tasks


def _media_text_retrieval(
    data: datasets.Dataset, media_to_text: bool
) -> tuple[datasets.Dataset, datasets.Dataset, dict]:
    texts = data["text"]
    media_ids = [f"m{i}" for i in range(len(texts))]
    text_ids = [f"t{i}" for i in range(len(texts))]
    media = data.remove_columns("text").add_column("id", media_ids)
    text = datasets.Dataset.from_dict({"id": text_ids, "text": texts})
    if media_to_text:
        return media, text, _qrels(media_ids, text_ids, texts)
    return text, media, _qrels(text_ids, media_ids, texts)


class _GeneratedRetrieval(AbsTaskRetrieval):
    """Media ↔ text retrieval over ``n`` samples of one generator ``kind``."""

    kind: str = ""
    n: int = 0
    media_to_text: bool = True

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        data = _cached(f"{self.kind}-{self.n}", lambda: _media_text_set(self.kind, self.n))
        self.dataset = _split(*_media_text_retrieval(data[_SPLIT], self.media_to_text))
        self.data_loaded = True


def _retrieval_task(
    name: str, kind: str, n: int, media_to_text: bool, description: str
) -> type[_GeneratedRetrieval]:
    media = TASKS[kind].modality
    code = media[0]
    category = f"{code}2t" if media_to_text else f"t2{code}"
    metadata = _metadata(
        name,
        description,
        type="Any2AnyRetrieval",
        category=category,
        main_score="ndcg_at_10",
        modalities=[media, "text"],
    )
    attrs = {"metadata": metadata, "kind": kind, "n": n, "media_to_text": media_to_text}
    return type(name, (_GeneratedRetrieval,), attrs)


LCOOfflineSceneT2I = _retrieval_task(
    "LCOOfflineSceneT2I",
    "scene",
    200,
    False,
    "Find the generated scene (1-3 shapes of one colour at a position) a caption describes.",
)
LCOOfflineSceneI2T = _retrieval_task(
    "LCOOfflineSceneI2T",
    "scene",
    200,
    True,
    "Find the caption (count, colour, shape, position) of a generated scene.",
)
LCOOfflineSpeechA2T = _retrieval_task(
    "LCOOfflineSpeechA2T",
    "speech",
    100,
    True,
    "Find the text an espeak-ng voice speaks (8 voices, varied speed and pitch).",
)
LCOOfflineSpeechT2A = _retrieval_task(
    "LCOOfflineSpeechT2A",
    "speech",
    100,
    False,
    "Find the espeak-ng speech clip that says a text.",
)
LCOOfflineClipV2T = _retrieval_task(
    "LCOOfflineClipV2T",
    "clip",
    100,
    True,
    "Find the caption (colour, shape, direction of motion) of a generated clip.",
)


class LCOOfflineDocRetrieval(AbsTaskRetrieval):
    """Text → rendered page retrieval in five languages (the SeaDoc setting, at toy scale)."""

    n_per_language = 40
    metadata = _metadata(
        "LCOOfflineDocRetrieval",
        "Find the rendered page (Latin, Thai or Lao script) whose text is the query.",
        type="DocumentUnderstanding",
        category="t2i",
        main_score="ndcg_at_10",
        modalities=["text", "image"],
        eval_langs={k: [v] for k, v in LANGUAGES.items()},
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        n = self.n_per_language
        self.dataset = {}
        for language in LANGUAGES:
            data = _cached(f"pages-{language}-{n}", lambda lang=language: _pages_set(lang, n))
            self.dataset[language] = _split(*_media_text_retrieval(data[_SPLIT], False))["default"]
        self.data_loaded = True


def _zero_shot_metadata(name: str, description: str) -> TaskMetadata:
    return _metadata(
        name,
        description,
        type="ZeroShotClassification",
        category="i2t",
        main_score="accuracy",
        modalities=["image", "text"],
    )


class _GeneratedZeroShot(AbsTaskZeroShotClassification):
    kind: str = ""
    n: int = 0
    labels: tuple[str, ...] = ()
    #: the class index of a sample's text; each task defines it
    label_of: Callable[[str], int]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        data = _cached(f"{self.kind}-{self.n}", lambda: _media_text_set(self.kind, self.n))
        ds = data[_SPLIT]
        ds = ds.add_column("label", [self.label_of(t) for t in ds["text"]]).remove_columns("text")
        self.dataset = datasets.DatasetDict({_SPLIT: ds})
        self.data_loaded = True

    def get_candidate_labels(self) -> list[str]:
        return list(self.labels)


class LCOOfflineDigitZeroShot(_GeneratedZeroShot):
    """Which digit (0-9) an upscaled scikit-learn digit image shows."""

    kind, n = "digit", 200
    metadata = _zero_shot_metadata(
        "LCOOfflineDigitZeroShot",
        "Zero-shot classification of scikit-learn digits (upscaled, coloured) into 10 names.",
    )

    labels = tuple(f"the digit {name}" for name in DIGIT_NAMES)

    def label_of(self, text: str) -> int:
        return DIGIT_NAMES.index(text)


class LCOOfflineShapeZeroShot(_GeneratedZeroShot):
    """Which shape a generated scene shows."""

    kind, n = "scene", 200
    metadata = _zero_shot_metadata(
        "LCOOfflineShapeZeroShot",
        "Zero-shot classification of generated scenes by the shape they show (5 shapes).",
    )

    labels = tuple(f"a picture of a {shape}" for shape in SHAPES)

    def label_of(self, text: str) -> int:
        return SHAPES.index(parse_description(text)["shape"])


class LCOOfflineTextSTS(AbsTaskSTS):
    """Graded similarity of generated descriptions (text only)."""

    n = 300
    min_score = 0
    max_score = 2
    metadata = _metadata(
        "LCOOfflineTextSTS",
        "Similarity of description pairs: paraphrase (2), one attribute changed (1), "
        "unrelated (0).",
        type="STS",
        category="t2t",
        main_score="cosine_spearman",
        modalities=["text"],
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = _cached(f"sts-{self.n}", lambda: _sts_set(self.n))
        self.data_loaded = True


#: the offline benchmark, in table order
OFFLINE_TASKS: tuple[type, ...] = (
    LCOOfflineSceneT2I,
    LCOOfflineSceneI2T,
    LCOOfflineDigitZeroShot,
    LCOOfflineShapeZeroShot,
    LCOOfflineDocRetrieval,
    LCOOfflineSpeechA2T,
    LCOOfflineSpeechT2A,
    LCOOfflineClipV2T,
    LCOOfflineTextSTS,
)


def offline_tasks(names: list[str] | None = None, size: int | None = None) -> list[Any]:
    """Instances of the offline tasks (all, or those named). ``size`` shrinks every set to at
    most that many items (per language for documents) for a quick check; the data revision
    records it, so mteb keeps such results apart from full-size ones."""
    by_name = {t.metadata.name: t for t in OFFLINE_TASKS}
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        raise ValueError(f"unknown offline task(s) {unknown}; known: {sorted(by_name)}")
    chosen = [by_name[n] for n in names] if names is not None else list(OFFLINE_TASKS)
    if size is None:
        return [t() for t in chosen]
    out = []
    for cls in chosen:
        meta = cls.metadata.model_copy(deep=True)
        meta.dataset["revision"] = f"{meta.dataset['revision']}-n{size}"
        attrs: dict[str, Any] = {"metadata": meta}
        for attr in ("n", "n_per_language"):
            if hasattr(cls, attr):
                attrs[attr] = min(size, getattr(cls, attr))
        out.append(type(cls.__name__, (cls,), attrs)())
    return out
