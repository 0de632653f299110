"""The inference fast paths compute what the modules they replace compute."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5_VisionPatchEmbed

from lcoemb.backbones.fastpath import patch_embed_as_grid
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token


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


TEXTS = [
    "a short one",
    "a somewhat longer sentence about shapes, colours and sounds",
    "three",
    " ".join(["many words in a long text"] * 12),
]


def _prepare(backbone):
    return backbone.prepare([load_item(text, i) for i, text in enumerate(TEXTS)])


def _common_prefix(inputs) -> int:
    rows = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])
    ]
    n = 0
    while all(len(r) > n + 1 and r[n] == rows[0][n] for r in rows):
        n += 1
    return n


@pytest.mark.parametrize("attention", ["per-row", "batched"])
@pytest.mark.parametrize("model", ["omni", "vl", "omni+lora"])
def test_fast_text_path_with_a_shared_prefix_equals_the_full_forward(
    model, attention, omni_path, vl_path, omni_adapter, monkeypatch
):
    """float32, so any difference is a bug rather than rounding: the fast path (right-aligned,
    shared prefix computed once, last layer for one token) against transformers' own forward,
    with attention per row (CPU) and batched (what other devices run)."""
    from lcoemb import OmniEncoder
    from lcoemb.backbones import fastpath

    if attention == "batched":
        monkeypatch.setattr(fastpath, "PER_ROW_ATTENTION_DEVICES", frozenset())
        calls = []
        real_sdpa = fastpath._sdpa
        monkeypatch.setattr(fastpath, "_sdpa", lambda *a: calls.append(a[1].shape) or real_sdpa(*a))

    path = vl_path if model == "vl" else omni_path
    adapter = omni_adapter if model.endswith("lora") else None
    enc = OmniEncoder.from_pretrained(path, adapter=adapter, device="cpu", dtype="float32")
    shared = []
    real = fastpath.shared_prefix_length
    monkeypatch.setattr(
        fastpath, "shared_prefix_length", lambda *a: shared.append(real(*a)) or shared[-1]
    )
    inputs = _prepare(enc.backbone)
    with torch.inference_mode():
        fast = last_token(enc.backbone.forward(inputs))
        full = last_token(enc.backbone.forward(inputs, all_layers=True))[-1]
    if model == "vl":
        # Qwen2.5-VL numbers text positions through the left padding, so each row's prefix sits
        # at other positions: nothing is shared, and the vectors stay the model's own
        assert shared == [0]
    else:  # the chat template's system turn is what every row shares
        assert shared == [_common_prefix(inputs)]
        assert shared[0] >= fastpath.MIN_SHARED_PREFIX
    torch.testing.assert_close(fast, full, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(fast[0], fast[1], atol=1e-2)  # rows differ: the check has teeth
    if attention == "batched":  # one call per layer over all rows
        layers = len(enc.backbone.language_model.layers)
        assert [q[0] for q in calls] == [len(TEXTS)] * layers


def test_no_shared_prefix_for_one_row_or_a_short_one():
    from lcoemb.backbones.fastpath import MIN_SHARED_PREFIX, shared_prefix_length

    h = torch.zeros(2, 40, 8)
    h[1, MIN_SHARED_PREFIX - 1 :] = 1.0
    pos = torch.arange(40).expand(3, 2, 40)
    lengths = torch.tensor([40, 40])
    assert shared_prefix_length(h, pos, lengths) == 0  # 15 shared positions: not worth it
    h[1, : MIN_SHARED_PREFIX + 5] = 0.0
    assert shared_prefix_length(h, pos, lengths) == MIN_SHARED_PREFIX + 5
    assert shared_prefix_length(h[:1], pos[:, :1], lengths[:1]) == 0
    # never past the shortest row's last token
    assert shared_prefix_length(torch.zeros(2, 40, 8), pos, torch.tensor([40, 20])) == 19


def test_fast_text_path_trains_like_the_full_forward_and_keeps_checkpointing(omni_path):
    """Training embeds through the fast path: its gradients must be transformers' own, and with
    gradient checkpointing on, each layer must run again in the backward pass. In float64: this
    random model's first-layer gradients are ~1e-5, the size of float32's rounding noise on
    them, while in float64 the two paths agree to ~1e-13."""
    from lcoemb import OmniEncoder

    enc = OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="float64")
    backbone = enc.backbone
    backbone.model.train()
    weight = backbone.language_model.layers[0].self_attn.q_proj.weight.requires_grad_(True)
    inputs = _prepare(backbone)
    fast = torch.autograd.grad(last_token(backbone.forward(inputs)).pow(2).sum(), weight)[0]
    full = last_token(backbone.forward(inputs, all_layers=True))[-1].pow(2).sum()
    torch.testing.assert_close(fast, torch.autograd.grad(full, weight)[0], atol=1e-11, rtol=1e-7)
    assert fast.abs().sum() > 0

    calls = []
    for layer in backbone.language_model.layers[:-1]:  # each runs its input norm once per pass
        layer.input_layernorm.register_forward_hook(lambda *_: calls.append(1))
    loss = last_token(backbone.forward(inputs)).pow(2).sum()
    assert len(calls) == len(backbone.language_model.layers) - 1  # no checkpointing yet
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers' current name, not the old
        backbone.enable_gradient_checkpointing()
    calls.clear()
    loss = last_token(backbone.forward(inputs)).pow(2).sum()
    forward_calls = len(calls)
    loss.backward()
    assert len(calls) == 2 * forward_calls  # every layer recomputed once


def test_fast_text_path_follows_the_models_attention_implementation(omni_path, monkeypatch):
    """The fast path calls SDPA itself: it must run it in float32 once the model is set to
    lcoemb's float32 SDPA (CPU bf16 training), and stay off for any non-SDPA implementation."""
    from lcoemb import OmniEncoder
    from lcoemb.backbones import fastpath

    eager = OmniEncoder.from_pretrained(omni_path, device="cpu", attn_implementation="eager")
    assert not eager.backbone.fast_text_path

    enc = OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="bfloat16")
    inputs = _prepare(enc.backbone)
    dtypes = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(
        fastpath.F,
        "scaled_dot_product_attention",
        lambda q, *a, **k: dtypes.append(q.dtype) or sdpa(q, *a, **k),
    )
    with torch.inference_mode():
        enc.backbone.forward(inputs)
        assert set(dtypes) == {torch.bfloat16}
        dtypes.clear()
        enc.backbone.use_float32_attention()
        out = last_token(enc.backbone.forward(inputs))
    assert dtypes and set(dtypes) == {torch.float32}
    assert out.dtype == torch.bfloat16
