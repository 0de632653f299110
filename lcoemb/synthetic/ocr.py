"""OCR samples: a line of words rendered in one of several fonts.

``ocr``: one line of 1-4 words from :data:`~lcoemb.synthetic.descriptions.WORDS` (413 common
English words, none of them a digit name) in one of
:data:`~lcoemb.synthetic.fonts.FONT_FILES` (DejaVu Sans/Serif/Mono, regular, bold, oblique) or
Pillow's default font, 18-56 px, lower case, Capitalised or UPPER case (60/25/15 %), dark ink on
a light background or light ink on a dark one, centred with a random offset. A line too wide
for 200 px at 16 px or more is wrapped onto two lines. ``text`` is exactly what is written (the
words joined by single spaces); ``attrs`` holds the words lower-cased.

Those 413 words cannot tell reading from recognising a memorised word, so two more generators
draw from the open word list of :mod:`~lcoemb.synthetic.corpus`, rendered the same way:

* ``open_ocr`` (stage 1): 1-3 words of ``corpus.words("train")`` in a family of
  :data:`~lcoemb.synthetic.fonts.OPEN_FONT_FAMILIES` (family first, then one of its faces, so
  DejaVu's eight files do not outweigh the rest);
* ``ood_ocr`` (evaluation only): 1-3 words of ``corpus.words("eval")``, never rendered in any
  training set, in :data:`~lcoemb.synthetic.fonts.HELD_OUT_FONT_FAMILIES`, never drawn by
  ``open_ocr``.

Their ``attrs`` are ``{"kind": "words" | "ood_ocr", "word_0": ...}`` (lower case):
:func:`~lcoemb.synthetic.parse_description` knows only the closed grammar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw

from lcoemb.synthetic import corpus
from lcoemb.synthetic.descriptions import ocr_attrs, ocr_line
from lcoemb.synthetic.fonts import FONTS, HELD_OUT_FONT_FAMILIES, OPEN_FONT_FAMILIES, font
from lcoemb.synthetic.samples import IMAGE_SIZE, Sample
from lcoemb.synthetic.seeds import choice, sample_rng, uniform

_LIGHT_INKS = ((250, 250, 250), (245, 215, 40), (150, 230, 250), (250, 170, 60))
_DARK_INKS = ((15, 15, 15), (30, 40, 140), (150, 20, 20), (20, 100, 40), (90, 30, 120))
_OCR_WIDTH = 200
#: draws a font file name
_FontPicker = Callable[[np.random.Generator], str]


def _render(
    rng: np.random.Generator,
    words: Sequence[str],
    pick_font: _FontPicker,
) -> tuple[PIL.Image.Image, str, dict[str, Any]]:
    """``words`` drawn in a font from ``pick_font``: the image, the text written and how."""
    case = choice(rng, ("lower",) * 12 + ("capital",) * 5 + ("upper",) * 3)
    if case == "upper":
        shown = [w.upper() for w in words]
    elif case == "capital":
        shown = [words[0].capitalize(), *words[1:]]
    else:
        shown = list(words)
    text = " ".join(shown)
    font_name = pick_font(rng)
    size = int(rng.integers(28, 57)) if len(words) == 1 else int(rng.integers(18, 41))
    lines = [text]
    while size > 16 and font(font_name, size).getlength(text) > _OCR_WIDTH:
        size -= 2
    if font(font_name, size).getlength(text) > _OCR_WIDTH:
        # Wrap onto two lines, balanced by characters; shrink more if still too wide.
        split_at = min(
            range(1, len(shown)),
            key=lambda k: abs(len(" ".join(shown[:k])) - len(" ".join(shown[k:]))),
        )
        lines = [" ".join(shown[:split_at]), " ".join(shown[split_at:])]
        while size > 10 and max(font(font_name, size).getlength(x) for x in lines) > _OCR_WIDTH:
            size -= 1
    face = font(font_name, size)
    if rng.random() < 0.7:
        level = uniform(rng, 200, 250)
        ink = choice(rng, _DARK_INKS)
    else:
        level = uniform(rng, 10, 60)
        ink = choice(rng, _LIGHT_INKS)
    tint = rng.integers(-8, 9, size=3)
    background = tuple(int(np.clip(level + t, 0, 255)) for t in tint)
    image = PIL.Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = PIL.ImageDraw.Draw(image)
    block = "\n".join(lines)
    spacing = max(2, size // 4)
    left, top, right, bottom = draw.multiline_textbbox(
        (0, 0), block, font=face, spacing=spacing, align="center"
    )
    free_x = max(0, IMAGE_SIZE - (right - left) - 16)
    free_y = max(0, IMAGE_SIZE - (bottom - top) - 16)
    x = 8 + int(rng.integers(free_x + 1)) - left
    y = 8 + int(rng.integers(free_y + 1)) - top
    draw.multiline_text((x, y), block, font=face, fill=ink, spacing=spacing, align="center")
    how = {"font": font_name, "size": size, "case": case, "lines": len(lines)}
    return image, text, how | {"ink": ink, "background": background}


def ocr(index: int, split: str = "train") -> Sample:
    """OCR sample ``index`` of ``split``: a line of 1-4 words; ``text`` is what is written."""
    rng = sample_rng("ocr", split, index)
    words = ocr_line(rng)
    image, text, how = _render(rng, words, lambda r: choice(r, FONTS))
    meta = {"kind": "ocr", "split": split, "index": int(index), **how}
    return Sample(image, text, ocr_attrs(words), meta)


def _family_font(families: dict[str, tuple[str, tuple[str, ...]]]) -> _FontPicker:
    """A font picker: a family uniformly, then one of its files."""
    names = tuple(families)
    return lambda rng: choice(rng, families[choice(rng, names)][1])


_OPEN_FONT = _family_font(OPEN_FONT_FAMILIES)
_HELD_OUT_FONT = _family_font(HELD_OUT_FONT_FAMILIES)


def _word_sample(
    kind: str, split: str, index: int, partition: str, pick_font: _FontPicker
) -> Sample:
    rng = sample_rng(kind, split, index)
    vocabulary = corpus.words(partition)
    words = [choice(rng, vocabulary) for _ in range(int(rng.integers(1, 4)))]
    image, text, how = _render(rng, words, pick_font)
    meta = {"kind": kind, "split": split, "index": int(index), **how}
    attrs = {"kind": kind, **{k: v for k, v in ocr_attrs(words).items() if k != "kind"}}
    return Sample(image, text, attrs, meta)


def open_ocr(index: int, split: str = "train") -> Sample:
    """Open-vocabulary OCR sample ``index`` of ``split``: 1-3 words of the training word list in
    one of the training font families; ``text`` is what is written."""
    return _word_sample("words", split, index, "train", _OPEN_FONT)


def ood_ocr(index: int, split: str = "test") -> Sample:
    """Out-of-distribution OCR sample ``index``: 1-3 held-out words in a held-out font family,
    neither ever seen in training; ``text`` is what is written."""
    return _word_sample("ood_ocr", split, index, "eval", _HELD_OUT_FONT)
