"""OCR samples: a line of common words rendered in one of several fonts.

``ocr``: one line of 1-4 words from :data:`~lcoemb.synthetic.descriptions.WORDS` (413 common
English words, none of them a digit name) in one of
:data:`~lcoemb.synthetic.fonts.FONT_FILES` (DejaVu Sans/Serif/Mono, regular, bold, oblique) or
Pillow's default font, 18-56 px, lower case, Capitalised or UPPER case (60/25/15 %), dark ink on
a light background or light ink on a dark one, centred with a random offset. A line too wide
for 200 px at 16 px or more is wrapped onto two lines. ``text`` is exactly what is written (the
words joined by single spaces); ``attrs`` holds the words lower-cased.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw

from lcoemb.synthetic.descriptions import ocr_attrs, ocr_line
from lcoemb.synthetic.fonts import FONTS, font
from lcoemb.synthetic.samples import IMAGE_SIZE, Sample
from lcoemb.synthetic.seeds import choice, sample_rng, uniform

_LIGHT_INKS = ((250, 250, 250), (245, 215, 40), (150, 230, 250), (250, 170, 60))
_DARK_INKS = ((15, 15, 15), (30, 40, 140), (150, 20, 20), (20, 100, 40), (90, 30, 120))
_OCR_WIDTH = 200


def ocr(index: int, split: str = "train") -> Sample:
    """OCR sample ``index`` of ``split``: a line of 1-4 words; ``text`` is what is written."""
    rng = sample_rng("ocr", split, index)
    words = ocr_line(rng)
    case = choice(rng, ("lower",) * 12 + ("capital",) * 5 + ("upper",) * 3)
    if case == "upper":
        shown = [w.upper() for w in words]
    elif case == "capital":
        shown = [words[0].capitalize(), *words[1:]]
    else:
        shown = list(words)
    text = " ".join(shown)
    font_name = choice(rng, FONTS)
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
    meta = {
        "kind": "ocr",
        "split": split,
        "index": int(index),
        "font": font_name,
        "size": size,
        "case": case,
        "lines": len(lines),
        "ink": ink,
        "background": background,
    }
    return Sample(image, text, ocr_attrs(words), meta)
