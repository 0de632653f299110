"""Convolutions with their batch norm and activation fused, for LCO-Mini's frozen CNNs on a CPU.

A frozen convolution followed by an eval-mode batch norm is one convolution with other weights
(:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`), and oneDNN applies a ReLU or ReLU6 in the
convolution's own pass (``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's
Inductor uses). Both save whole passes over the feature maps, which on two CPU cores cost as
much as the small convolutions themselves. In float32 the fold changes only the last bits. The
text detector (:func:`lcoemb.mini.reader.fuse_detector`) and EfficientNet-Lite0
(:func:`lcoemb.mini.towers.fuse_efficientnet`) use it.

Wide 3x3 convolutions can instead run through NNPACK's Winograd kernels, which PyTorch builds
in (:func:`nnpack_convolves`): F(6x6, 3x3) Winograd does about a fifth of the multiplications of
a direct convolution. Where the direct one runs at the CPU's float32 matmul rate it was
1.3-2x faster on the text detector's VGG convolutions of 128-512 channels on 56- to 224-pixel
maps, and slower on smaller maps or fewer channels (``benchmarks/README.md``). Its outputs
differ from the direct ones by about 1e-5 of their largest value (oneDNN's own by 2-4e-6)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lcoemb.devices import float32_cpu

__all__ = [
    "ACTIVATIONS",
    "ChannelsLast",
    "FusedConv",
    "fuses_by_default",
    "nnpack_convolves",
    "onednn_convolves",
    "same_padding",
]

#: activation name -> (oneDNN's post-op, its scalars, the same in PyTorch)
ACTIVATIONS = {
    "relu": ("relu", [], F.relu),
    "relu6": ("hardtanh", [0.0, 6.0], F.relu6),
}


@functools.cache
def onednn_convolves(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` convolutions on this CPU: it refuses bf16 ones without
    AVX-512 or AVX-NE-CONVERT, where PyTorch's own (slow) kernels still compute them."""
    if not torch.backends.mkldnn.is_available() or not hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    ):  # the fused kernel Inductor uses; PyTorch does not promise it
        return False
    return dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fuses_by_default(device: str | torch.device = "cpu") -> bool:
    """Whether LCO-Mini's frozen CNNs (the text detector, EfficientNet) run fused when not
    told: on a CPU whose models run in float32 (:func:`lcoemb.devices.float32_cpu`) and where
    oneDNN convolves float32. There the fold changes only float32's last bits; in bf16 it
    moves the detector's boxes and the vectors, so such CPUs and GPUs keep the networks as
    shipped."""
    return float32_cpu(device) and onednn_convolves(torch.float32)


@functools.cache
def nnpack_convolves() -> bool:
    """Whether NNPACK computes float32 convolutions here: PyTorch's CPU builds include it, and
    it runs where its initialisation finds the CPU features it needs (AVX2 and FMA on x86).
    ``torch._nnpack_available()`` is also what initialises it: until it has been called, every
    NNPACK convolution fails ("SpatialConvolution_updateOutput failed")."""
    op = getattr(torch, "_nnpack_spatial_convolution", None)
    available = getattr(torch, "_nnpack_available", None)
    return op is not None and available is not None and bool(available())


def same_padding(
    size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]
) -> list[int]:
    """TensorFlow ``SAME`` padding of a 2-D input of ``size`` (height, width), in
    :func:`F.pad`'s order (left, right, top, bottom): ``max((ceil(n/s) - 1)*s + k - n, 0)`` in
    total per side, the odd pixel at the bottom/right."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class FusedConv(nn.Module):
    """A convolution with the batch norm after it folded into its weights (in ``dtype``), and
    the activation after that (``"relu"``, ``"relu6"`` or ``None``) applied in the same oneDNN
    pass on a CPU (elsewhere, or where oneDNN refuses ``dtype``, by ``conv2d`` and a pass of its
    own). ``same``: TensorFlow ``SAME`` padding from the input's size instead of the
    convolution's own; a symmetric one is passed to the convolution, an asymmetric one (stride
    2 on even sizes) applied by :func:`F.pad`.

    ``winograd``: compute it with NNPACK's Winograd kernels on a CPU where NNPACK runs
    (:func:`nnpack_convolves`), one image at a time (NNPACK's batched path is another, slower
    algorithm), the activation in a pass of its own; the output is then contiguous, whatever the
    input's layout. Only for a float32 3x3 convolution with stride 1, no dilation and one group;
    elsewhere the oneDNN path runs."""

    def __init__(
        self,
        conv: nn.Conv2d,
        norm: nn.BatchNorm2d | None,
        activation: str | None,
        dtype: torch.dtype,
        same: bool = False,
        winograd: bool = False,
    ) -> None:
        super().__init__()
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or None")
        if norm is not None:
            conv = fuse_conv_bn_eval(conv, norm)
        self.weight = nn.Parameter(conv.weight.detach().to(dtype), requires_grad=False)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.kernel_size, self.stride = tuple(conv.kernel_size), list(conv.stride)
        self.padding, self.dilation = list(conv.padding), list(conv.dilation)
        self.groups, self.activation, self.same = conv.groups, activation, same
        self.winograd = winograd and (
            self.kernel_size == (3, 3)
            and self.stride == [1, 1]
            and self.dilation == [1, 1]
            and self.groups == 1
            and dtype == torch.float32
        )
        if winograd and not self.winograd:
            raise ValueError(
                "winograd needs a float32 3x3 convolution with stride 1, no dilation and one "
                f"group, not {dtype} {self.kernel_size} stride {self.stride} dilation "
                f"{self.dilation} groups {self.groups}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        padding = self.padding
        if self.same:
            left, right, top, bottom = same_padding(x.shape[-2:], self.kernel_size, self.stride)
            if (left, top) == (right, bottom):
                padding = [top, left]
            else:
                x, padding = F.pad(x, [left, right, top, bottom]), [0, 0]
        if self.winograd and x.device.type == "cpu" and nnpack_convolves():
            weight = self.weight.contiguous()  # a no-op unless moved to channels-last
            ys = [
                torch._nnpack_spatial_convolution(
                    one.contiguous(), weight, self.bias, padding, self.stride
                )
                for one in x.split(1)
            ]
            y = ys[0] if len(ys) == 1 else torch.cat(ys)
            return ACTIVATIONS[self.activation][2](y, inplace=True) if self.activation else y
        if x.device.type == "cpu" and onednn_convolves(self.weight.dtype):
            post, scalars = ACTIVATIONS[self.activation][:2] if self.activation else ("none", [])
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, padding, self.stride, self.dilation, self.groups,
                post, scalars, "",
            )  # fmt: skip
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return ACTIVATIONS[self.activation][2](y) if self.activation else y


class ChannelsLast(nn.Module):
    """Return the input in channels-last layout (itself if it already is): after Winograd
    convolutions, whose outputs are contiguous, for the layers that follow. On a CPU, PyTorch's
    max pooling is ~15x slower on a contiguous map than on a channels-last one, and oneDNN's
    convolutions, ReLUs and concatenations run in channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)
