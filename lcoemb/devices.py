"""Which device to run on and whether it computes bf16 fast: used by the backbones, LCO-Mini's
towers and the trainer alike."""

from __future__ import annotations

import torch

__all__ = ["default_device", "fast_bf16"]


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
