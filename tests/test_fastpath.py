"""The inference fast paths compute what the modules they replace compute."""

import pytest
import torch
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5_VisionPatchEmbed

from lcoemb.backbones.fastpath import patch_embed_as_grid


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [1, 7, 37, 64])
def test_grid_patch_embedding_is_bit_identical_to_conv3d(n, dtype):
    torch.manual_seed(n)
    embed = Qwen2_5_VisionPatchEmbed(patch_size=14, temporal_patch_size=2, embed_dim=96).to(dtype)
    torch.nn.init.normal_(embed.proj.weight, std=0.02)
    pixels = torch.randn(n, 3 * 2 * 14 * 14)  # float32 patches, as the image processor emits
    with torch.inference_mode():
        expected = embed(pixels)
        got = patch_embed_as_grid(embed)(pixels)
    assert got.shape == expected.shape == (n, 96)
    assert got.dtype == expected.dtype
    assert got.is_contiguous()
    assert torch.equal(got, expected)
