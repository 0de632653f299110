"""Rendered document pages in five languages, for the offline document retrieval task.

The setting of the paper's SeaDoc benchmark (South-East Asian documents), at toy scale: a page
holds two or three short lines of common words in English, Vietnamese, Malay, Thai or Lao,
rendered in a font that covers the script; the query is the page's text. Latin-script pages use
DejaVu (``fonts-dejavu-core``), Thai pages TLWG Garuda (``fonts-tlwg-garuda-ttf``) and Lao
pages Phetsarath OT (``fonts-lao``), found by :func:`lcoemb.synthetic.fonts.font_path` (which
honours ``LCOEMB_FONT_DIR``). Every page is a pure function of ``(language, index)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageDraw

from lcoemb.synthetic.fonts import font

PAGES_VERSION = "1"
PAGE_SIZE = (320, 224)  # width, height

#: Common words (house, water, tree, book, cat, dog, sky, colours, big, small, ...).
_VOCABULARY_TEXT: dict[str, str] = {
    "eng": (
        "house water tree book cat dog sky blue red yellow white black big small beautiful new "
        "old eat drink go run study work sleep table chair door road river mountain sea flower "
        "leaf fish chicken friend mother father school market"
    ),
    "vie": (
        "nhà nước cây sách mèo chó trời xanh đỏ vàng trắng đen lớn nhỏ đẹp mới cũ ăn uống đi "
        "chạy học làm ngủ bàn ghế cửa đường sông núi biển hoa lá cá gà bạn mẹ cha trường "
        "chợ"
    ),
    "msa": (
        "rumah air pokok buku kucing anjing langit biru merah kuning putih hitam besar kecil "
        "cantik baru lama makan minum pergi lari belajar kerja tidur meja kerusi pintu jalan "
        "sungai gunung laut bunga daun ikan ayam kawan ibu bapa sekolah pasar"
    ),
    "tha": (
        "บ้าน น้ำ ต้นไม้ หนังสือ แมว หมา ฟ้า สีฟ้า สีแดง สีเหลือง สีขาว สีดำ ใหญ่ เล็ก สวย ใหม่ เก่า "
        "กิน ดื่ม ไป วิ่ง เรียน ทำงาน นอน โต๊ะ เก้าอี้ ประตู ถนน แม่น้ำ ภูเขา ทะเล ดอกไม้ ใบไม้ ปลา "
        "ไก่ เพื่อน แม่ พ่อ โรงเรียน ตลาด"
    ),
    "lao": (
        "ເຮືອນ ນ້ຳ ຕົ້ນໄມ້ ປຶ້ມ ແມວ ໝາ ຟ້າ ແດງ ເຫຼືອງ ຂາວ ດຳ ໃຫຍ່ ນ້ອຍ ງາມ ໃໝ່ ເກົ່າ ກິນ ດື່ມ ໄປ "
        "ແລ່ນ ຮຽນ ເຮັດວຽກ ນອນ ໂຕະ ປະຕູ ທາງ ແມ່ນ້ຳ ພູເຂົາ ທະເລ ດອກໄມ້ ປາ ໄກ່ ໝູ່ ແມ່ ພໍ່ ໂຮງຮຽນ "
        "ຕະຫຼາດ"
    ),
}
VOCABULARY: dict[str, tuple[str, ...]] = {k: tuple(v.split()) for k, v in _VOCABULARY_TEXT.items()}
LANGUAGES: dict[str, str] = {  # our subset name → mteb language code
    "eng": "eng-Latn",
    "vie": "vie-Latn",
    "msa": "zsm-Latn",
    "tha": "tha-Thai",
    "lao": "lao-Laoo",
}
#: font files per script (the Debian package in brackets)
SCRIPT_FONTS: dict[str, tuple[str, ...]] = {
    "Latn": ("DejaVuSans.ttf", "DejaVuSerif.ttf"),  # fonts-dejavu-core
    "Thai": ("Garuda.ttf", "Garuda-Bold.ttf"),  # fonts-tlwg-garuda-ttf
    "Laoo": ("Phetsarath_OT.ttf",),  # fonts-lao
}


@dataclass(frozen=True)
class Page:
    """A rendered page: its ``image``, the ``text`` written on it and its ``language``."""

    image: PIL.Image.Image
    text: str
    language: str


def page(language: str, index: int) -> Page:
    """Page ``index`` in ``language`` (a key of :data:`LANGUAGES`)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {sorted(LANGUAGES)}, got {language!r}")
    lang_id = list(LANGUAGES).index(language)
    seed = np.random.SeedSequence([0x9A6E, int(PAGES_VERSION), lang_id, index])
    rng = np.random.default_rng(seed)
    words = VOCABULARY[language]
    lines = [
        " ".join(words[int(i)] for i in rng.integers(len(words), size=int(rng.integers(2, 4))))
        for _ in range(int(rng.integers(2, 4)))
    ]
    script = LANGUAGES[language].split("-")[1]
    names = SCRIPT_FONTS[script]
    face = font(names[int(rng.integers(len(names)))], int(rng.integers(22, 30)))
    shade = int(rng.integers(225, 256))
    image = PIL.Image.new("RGB", PAGE_SIZE, (shade, shade, shade - int(rng.integers(0, 12))))
    draw = PIL.ImageDraw.Draw(image)
    y = 20 + int(rng.integers(0, 20))
    for line in lines:
        draw.text((16 + int(rng.integers(0, 16)), y), line, font=face, fill=(20, 20, 20))
        y += int(face.size * 1.9)
    return Page(image, "\n".join(lines), language)
