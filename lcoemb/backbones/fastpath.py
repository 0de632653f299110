"""Inference fast paths for Qwen2.5 decoders and vision towers (same vectors, less work).

* :func:`last_token_states` runs a Qwen2.5 text model for last-token embeddings only. It
  right-aligns the left-padded batch so that SDPA runs causal *without* a mask (no 4-D mask, GQA
  without ``repeat_kv``); padding then sits after every real token and can never be attended to.
  The final layer computes its query, attention output and MLP for the last real token only:
  the only row an embedding reads.
* :func:`patch_embed_as_grid` runs the ViT patch embedding, a ``Conv3d`` whose stride equals its
  kernel, over one image that tiles all patches in a grid instead of over N separate 14x14
  inputs. oneDNN then picks its spatial kernel, ~15x faster on CPU in bf16, and every output is
  bit-identical (each still reduces its own patch in the convolution's order). The equivalent
  GEMM is faster still, but its different summation order flips 0.02 % of patch embeddings by one
  bf16 step, which a random 1024-wide model amplifies to cosine 0.9999 against the reference.
* ``compile=True`` runs the other layers through a pure per-layer function under
  ``torch.compile(dynamic=True)``, fusing RMSNorm, RoPE, SiLU*up and residual adds (one compile of
  ~15-20 s per process; needs a C++ compiler). It reads the weights directly, so it is skipped
  for any layer whose projections are not plain ``nn.Linear`` (an unmerged peft LoRA adapter).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPast


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def _rms(h: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x = h.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(h.dtype)


def _layer_fn(
    h, cos, sin, w1, eps1, wq, bq, wk, bk, wv, bv, wo, w2, eps2, wg, wu, wd,
    hd: int, scale: float,
):  # fmt: skip
    """One Qwen2.5 decoder layer, causal, no mask, as a pure function (``torch.compile``-able)."""
    b, n, _ = h.shape
    x = _rms(h, w1, eps1)
    q = F.linear(x, wq, bq).view(b, n, -1, hd).transpose(1, 2)
    k = F.linear(x, wk, bk).view(b, n, -1, hd).transpose(1, 2)
    v = F.linear(x, wv, bv).view(b, n, -1, hd).transpose(1, 2)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = _rope(q, c, s), _rope(k, c, s)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    h = h + F.linear(o.transpose(1, 2).reshape(b, n, -1), wo)
    x = _rms(h, w2, eps2)
    return h + F.linear(F.silu(F.linear(x, wg)) * F.linear(x, wu), wd)


def _layer_args(layer: Any) -> tuple[Any, ...]:
    a, m = layer.self_attn, layer.mlp
    ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
    return (
        ln1.weight, ln1.variance_epsilon,
        a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias,
        a.v_proj.weight, a.v_proj.bias, a.o_proj.weight,
        ln2.weight, ln2.variance_epsilon,
        m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight,
        a.head_dim, a.scaling,
    )  # fmt: skip


def _plain(layer: Any) -> bool:
    a, m = layer.self_attn, layer.mlp
    mods = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
    return all(type(x) is torch.nn.Linear for x in mods)


def _last_layer(layer: Any, h: torch.Tensor, cos, sin, last: torch.Tensor) -> torch.Tensor:
    """The final decoder layer for the last real token of each row: keys and values for all
    positions, query, attention output and MLP for one."""
    b, n, _ = h.shape
    rows = torch.arange(b, device=h.device)
    a = layer.self_attn
    x = layer.input_layernorm(h)
    k = a.k_proj(x).view(b, n, -1, a.head_dim).transpose(1, 2)
    v = a.v_proj(x).view(b, n, -1, a.head_dim).transpose(1, 2)
    q = a.q_proj(x[rows, last][:, None]).view(b, 1, -1, a.head_dim).transpose(1, 2)
    q = _rope(q, cos[rows, last][:, None, None], sin[rows, last][:, None, None])
    k = _rope(k, cos.unsqueeze(1), sin.unsqueeze(1))
    keep = (torch.arange(n, device=h.device)[None] <= last[:, None])[:, None, None, :]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=a.scaling, enable_gqa=True)
    r = h[rows, last][:, None] + a.o_proj(o.transpose(1, 2).reshape(b, 1, -1))
    return r + layer.mlp(layer.post_attention_layernorm(r))


def supports_fast_path(text_model: Any) -> bool:
    config = text_model.config
    return not getattr(config, "use_sliding_window", False) and all(
        t == "full_attention" for t in getattr(config, "layer_types", ["full_attention"])
    )


def last_token_states(text_model: Any, *, compile: bool = False):
    """A drop-in ``forward`` for a Qwen2.5 text model whose ``last_hidden_state`` is ``(B, 1, d)``:
    the final-norm state of each row's last real token (rows must be left-padded)."""
    layer_fn = torch.compile(_layer_fn, dynamic=True) if compile else None

    def forward(
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        b, n, d = inputs_embeds.shape
        if attention_mask is None:
            attention_mask = torch.ones(b, n, dtype=torch.long, device=inputs_embeds.device)
        if position_ids is None:
            position_ids = torch.arange(n, device=inputs_embeds.device).expand(3, b, n)
        elif position_ids.ndim == 2:
            position_ids = position_ids[None].expand(3, -1, -1)
        elif position_ids.shape[0] == 4:  # text positions prepended (packed inputs)
            position_ids = position_ids[1:]
        lengths = attention_mask.sum(1)
        # right-align: row i's real tokens move to the front, its padding to the back
        src = (torch.arange(n, device=lengths.device)[None] + (n - lengths)[:, None]) % n
        h = inputs_embeds.gather(1, src[..., None].expand(-1, -1, d))
        pos = position_ids.gather(2, src[None].expand(position_ids.shape[0], -1, -1))
        cos, sin = text_model.rotary_emb(h, pos)
        for layer in text_model.layers[:-1]:
            if compile and _plain(layer):
                h = layer_fn(h, cos, sin, *_layer_args(layer))
            else:  # the model's own layer: causal SDPA without a mask, LoRA-aware
                h = layer(h, attention_mask=None, position_embeddings=(cos, sin))
                h = h[0] if isinstance(h, tuple) else h
        h = _last_layer(text_model.layers[-1], h, cos, sin, lengths - 1)
        return BaseModelOutputWithPast(last_hidden_state=text_model.norm(h))

    return forward


def patch_embed_as_grid(patch_embed: Any):
    """A drop-in ``forward`` for ``Qwen2_5_VisionPatchEmbed``: the same ``Conv3d`` over the
    patches tiled into one ``rows x cols`` grid image (channels-last), bit-identical output."""
    conv = patch_embed.proj

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        c, t, p = patch_embed.in_channels, patch_embed.temporal_patch_size, patch_embed.patch_size
        x = hidden_states.view(-1, c, t, p, p).to(conv.weight.dtype)
        n = x.shape[0]
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        if rows * cols > n:  # zero patches fill the grid's last row; their outputs are dropped
            x = torch.cat([x, x.new_zeros(rows * cols - n, c, t, p, p)])
        grid = x.view(rows, cols, c, t, p, p).permute(2, 3, 0, 4, 1, 5)
        grid = grid.reshape(1, c, t, rows * p, cols * p)
        out = conv(grid.contiguous(memory_format=torch.channels_last_3d))  # (1, D, 1, rows, cols)
        return out.flatten(2)[0].t()[:n].contiguous()

    return forward
