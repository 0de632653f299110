"""Inference fast paths for Qwen2.5 and Llama decoders and vision towers (same vectors, less
work).

* :func:`last_token_states` runs a Qwen2.5 or Llama text model (LCO-Mini's SmolLM2 included)
  for last-token embeddings only:

  - It right-aligns the left-padded batch: padding then sits after every real token.
  - It computes a prefix that every row shares once per batch instead of once per row. Every
    input starts with the chat template's system turn (~40 tokens with Qwen's tokenizer, 24
    with SmolLM2's), and a causal decoder's states for a shared prefix do not depend on what
    follows; the other tokens attend to the prefix's keys and values.
  - The final layer computes its output projection and MLP for the pooled token only (each
    row's last real token): the only row an embedding reads.
  - On a CPU, attention runs one causal SDPA call per row over exactly its own tokens, the call
    the model makes for that row encoded alone (:func:`_attention`): a padded batched call
    rounds differently, which LCO-Mini's SmolLM2 amplified to cosines of 0.9993. Where the
    CPU's GEMMs also give a row the same bits whatever the number of rows (the AMD EPYC we
    measured on), every row's vector is then bit-identical in bf16 to its unbatched one,
    whatever the batch; where oneDNN picks GEMM kernels by row count (an Intel Xeon we
    measured on), batched rows differ from unbatched ones by about as much as the plain
    forward's own batching does (cosine ~0.9994 on LCO-Mini). On other devices attention is
    one batched causal call, since a loop of per-row calls there is a loop of small kernels.

  Each layer runs through the layer's own modules (norms, projections, MLP), so an unmerged peft
  LoRA adapter works unchanged, and training through this path (:meth:`OmniEncoder.embed`)
  keeps gradient checkpointing. The batch is packed, shared prefix first, then the rows' other
  tokens, so each projection and MLP is one GEMM over all of them (a row's GEMM results do not
  depend on the other rows).
* :func:`patch_embed_as_grid` runs the ViT patch embedding, a ``Conv3d`` whose stride equals its
  kernel, over one image that tiles all patches in a grid instead of over N separate 14x14
  inputs. oneDNN then picks its spatial kernel, ~15x faster on CPU in bf16, and every output is
  bit-identical (each still reduces its own patch in the convolution's order). The equivalent
  GEMM is faster still, but its different summation order flips 0.02 % of patch embeddings by one
  bf16 step, which a random 1024-wide model amplifies to cosine 0.9999 against the reference.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.modeling_outputs import BaseModelOutputWithPast

from lcoemb.backbones.attention import FLOAT32_SDPA, in_float32

#: Whether the current call wants last-token states only. A context variable, not a flag on the
#: model: every thread (and asyncio task) has its own value, so concurrent encodes on one model
#: never see each other's choice.
_LAST_TOKEN_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lcoemb_last_token_only", default=False
)

#: Shorter shared prefixes are left alone: they save little next to the extra attention call
#: and copies they cost (a round number, not tuned).
MIN_SHARED_PREFIX = 16


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def _keys_values(attn: Any, x: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed keys (rotated) and values ``(T, kv heads, hd)`` of the normed states ``x``."""
    k = _rope(attn.k_proj(x).view(len(x), -1, attn.head_dim), cos, sin)
    return k, attn.v_proj(x).view(len(x), -1, attn.head_dim)


#: device types whose attention runs per row (:func:`_attention`); elsewhere batched
PER_ROW_ATTENTION_DEVICES = frozenset({"cpu"})


def _attention(attn: Any, q, k, v, p: int, rows: torch.Tensor, lengths: list[int]):
    """Each row's causal self-attention, prefix included, as packed outputs ``(T, heads, hd)``
    from the packed ``(T, heads, hd)`` queries, keys and values: a shared prefix of ``p``
    tokens (its outputs are row 0's), then every row's own ``n - p`` slots, of which the first
    ``lengths[i] - p`` are real. ``rows`` ``(b, n)`` indexes each row's tokens in that order.

    On a CPU, one SDPA call per row over exactly its own tokens: the call the model makes for
    the row encoded alone. SDPA's CPU kernel sums each softmax row in an order that depends on
    the number of keys, of queries and where padding sits, so a shared padded call rounds
    differently in bf16, and LCO-Mini's SmolLM2 amplified those last bits to cosines of
    0.9993 between a row's batched and unbatched vectors; this way a row's attention is
    bit-identical to its unbatched one, in any batch. Each row is gathered from the packed
    tensors (the prefix, then its own real tokens) and its outputs are written straight back,
    so no padded ``(b, n)`` copy is made; padding slots' outputs stay 0.

    On other devices, one causal call over the padded, right-aligned batch: each row's padding
    comes after its real tokens, which never attend to it (the padding's outputs are never
    read). A loop of per-row calls there would be a loop of small kernels."""
    if q.device.type not in PER_ROW_ATTENTION_DEVICES:
        qs, ks, vs = (x[rows].transpose(1, 2) for x in (q, k, v))  # (b, heads, n, hd)
        return _packed(_sdpa(attn, qs, ks, vs).transpose(1, 2), p)
    out = q.new_zeros(q.shape)
    seg = rows.shape[1] - p
    for i, length in enumerate(lengths):
        own = slice(p + i * seg, p + i * seg + length - p)
        if p:
            qi, ki, vi = (torch.cat([x[:p], x[own]]) for x in (q, k, v))
        else:
            qi, ki, vi = q[own], k[own], v[own]
        o = _sdpa(attn, *(x.transpose(0, 1)[None] for x in (qi, ki, vi)))[0].transpose(0, 1)
        out[own] = o[p:]
        if i == 0 and p:
            out[:p] = o[:p]
    return out


def _packed(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(b, n, ...)`` with a shared ``p``-token prefix -> packed ``(p + b * (n - p), ...)``:
    the prefix once (row 0's), then every row's own tokens."""
    return torch.cat([x[0, :p], x[:, p:].flatten(0, 1)])


def _sdpa(attn: Any, q, k, v) -> torch.Tensor:
    """Causal SDPA as the layer's attention module would run it: its scale and dropout, and in
    float32 when the model is set to lcoemb's float32 SDPA (CPU bf16 training,
    :mod:`lcoemb.backbones.attention`)."""
    kwargs = {
        "is_causal": True,
        "scale": attn.scaling,
        "dropout_p": getattr(attn, "attention_dropout", 0.0) if attn.training else 0.0,
        "enable_gqa": True,
    }
    sdpa = functools.partial(F.scaled_dot_product_attention, **kwargs)
    if attn.config._attn_implementation == FLOAT32_SDPA:
        return in_float32(sdpa, q, k, v)
    return sdpa(q, k, v)


def _qkv(attn: Any, x: torch.Tensor, cos, sin):
    """Packed rotated queries, keys and values ``(T, heads, hd)`` of the normed states."""
    q = _rope(attn.q_proj(x).view(len(x), -1, attn.head_dim), cos, sin)
    return (q, *_keys_values(attn, x, cos, sin))


def _layer(layer: Any, h: torch.Tensor, cos, sin, p: int, rows, lengths) -> torch.Tensor:
    """One decoder layer over the packed tokens ``h`` (T, d): a shared prefix of ``p`` tokens,
    then the rows' own tokens, ``n - p`` each (see :func:`_attention` for ``rows`` and
    ``lengths``); ``cos``/``sin`` are ``(T, 1, head_dim)``."""
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    o = _attention(attn, *_qkv(attn, x, cos, sin), p, rows, lengths)
    h = h + attn.o_proj(o.flatten(1))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _last_layer(layer: Any, h: torch.Tensor, cos, sin, p: int, rows, lengths) -> torch.Tensor:
    """The final decoder layer for the pooled token of each row (its last real one): attention
    as in :func:`_layer`; output projection, residual and MLP for those ``b`` tokens only."""
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    o = _attention(attn, *_qkv(attn, x, cos, sin), p, rows, lengths)
    last = torch.tensor(lengths, device=h.device) - 1
    pooled = rows.gather(1, last[:, None])[:, 0]  # each pooled token's packed index
    r = h[pooled] + attn.o_proj(o[pooled].flatten(1))
    return r + layer.mlp(layer.post_attention_layernorm(r))


def shared_prefix_length(h: torch.Tensor, position_ids: torch.Tensor, lengths: torch.Tensor) -> int:
    """How many leading positions of the right-aligned batch ``h`` (B, n, d) every row shares,
    embeddings and (M-RoPE) positions alike; 0 when that is under :data:`MIN_SHARED_PREFIX`.
    Every row keeps at least its last real token out of the prefix."""
    if h.shape[0] < 2:
        return 0
    same = (h == h[:1]).all(-1).all(0) & (position_ids == position_ids[:, :1]).all(1).all(0)
    limit = int(lengths.min()) - 1
    shared = int(same[:limit].int().cumprod(0).sum())
    return shared if shared >= MIN_SHARED_PREFIX else 0


def supports_fast_path(text_model: Any) -> bool:
    """Whether :func:`last_token_states` computes exactly what ``text_model`` does: full causal
    attention in every layer, run by SDPA (the fast path calls SDPA itself), and the decoder
    layer it rebuilds from parts — Qwen2/Llama's: q/k/v/o projections without per-head q/k
    norms, a dense gated MLP (not a mixture of experts), and no vision features injected into
    early layers (Qwen3-VL's DeepStack). Any other family runs its own forward."""
    config = text_model.config
    layer = text_model.layers[0]
    return (
        config._attn_implementation in ("sdpa", FLOAT32_SDPA)
        and not getattr(config, "use_sliding_window", False)
        and all(t == "full_attention" for t in getattr(config, "layer_types", ["full_attention"]))
        and all(hasattr(layer.self_attn, f"{x}_proj") for x in "qkvo")
        and not hasattr(layer.self_attn, "q_norm")
        and hasattr(layer.mlp, "gate_proj")
        and "deepstack_visual_embeds" not in inspect.signature(text_model.forward).parameters
    )


def _is_mrope(text_model: Any) -> bool:
    """Qwen's multimodal RoPE takes (t, h, w) position rows; a 1-D RoPE (Llama) takes one."""
    return "mrope_section" in (getattr(text_model.config, "rope_parameters", None) or {})


def last_token_states(text_model: Any):
    """A drop-in ``forward`` for a Qwen2.5 or Llama text model whose ``last_hidden_state`` is
    ``(B, 1, d)``: the final-norm state of each row's pooled token (rows must be left-padded).
    Positions are carried as M-RoPE's three rows (equal for text) and reach a 1-D RoPE as
    one."""
    mrope = _is_mrope(text_model)

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
        cos, sin = text_model.rotary_emb(h, pos if mrope else pos[0])
        p = shared_prefix_length(h, pos, lengths)
        # row i's tokens in the packed order: the prefix, then its own from p + i * (n - p)
        column = torch.arange(n, device=h.device)
        rows = torch.where(
            column < p, column, torch.arange(b, device=h.device)[:, None] * (n - p) + column
        )
        lengths_ = lengths.tolist()
        h, cos, sin = _packed(h, p), _packed(cos, p)[:, None], _packed(sin, p)[:, None]
        for layer in text_model.layers[:-1]:
            # transformers checkpoints a layer in its own __call__, which this path bypasses
            if layer.training and getattr(layer, "gradient_checkpointing", False):
                h = checkpoint(_layer, layer, h, cos, sin, p, rows, lengths_, use_reentrant=False)
            else:
                h = _layer(layer, h, cos, sin, p, rows, lengths_)
        h = _last_layer(text_model.layers[-1], h, cos, sin, p, rows, lengths_)
        return BaseModelOutputWithPast(last_hidden_state=text_model.norm(h)[:, None])

    return forward


def install_last_token_path(text_model: Any) -> None:
    """Give ``text_model`` a ``forward`` that runs :func:`last_token_states` inside
    :func:`last_token_only` and its class's own forward everywhere else (generation, training
    losses on logits, ``output_hidden_states``).

    It is installed once, when the model is loaded, and never changed afterwards: patching the
    instance around each call instead would let one thread's call remove another's forward.
    """
    fast = last_token_states(text_model)
    full = text_model.forward

    @functools.wraps(full)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if _LAST_TOKEN_ONLY.get() and not args:
            return fast(**kwargs)
        return full(*args, **kwargs)

    text_model.forward = forward


@contextlib.contextmanager
def last_token_only() -> Iterator[None]:
    """Within this block, in this thread or task only, a model set up by
    :func:`install_last_token_path` computes last-token states only."""
    token = _LAST_TOKEN_ONLY.set(True)
    try:
        yield
    finally:
        _LAST_TOKEN_ONLY.reset(token)


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
