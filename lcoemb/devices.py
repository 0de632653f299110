"""Which device to run on, whether it computes bf16 fast, and so which dtype a model runs in by
default: used by the backbones, LCO-Mini's towers and the trainer alike."""

from __future__ import annotations

import warnings

import torch

__all__ = [
    "default_device",
    "default_dtype",
    "dtype_name",
    "fast_bf16",
    "float32_cpu",
    "warn_if_slow",
]


def default_device() -> torch.device:
    """CUDA if available, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 much faster than float32: CUDA with bf16 support, or a
    CPU with AMX or AVX-512 bf16 (several times faster there, through autocast)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch._C._cpu
    return device.type == "cpu" and (
        cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()
    )


def float32_cpu(device: str | torch.device) -> bool:
    """Whether ``device`` is a CPU where models run in float32 by default (no AMX or AVX-512
    bf16: :func:`default_dtype`). There rewrites of LCO-Mini's frozen towers that change only
    float32's last bits are invisible in the vectors, so they are the default; a bf16 language
    model would turn the same changes into cosines of ~0.999."""
    device = torch.device(device)
    return device.type == "cpu" and not fast_bf16(device)


def default_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The dtype a model runs in when none is asked for: bfloat16, the reference recipe's
    precision, where ``device`` (default: :func:`default_device`) computes it fast, and on
    Apple's MPS; float32 everywhere else.

    Why: a CPU without AMX or AVX-512 bf16 (most laptops: AVX2-only Intel and AMD Zen 2/3)
    has no bf16 kernels, and PyTorch's fallbacks run a bf16 matmul 7-140x slower than the
    float32 one on the same CPU. float32 keeps more bits of the same weights and activations,
    so the vectors move by about as much as bf16 batching moves them (cosine 0.998-0.9993
    for LCO-Mini)."""
    device = torch.device(device) if device is not None else default_device()
    return torch.bfloat16 if device.type == "mps" or fast_bf16(device) else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as lcoemb writes it in manifests, shards and options (``"bfloat16"``), the name
    :func:`torch` and ``--dtype`` both take."""
    return str(dtype).removeprefix("torch.")


def warn_if_slow(device: torch.device, dtype: torch.dtype) -> None:
    """Warn when a model was asked to run in bf16 on a CPU without fast bf16 (the default never
    picks that): it works, several times slower than float32, which a user may not expect."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not fast_bf16(device):
        warnings.warn(
            "bfloat16 on this CPU (no AMX or AVX-512 bf16) runs several times slower than "
            "float32; leave the dtype unset (or pass float32) unless you need bf16's vectors",
            stacklevel=3,
        )
