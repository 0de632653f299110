"""Deterministic generated data: scenes, OCR, digits, speech, clips, text triplets and pages.

Stage-1 pretraining (:mod:`lcoemb.recipes.pretrain`), the quickstart
(:mod:`lcoemb.recipes.quickstart`), the offline benchmark (:mod:`lcoemb.evaluation.offline`),
the embedding-space analysis and the index and serve tests all draw from this package.

Every sample is a pure function of ``(kind, split, index)`` (:mod:`~lcoemb.synthetic.seeds`), so
any sample can be rebuilt on its own, in any order, in any process; whatever changes a sample
bumps :data:`DATA_VERSION`. Texts and attributes are exact on every machine; pixels are exact
given the same Pillow and FreeType (text rendering) and fonts (:mod:`~lcoemb.synthetic.fonts`),
and speech given the same espeak-ng (:func:`espeak_version`); the float waveform after
resampling may differ in the last bits across CPUs.

The rooms
---------
============================  ==============================================================
:mod:`~.seeds`                seeds, splits, :data:`DATA_VERSION`
:mod:`~.descriptions`         attribute space, templates, synonyms, OCR words, the parser
:mod:`~.samples`              :class:`Sample`, :class:`AudioSample`, :class:`ClipSample` and
                              :func:`as_input`, the one sample → encoder item conversion
:mod:`~.scenes`               scenes (captioning), shapes and backgrounds
:mod:`~.fonts`                the one font lookup (``LCOEMB_FONT_DIR`` first)
:mod:`~.ocr`, :mod:`~.digits` rendered words; upscaled scikit-learn digits
:mod:`~.speech`               espeak-ng speech at 16 kHz
:mod:`~.clips`                moving shapes, and clips as mp4
:mod:`~.triplets`             text-only training triplets in the closed grammar (in-domain)
:mod:`~.corpus`               open-vocabulary sentences (``fortunes``) and words
                              (``wamerican``), in disjoint partitions
:mod:`~.general`              general text-only training triplets over those sentences and
                              WordNet's dictionary entries
:mod:`~.thesaurus`            WordNet 3.0 (``wordnet-base``): synonyms, siblings, definitions
:mod:`~.pages`                document pages in five languages (offline document retrieval)
:mod:`~.wide`                 a wider scene and clip grammar (stage 1), solid or styled
:mod:`~.styles`               shape styles and backgrounds: training ones (domain
                              randomisation) and the disjoint OOD ones
:mod:`~.ood`, :mod:`~.ood_text`  out-of-distribution image, video, OCR and speech sets
:mod:`~.tasks`                :data:`TASKS`, the one table over the generators; :func:`dataset`;
                              :data:`OOD_SETS`
:mod:`~.demo`                 a folder of files to index and search
============================  ==============================================================

Splits
------
``"train"`` and ``"test"`` draw from different seed namespaces, so their samples differ. Speech
guarantees it structurally (train speeds are even, test speeds odd) and digits use disjoint
source images. Attribute combinations are *not* held out: both splits cover the same attribute
space, so captions (and OCR lines) of the test split also occur in train; the benchmark measures
cross-modal alignment, not compositional generalisation. For ``scene`` and ``clip``, attribute
combinations are balanced: indices ``[k*C, (k+1)*C)`` of a split (C = 600 or 160) hold every
combination exactly once, in a fixed shuffled order, so the first ``C`` test samples have
distinct captions; layouts are random. Digits cycle the same way through their source images.
"""

from lcoemb.synthetic.clips import (
    CLIP_FPS,
    CLIP_FRAMES,
    CLIP_SIZE,
    DIRECTION_VECTORS,
    clip,
    mp4_bytes,
)
from lcoemb.synthetic.demo import write_demo_folder
from lcoemb.synthetic.descriptions import (
    ATTRIBUTES,
    COLOURS,
    COUNTS,
    DIGIT_NAMES,
    DIRECTIONS,
    POSITIONS,
    SHAPES,
    TEMPLATES,
    VALUES,
    WORDS,
    attribute_diff,
    canonical,
    describe,
    parse_description,
)
from lcoemb.synthetic.digits import DIGIT_TEST_SOURCES, digit, digit_sources
from lcoemb.synthetic.fonts import DEFAULT_FONT, FONT_DIRS, FONT_FILES, FONTS, font, font_path
from lcoemb.synthetic.general import general_triplet, general_triplets, wordnet_triplets
from lcoemb.synthetic.ocr import ocr
from lcoemb.synthetic.pages import LANGUAGES, PAGES_VERSION, Page, page
from lcoemb.synthetic.samples import (
    IMAGE_SIZE,
    AnySample,
    AudioSample,
    ClipSample,
    Sample,
    as_input,
)
from lcoemb.synthetic.scenes import POSITION_ANCHORS, position_of, scene
from lcoemb.synthetic.seeds import DATA_VERSION, SPLITS
from lcoemb.synthetic.speech import VOICES, espeak_version, speech, synthesize
from lcoemb.synthetic.tasks import KINDS, OOD_SETS, TASKS, OODSet, Task, dataset
from lcoemb.synthetic.triplets import TRIPLET_MIX, Triplet, text_triplet, triplets

__all__ = [
    "ATTRIBUTES",
    "CLIP_FPS",
    "CLIP_FRAMES",
    "CLIP_SIZE",
    "COLOURS",
    "COUNTS",
    "DATA_VERSION",
    "DEFAULT_FONT",
    "DIGIT_NAMES",
    "DIGIT_TEST_SOURCES",
    "DIRECTIONS",
    "DIRECTION_VECTORS",
    "FONTS",
    "FONT_DIRS",
    "FONT_FILES",
    "IMAGE_SIZE",
    "KINDS",
    "LANGUAGES",
    "OOD_SETS",
    "PAGES_VERSION",
    "POSITIONS",
    "POSITION_ANCHORS",
    "SHAPES",
    "SPLITS",
    "TASKS",
    "TEMPLATES",
    "TRIPLET_MIX",
    "VALUES",
    "VOICES",
    "WORDS",
    "AnySample",
    "AudioSample",
    "ClipSample",
    "OODSet",
    "Page",
    "Sample",
    "Task",
    "Triplet",
    "as_input",
    "attribute_diff",
    "canonical",
    "clip",
    "dataset",
    "describe",
    "digit",
    "digit_sources",
    "espeak_version",
    "font",
    "font_path",
    "general_triplet",
    "general_triplets",
    "mp4_bytes",
    "ocr",
    "page",
    "parse_description",
    "position_of",
    "scene",
    "speech",
    "synthesize",
    "text_triplet",
    "triplets",
    "wordnet_triplets",
    "write_demo_folder",
]
