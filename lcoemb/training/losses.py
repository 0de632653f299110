"""Contrastive losses on embedding vectors: InfoNCE over the global batch, and Matryoshka.

A loss here knows vectors and nothing about models: it takes the (unnormalised) embeddings a
process computed for its slice of the batch and returns a scalar. Under data parallelism the
recipe scores every anchor against the positives and hard negatives of *all* processes, so
the losses gather embeddings across ranks with gradients (as open_clip's ``loss.py`` does).

Why no ``1 / world_size`` anywhere: every rank computes the *same* global loss ``L`` (the mean
over all anchors of the global batch) from the gathered embeddings. The backward of
``torch.distributed.nn.functional.all_gather`` sums the gradients that every rank's copy of
``L`` sends to a rank's local slice, so rank ``r`` gets ``world_size * dL/dx_r``. Data-parallel
training then *averages* parameter gradients over ranks (DDP, DeepSpeed, or an explicit
``all_reduce(AVG)``), which gives ``(1/W) * sum_r W * dL/dx_r * dx_r/dθ = dL/dθ``: exactly the
gradient of one process on the global batch. Dividing the loss by the world size, or computing
it only for the local anchors without rescaling, would make the effective learning rate depend
on the number of GPUs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.nn.functional import all_gather

__all__ = ["ContrastiveBatch", "InfoNCELoss", "MatryoshkaLoss", "gather_with_grad"]


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0, keeping the autograd graph.

    The result is ``[x_rank0; x_rank1; ...]`` on every rank. In the backward pass each rank's
    local ``x`` receives the *sum* of the gradients that all ranks' results send to its rows (see
    the module docstring for why that is the right factor). The first dimension may differ
    between ranks (for example a rank with fewer hard negatives): slices are padded to the
    longest for the collective and trimmed afterwards. This is the identity when
    ``torch.distributed`` is not initialised or the world has one process.
    """
    world = _world_size()
    if world == 1:
        return x
    local = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes_t = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(sizes_t, local)
    sizes = [int(s) for s in sizes_t]
    longest = max(sizes)
    if longest == 0:
        return x
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
    parts = all_gather(x)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def _gather_objects(items: Sequence[Hashable]) -> list[Hashable]:
    """Concatenate a per-rank list of picklable keys across processes, in rank order."""
    world = _world_size()
    if world == 1:
        return list(items)
    out: list[list[Hashable] | None] = [None] * world
    dist.all_gather_object(out, list(items))
    return [key for part in out for key in part or []]


def _unit(x: Tensor) -> Tensor:
    """L2-normalise in at least float32: with temperature 0.03 the logits reach ±33, and bf16
    keeps only ~3 significant digits, which would blur the softmax."""
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=-1)


@dataclass(frozen=True)
class ContrastiveBatch:
    """The global batch a contrastive loss scores, already gathered across processes.

    ``excluded[i, j]`` is True where candidate ``j`` of ``[positives; negatives]`` is left out of
    anchor ``i``'s softmax (a duplicate of its own positive); None when nothing is masked.
    """

    anchors: Tensor  # (N, d)
    positives: Tensor  # (N, d)
    negatives: Tensor  # (M, d), M may be 0
    excluded: Tensor | None  # (N, N + M) bool


def _duplicates(
    positive_keys: Sequence[Hashable],
    negative_keys: Sequence[Hashable] | None,
    n_negatives: int,
    device: torch.device,
) -> Tensor:
    ids: dict[Hashable, int] = {}
    pos = torch.tensor([ids.setdefault(k, len(ids)) for k in positive_keys], device=device)
    if negative_keys is None:  # -1 never equals an id: no negative is masked
        neg = torch.full((n_negatives,), -1, dtype=torch.long, device=device)
    else:
        neg = torch.tensor(
            [ids.setdefault(k, len(ids)) for k in negative_keys], dtype=torch.long, device=device
        )
    excluded = pos[:, None] == torch.cat([pos, neg])[None, :]
    own = torch.arange(len(pos), device=device)
    excluded[own, own] = False  # the anchor's own positive is the label, never masked
    return excluded


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch and hard negatives over the global batch (the LCO-EMB recipe).

    Each anchor ``i`` is scored by cosine similarity / ``temperature`` against the candidates
    ``[all positives; all hard negatives]`` of the global batch and the loss is the cross-entropy
    with label ``i`` (its own positive), averaged over all anchors of the global batch. Every
    other positive is an in-batch negative; the hard negatives form a pool shared by all anchors
    whose size need not match the number of anchors.

    Args:
        temperature: softmax temperature on cosine similarities (0.03 in the reference recipe).
        bidirectional: also score each positive against all anchors (label: its own anchor) and
            average the two directions, as CLIP does. Hard negatives only enter the forward
            (anchor → candidates) term.
        mask_duplicates: drop false negatives. Given ``positive_keys`` (one hashable per local
            positive, e.g. its text), anchor ``i``'s softmax excludes every positive ``j != i``
            whose key equals ``key_i`` and, if ``negative_keys`` are given, every hard negative
            whose key equals ``key_i``. Such a candidate is the same item as the anchor's own
            positive, so treating it as a negative would push the anchor away from its answer.
            In the bidirectional term, positive ``i`` likewise excludes every anchor ``j != i``
            with ``key_j == key_i`` (an anchor whose positive is the same item). Keys are
            ignored when this is False.
        gather: gather embeddings (and keys) across processes so the batch is the global one.
            When torch.distributed is not initialised this changes nothing. Every rank then
            returns the same value, the single-process loss of the global batch, and gradients
            averaged across ranks equal the single-process gradients (module docstring).

    Inputs are the local, unnormalised ``(n, d)`` embeddings; ``negatives`` may be None. Under
    ``gather``, either every rank passes negatives or none does (a rank without any passes an
    empty ``(0, d)`` tensor), since the gather is a collective.
    """

    def __init__(
        self,
        temperature: float = 0.03,
        bidirectional: bool = False,
        mask_duplicates: bool = False,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.bidirectional = bidirectional
        self.mask_duplicates = mask_duplicates
        self.gather = gather

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, bidirectional={self.bidirectional}, "
            f"mask_duplicates={self.mask_duplicates}, gather={self.gather}"
        )

    def prepare(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Tensor | None = None,
        *,
        positive_keys: Sequence[Hashable] | None = None,
        negative_keys: Sequence[Hashable] | None = None,
    ) -> ContrastiveBatch:
        """Validate the local inputs, gather them across processes and build the duplicate mask.

        Split from :meth:`score` so that :class:`MatryoshkaLoss` gathers once for all its dims.
        """
        if anchors.ndim != 2 or positives.shape != anchors.shape:
            raise ValueError(
                "anchors and positives must both be (n, d) with one positive per anchor, got "
                f"{tuple(anchors.shape)} and {tuple(positives.shape)}"
            )
        if negatives is not None and (
            negatives.ndim != 2 or negatives.shape[1] != anchors.shape[1]
        ):
            raise ValueError(
                f"negatives must be (m, {anchors.shape[1]}), got {tuple(negatives.shape)}"
            )
        if self.mask_duplicates:
            if positive_keys is None:
                raise ValueError("mask_duplicates=True needs positive_keys (one per positive)")
            if len(positive_keys) != len(positives):
                raise ValueError(
                    f"{len(positive_keys)} positive_keys for {len(positives)} positives"
                )
            if negative_keys is not None and (
                negatives is None or len(negative_keys) != len(negatives)
            ):
                n_neg = 0 if negatives is None else len(negatives)
                raise ValueError(f"{len(negative_keys)} negative_keys for {n_neg} negatives")

        gather = gather_with_grad if self.gather else (lambda t: t)
        anchors, positives = gather(anchors), gather(positives)
        negatives = (
            anchors.new_empty(0, anchors.shape[1]) if negatives is None else gather(negatives)
        )

        excluded = None
        if self.mask_duplicates:
            assert positive_keys is not None
            gather_keys = _gather_objects if self.gather else list
            pos_keys = gather_keys(positive_keys)
            neg_keys = None if negative_keys is None else gather_keys(negative_keys)
            excluded = _duplicates(pos_keys, neg_keys, len(negatives), anchors.device)
        return ContrastiveBatch(anchors, positives, negatives, excluded)

    def score(self, batch: ContrastiveBatch, dim: int | None = None) -> Tensor:
        """The loss of a gathered batch, on the first ``dim`` dimensions (all when None)."""
        a = _unit(batch.anchors[:, :dim])
        p = _unit(batch.positives[:, :dim])
        n = _unit(batch.negatives[:, :dim])
        labels = torch.arange(len(a), device=a.device)
        logits = a @ torch.cat([p, n]).T / self.temperature
        if batch.excluded is not None:
            logits = logits.masked_fill(batch.excluded, float("-inf"))
        loss = F.cross_entropy(logits, labels)
        if self.bidirectional:
            reverse = p @ a.T / self.temperature
            if batch.excluded is not None:  # key equality is symmetric: same (N, N) block
                reverse = reverse.masked_fill(batch.excluded[:, : len(a)], float("-inf"))
            loss = (loss + F.cross_entropy(reverse, labels)) / 2
        return loss

    def forward(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Tensor | None = None,
        *,
        positive_keys: Sequence[Hashable] | None = None,
        negative_keys: Sequence[Hashable] | None = None,
    ) -> Tensor:
        batch = self.prepare(
            anchors,
            positives,
            negatives,
            positive_keys=positive_keys,
            negative_keys=negative_keys,
        )
        return self.score(batch)


class MatryoshkaLoss(nn.Module):
    """A contrastive loss applied to nested prefixes of the embedding (Matryoshka learning).

    Training the first ``d`` dimensions to be an embedding on their own, for each ``d`` in
    ``dims``, lets users truncate vectors (as jina-embeddings-v4 does) and trade accuracy for
    index size without retraining. The loss is ``sum_k w_k * base(x[:, :d_k]) / sum_k w_k``,
    each prefix L2-normalised again by the base loss. Embeddings and keys are gathered across
    processes once, not once per dim.

    Args:
        base: the InfoNCE loss applied to every prefix (its temperature, masking and gather).
        dims: prefix sizes; each must be at most the embedding size (checked at forward time,
            when the size is known). Include the full size to also train the whole vector.
        weights: one non-negative weight per dim; equal weights when None.
    """

    def __init__(
        self,
        base: InfoNCELoss,
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or min(dims) < 1:
            raise ValueError(f"dims must be a non-empty list of positive sizes, got {dims}")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} weights for {len(dims)} dims")
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        self.base = base
        self.dims = dims
        self.weights = weights

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}"

    def forward(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Tensor | None = None,
        *,
        positive_keys: Sequence[Hashable] | None = None,
        negative_keys: Sequence[Hashable] | None = None,
    ) -> Tensor:
        size = anchors.shape[-1]
        too_large = [d for d in self.dims if d > size]
        if too_large:
            raise ValueError(
                f"Matryoshka dims {too_large} exceed the embedding size {size}; use dims <= {size}"
            )
        batch = self.base.prepare(
            anchors,
            positives,
            negatives,
            positive_keys=positive_keys,
            negative_keys=negative_keys,
        )
        total = sum(w * self.base.score(batch, d) for d, w in zip(self.dims, self.weights))
        return total / sum(self.weights)
