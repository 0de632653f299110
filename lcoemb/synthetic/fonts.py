"""The one font lookup of the generated data (OCR lines and document pages).

A font file is looked for in ``$LCOEMB_FONT_DIR`` first, then in :data:`FONT_DIRS`, then in
matplotlib's own font folder (it ships the DejaVu family). Rendered pixels are exact given the
same font files, Pillow and FreeType.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import matplotlib
import PIL.ImageFont

#: DejaVu font files used for OCR (plus Pillow's default font, named ``"pillow-default"``).
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
DEFAULT_FONT = "pillow-default"
#: The fonts OCR lines are drawn in.
FONTS = (*FONT_FILES, DEFAULT_FONT)
#: The Debian package of each font file outside DejaVu (``fonts-dejavu-core``).
FONT_PACKAGES = {
    "Garuda.ttf": "fonts-tlwg-garuda-ttf",
    "Garuda-Bold.ttf": "fonts-tlwg-garuda-ttf",
    "Phetsarath_OT.ttf": "fonts-lao",
}
#: Where fonts are looked for after ``LCOEMB_FONT_DIR``.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/truetype/tlwg",
    "/usr/share/fonts/truetype/lao",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)


def font_dirs() -> list[Path]:
    """The folders searched, in order: ``$LCOEMB_FONT_DIR``, :data:`FONT_DIRS`, matplotlib's."""
    dirs = [os.environ["LCOEMB_FONT_DIR"]] if os.environ.get("LCOEMB_FONT_DIR") else []
    dirs += FONT_DIRS
    dirs.append(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"))
    return [Path(d) for d in dirs]


@functools.lru_cache(maxsize=16)
def font_path(name: str) -> str:
    """The path of font file ``name``; ``FileNotFoundError`` names the package to install."""
    for folder in font_dirs():
        if (folder / name).is_file():
            return str(folder / name)
    package = FONT_PACKAGES.get(name, "fonts-dejavu-core")
    raise FileNotFoundError(
        f"font {name} not found in {[str(d) for d in font_dirs()]}; install it "
        f"(apt-get install {package}) or set LCOEMB_FONT_DIR"
    )


@functools.lru_cache(maxsize=256)
def font(name: str, size: int) -> PIL.ImageFont.FreeTypeFont:
    """Font file ``name`` (or :data:`DEFAULT_FONT`, Pillow's own) at ``size`` pixels."""
    if name == DEFAULT_FONT:
        return PIL.ImageFont.load_default(size=size)
    return PIL.ImageFont.truetype(font_path(name), size=size)
