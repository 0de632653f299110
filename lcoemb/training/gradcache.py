"""GradCache: a large contrastive batch in bounded memory (Gao et al. 2021).

InfoNCE needs the embeddings of the whole batch at once (1056 triplets in the recipe), but the
activations of an MLLM forward on that many inputs do not fit in memory. The loss, however,
depends on the model only through the embeddings, so the step splits in three:

1. embed every chunk of ``chunk_size`` items under ``torch.no_grad()`` (no activations kept);
2. compute the loss on the full batch of embeddings, made leaves, and take its gradient with
   respect to each embedding: the *cached gradient*;
3. embed each chunk again with gradients and backpropagate ``(emb * cached_grad).sum()``, whose
   gradient with respect to ``emb`` is exactly the cached gradient, so the parameter gradients
   sum up to those of the ordinary step.

Peak memory is one chunk's activations plus the batch's embeddings; the price is a second
forward pass. When the whole local batch fits in one chunk there is nothing to save, so it is
embedded once, with gradients, and the loss backpropagated directly (same gradients, a third
less compute). Step 3 must see the same function as step 1, so the random state (LoRA dropout)
of each chunk's first forward is recorded and replayed, like GradCache's ``RandContext``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["grad_cache_step"]


@dataclass(frozen=True)
class _RngState:
    """The CPU generator and, once CUDA is in use, the current CUDA device's generator.

    Only the current device: capturing every visible GPU would create a CUDA context on each of
    them in every process. One device per process is how data-parallel training runs; a model
    spread over several GPUs would need their states too.
    """

    cpu: Tensor
    cuda: Tensor | None
    cuda_device: int | None

    @classmethod
    def capture(cls) -> _RngState:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            device = torch.cuda.current_device()
            return cls(torch.get_rng_state(), torch.cuda.get_rng_state(device), device)
        return cls(torch.get_rng_state(), None, None)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.cuda_device)


@dataclass(frozen=True)
class _Chunk:
    group: str
    start: int
    items: list[Any]
    rng: _RngState


def _backward(loss: Tensor) -> None:
    loss.backward()


def _check_shape(emb: Tensor, n: int, name: str) -> None:
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(
            f"embed returned shape {tuple(emb.shape)} for {n} {name!r} items; expected ({n}, d)"
        )


def _direct_step(
    embed: Callable[[list[Any]], Tensor],
    groups: Mapping[str, Sequence[Any]],
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    backward: Callable[[Tensor], None],
) -> float:
    """The ordinary step, for a local batch that fits in one chunk: one forward over every
    group's items together, the loss, one backward."""
    items = [x for group in groups.values() for x in group]
    emb = embed(items)
    _check_shape(emb, len(items), "+".join(groups))
    reps, start = {}, 0
    for name, group in groups.items():
        reps[name] = emb[start : start + len(group)]
        start += len(group)
    loss = loss_fn(reps)
    backward(loss)
    return float(loss.detach())


def grad_cache_step(
    embed: Callable[[list[Any]], Tensor],
    groups: Mapping[str, Sequence[Any]],
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    *,
    chunk_size: int,
    backward: Callable[[Tensor], None] = _backward,
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
) -> float:
    """Accumulate into ``.grad`` the gradients of ``loss_fn`` on the embedded ``groups``.

    Args:
        embed: maps a list of raw items to their ``(n, d)`` embeddings; it must build a graph
            when gradients are enabled. Called twice per chunk: once without gradients, once
            with them, under the same random state.
        groups: raw items by role, e.g. ``{"anchor": [...], "positive": [...], "negative": [...]}``.
            Groups are embedded in this order, each in chunks of ``chunk_size``. An empty group
            reaches ``loss_fn`` as a ``(0, d)`` tensor.
        loss_fn: the scalar loss of the dict of full local embedding tensors (same keys as
            ``groups``). It runs once per step and may gather across processes.
        chunk_size: items per forward pass; ``>= len(group)`` embeds a group in one pass.
        backward: runs the backward of each chunk's surrogate loss; pass ``accelerator.backward``
            so that gradient-accumulation scaling and fp16 loss scaling apply.
        no_sync: a context manager factory entered around the forward and backward of every
            chunk but the last, e.g. ``lambda: model.no_sync()`` for DDP, so gradients are
            all-reduced once per step instead of once per chunk.

    Returns:
        The loss value (what ``loss_fn`` returned).

    Random state: every chunk's second forward runs under the state its first forward started
    from, so dropout masks match and the gradients are those of one ordinary pass over the same
    chunks. On return the global RNG is where the first pass and ``loss_fn`` left it, as if the
    step had run once without GradCache: the replays consume no randomness, so the step is
    deterministic given the seed and later random draws are those of an ordinary step. With
    dropout disabled the result equals the un-chunked step for any ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if 0 < sum(len(items) for items in groups.values()) <= chunk_size:
        return _direct_step(embed, groups, loss_fn, backward)

    chunks: list[_Chunk] = []
    parts: dict[str, list[Tensor]] = {name: [] for name in groups}
    with torch.no_grad():
        for name, items in groups.items():
            for start in range(0, len(items), chunk_size):
                piece = list(items[start : start + chunk_size])
                rng = _RngState.capture()
                emb = embed(piece)
                _check_shape(emb, len(piece), name)
                parts[name].append(emb)
                chunks.append(_Chunk(name, start, piece, rng))
    if not chunks:
        raise ValueError("grad_cache_step got no items in any group")

    like = next(p[0] for p in parts.values() if p)
    reps = {
        name: (torch.cat(p) if p else like.new_empty(0, like.shape[1])).requires_grad_()
        for name, p in parts.items()
    }
    loss = loss_fn(reps)
    if not loss.requires_grad:
        raise ValueError("loss_fn returned a value that does not depend on the embeddings")
    names = list(reps)
    found = torch.autograd.grad(loss, [reps[n] for n in names], allow_unused=True)
    cached = {n: torch.zeros_like(reps[n]) if g is None else g for n, g in zip(names, found)}
    after_first_pass = _RngState.capture()

    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        with nullcontext() if no_sync is None or last else no_sync():
            chunk.rng.restore()
            emb = embed(chunk.items)
            grad = cached[chunk.group][chunk.start : chunk.start + len(chunk.items)]
            backward((emb * grad).sum())
    after_first_pass.restore()
    return float(loss.detach())
