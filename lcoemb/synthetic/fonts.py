"""The one font lookup of the generated data (OCR lines and document pages).

The closed-vocabulary OCR lines (:func:`~lcoemb.synthetic.ocr.ocr`) use :data:`FONTS` (DejaVu).
Open-vocabulary OCR (:func:`~lcoemb.synthetic.ocr.open_ocr`) draws a family of
:data:`OPEN_FONT_FAMILIES` (DejaVu, Pillow's default and 19 families from nine Debian
packages), so the model learns to read letters rather than one design.
:data:`HELD_OUT_FONT_FAMILIES` look unlike all of them (Bookman, Century Schoolbook, an Avant
Garde-like Gothic, a Zapf Chancery-like script, Comic Neue); only the out-of-distribution set
(:func:`~lcoemb.synthetic.ocr.ood_ocr`) draws them.

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
#: Font families of open-vocabulary OCR: family → (Debian package, font files). DejaVu and
#: Pillow's default font are :data:`FONTS`, as the closed-vocabulary lines use them.
OPEN_FONT_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "DejaVu": ("fonts-dejavu-core", FONT_FILES),
    "Pillow default": ("", (DEFAULT_FONT,)),
    "Liberation Sans": (
        "fonts-liberation",
        ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationSans-Italic.ttf"),
    ),
    "Liberation Sans Narrow": (
        "fonts-liberation",
        ("LiberationSansNarrow-Regular.ttf", "LiberationSansNarrow-Bold.ttf"),
    ),
    "Liberation Serif": (
        "fonts-liberation",
        ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf", "LiberationSerif-Italic.ttf"),
    ),
    "Liberation Mono": (
        "fonts-liberation",
        ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf"),
    ),
    "FreeSans": ("fonts-freefont-ttf", ("FreeSans.ttf", "FreeSansBold.ttf", "FreeSansOblique.ttf")),
    "FreeSerif": (
        "fonts-freefont-ttf",
        ("FreeSerif.ttf", "FreeSerifBold.ttf", "FreeSerifItalic.ttf"),
    ),
    "FreeMono": ("fonts-freefont-ttf", ("FreeMono.ttf", "FreeMonoBold.ttf")),
    "Nimbus Sans": (
        "fonts-urw-base35",
        ("NimbusSans-Regular.otf", "NimbusSans-Bold.otf", "NimbusSansNarrow-Regular.otf"),
    ),
    "Nimbus Roman": (
        "fonts-urw-base35",
        ("NimbusRoman-Regular.otf", "NimbusRoman-Bold.otf", "NimbusRoman-Italic.otf"),
    ),
    "Nimbus Mono PS": ("fonts-urw-base35", ("NimbusMonoPS-Regular.otf", "NimbusMonoPS-Bold.otf")),
    "P052": ("fonts-urw-base35", ("P052-Roman.otf", "P052-Bold.otf", "P052-Italic.otf")),
    "Open Sans": (
        "fonts-open-sans",
        (
            "OpenSans-Regular.ttf",
            "OpenSans-Bold.ttf",
            "OpenSans-Italic.ttf",
            "OpenSans-Light.ttf",
            "OpenSans-CondBold.ttf",
        ),
    ),
    "Cantarell": ("fonts-cantarell", ("Cantarell-Regular.otf", "Cantarell-Bold.otf")),
    "Carlito": ("fonts-crosextra-carlito", ("Carlito-Regular.ttf", "Carlito-Bold.ttf")),
    "Caladea": ("fonts-crosextra-caladea", ("Caladea-Regular.ttf", "Caladea-Italic.ttf")),
    "EB Garamond": (
        "fonts-ebgaramond",
        ("EBGaramond12-Regular.otf", "EBGaramond12-Bold.otf", "EBGaramond12-Italic.otf"),
    ),
    "Linux Libertine": (
        "fonts-linuxlibertine",
        ("LinLibertine_R.otf", "LinLibertine_RB.otf", "LinLibertine_RI.otf"),
    ),
    "Linux Biolinum": ("fonts-linuxlibertine", ("LinBiolinum_R.otf", "LinBiolinum_RB.otf")),
}
#: Families only the out-of-distribution OCR set draws, never any training set.
HELD_OUT_FONT_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "URW Bookman": (
        "fonts-urw-base35",
        ("URWBookman-Light.otf", "URWBookman-Demi.otf", "URWBookman-LightItalic.otf"),
    ),
    "C059": ("fonts-urw-base35", ("C059-Roman.otf", "C059-Bold.otf", "C059-Italic.otf")),
    "URW Gothic": (
        "fonts-urw-base35",
        ("URWGothic-Book.otf", "URWGothic-Demi.otf", "URWGothic-BookOblique.otf"),
    ),
    "Z003": ("fonts-urw-base35", ("Z003-MediumItalic.otf",)),
    "Comic Neue": (
        "fonts-comic-neue",
        ("ComicNeue-Regular.otf", "ComicNeue-Bold.otf", "ComicNeue-Italic.otf"),
    ),
}
#: The family of every font file of open-vocabulary and out-of-distribution OCR.
FONT_FAMILY = {
    name: family
    for families in (OPEN_FONT_FAMILIES, HELD_OUT_FONT_FAMILIES)
    for family, (_, names) in families.items()
    for name in names
}
#: The Debian package of each font file outside DejaVu (``fonts-dejavu-core``).
FONT_PACKAGES = {
    "Garuda.ttf": "fonts-tlwg-garuda-ttf",
    "Garuda-Bold.ttf": "fonts-tlwg-garuda-ttf",
    "Phetsarath_OT.ttf": "fonts-lao",
    **{
        name: package
        for families in (OPEN_FONT_FAMILIES, HELD_OUT_FONT_FAMILIES)
        for package, names in families.values()
        if package not in ("", "fonts-dejavu-core")
        for name in names
    },
}
#: Where fonts are looked for after ``LCOEMB_FONT_DIR``.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/truetype/tlwg",
    "/usr/share/fonts/truetype/lao",
    "/usr/share/fonts/truetype/liberation",
    "/usr/share/fonts/truetype/freefont",
    "/usr/share/fonts/opentype/urw-base35",
    "/usr/share/fonts/truetype/open-sans",
    "/usr/share/fonts/opentype/cantarell",
    "/usr/share/fonts/truetype/crosextra",
    "/usr/share/fonts/opentype/ebgaramond",
    "/usr/share/fonts/opentype/linux-libertine",
    "/usr/share/fonts/opentype/comic-neue",
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
