"""GradCache: the chunked step equals the ordinary one (loss, gradients, dropout, RNG, no_sync)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn

from lcoemb.training.gradcache import grad_cache_step
from lcoemb.training.losses import InfoNCELoss

SIZES = {"anchor": 7, "positive": 7, "negative": 5}


def _model(dropout: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 8))
    return model.double().train(dropout)


def _groups() -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return {
        name: list(torch.randn(n, 6, generator=g, dtype=torch.float64)) for name, n in SIZES.items()
    }


def _embedder(model: nn.Module):
    return lambda items: model(torch.stack(items))


LOSS = InfoNCELoss(temperature=0.1, bidirectional=True)


def _loss_fn(reps: dict[str, torch.Tensor]) -> torch.Tensor:
    return LOSS(reps["anchor"], reps["positive"], reps["negative"])


def _reference(model: nn.Module, groups, chunk_size: int) -> tuple[float, list[torch.Tensor]]:
    """The ordinary step: each group embedded with gradients, chunk by chunk in GradCache's
    order (so dropout draws the same masks), then one backward of the loss."""
    model.zero_grad()
    embed = _embedder(model)
    reps = {
        name: torch.cat(
            [embed(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
        )
        for name, items in groups.items()
    }
    loss = _loss_fn(reps)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def _cached(model: nn.Module, groups, chunk_size: int, **kwargs) -> tuple[float, list]:
    model.zero_grad()
    value = grad_cache_step(_embedder(model), groups, _loss_fn, chunk_size=chunk_size, **kwargs)
    return value, [p.grad.clone() for p in model.parameters()]


def _assert_same(a: tuple[float, list], b: tuple[float, list]) -> None:
    assert a[0] == pytest.approx(b[0], abs=1e-10)
    for ga, gb in zip(a[1], b[1]):
        assert (ga - gb).abs().max().item() < 1e-10


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
@pytest.mark.parametrize("dropout", [True, False])
def test_matches_the_ordinary_step(chunk_size: int, dropout: bool) -> None:
    model, groups = _model(dropout), _groups()
    torch.manual_seed(123)
    expected = _reference(model, groups, chunk_size)
    after_reference = torch.rand(3)
    torch.manual_seed(123)
    got = _cached(model, groups, chunk_size)
    _assert_same(got, expected)
    # the replays consumed no randomness: the RNG ends where the ordinary step leaves it
    assert torch.equal(torch.rand(3), after_reference)
    if not dropout:  # without dropout, chunking is irrelevant: equal to the one-pass step
        torch.manual_seed(5)
        _assert_same(got, _reference(model, groups, 100))


def test_dropout_is_really_active() -> None:
    """Guards the test above: without replay the second pass would draw other masks."""
    model, groups = _model(True), _groups()
    x = torch.stack(groups["anchor"])
    assert not torch.allclose(model(x), model(x))


def test_no_sync_wraps_every_chunk_but_the_last() -> None:
    model, groups = _model(True), _groups()
    inside = [False]
    entered: list[int] = []
    forwards: list[tuple[bool, bool]] = []  # (grad enabled, inside no_sync)
    backwards: list[bool] = []

    @contextmanager
    def no_sync():
        entered.append(1)
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

    def embed(items):
        forwards.append((torch.is_grad_enabled(), inside[0]))
        return model(torch.stack(items))

    def backward(t: torch.Tensor) -> None:
        backwards.append(inside[0])
        t.backward()

    torch.manual_seed(9)
    value = grad_cache_step(
        embed, groups, _loss_fn, chunk_size=2, backward=backward, no_sync=no_sync
    )
    n_chunks = 4 + 4 + 3
    assert backwards == [True] * (n_chunks - 1) + [False]
    assert len(entered) == n_chunks - 1
    # first pass without gradients (outside no_sync); replay forwards inside it, but the last
    assert forwards[:n_chunks] == [(False, False)] * n_chunks
    assert forwards[n_chunks:] == [(True, True)] * (n_chunks - 1) + [(True, False)]
    torch.manual_seed(9)
    assert value == pytest.approx(_reference(model, groups, 2)[0], abs=1e-12)


def test_custom_backward_sees_the_surrogate_and_scales_like_accelerate() -> None:
    """``backward`` is pluggable (``accelerator.backward`` divides by accumulation steps)."""
    model, groups = _model(False), _groups()
    expected = _reference(model, groups, 3)
    got = _cached(model, groups, 3, backward=lambda t: (t / 4).backward())
    assert got[0] == pytest.approx(expected[0])
    for ga, gb in zip(got[1], expected[1]):
        torch.testing.assert_close(ga * 4, gb)


def test_empty_group_reaches_the_loss_as_zero_rows() -> None:
    model, groups = _model(False), _groups()
    groups["negative"] = []
    shapes = {}

    def loss_fn(reps):
        shapes.update({k: tuple(v.shape) for k, v in reps.items()})
        return LOSS(reps["anchor"], reps["positive"], reps["negative"])

    grad_cache_step(_embedder(model), groups, loss_fn, chunk_size=3)
    assert shapes == {"anchor": (7, 8), "positive": (7, 8), "negative": (0, 8)}


def test_errors() -> None:
    model, groups = _model(False), _groups()
    with pytest.raises(ValueError, match="chunk_size"):
        grad_cache_step(_embedder(model), groups, _loss_fn, chunk_size=0)
    with pytest.raises(ValueError, match="no items"):
        grad_cache_step(_embedder(model), {"anchor": []}, _loss_fn, chunk_size=2)
    with pytest.raises(ValueError, match="expected"):
        grad_cache_step(lambda items: torch.zeros(1, 8), groups, _loss_fn, chunk_size=2)


def test_a_batch_that_fits_one_chunk_is_embedded_once() -> None:
    """Nothing to save by caching: one forward with gradients, same result as the ordinary step."""
    model, groups = _model(False), _groups()
    calls: list[int] = []
    inner = _embedder(model)

    def embed(items):
        calls.append(len(items))
        return inner(items)

    model.zero_grad()
    total = sum(len(g) for g in groups.values())
    value = grad_cache_step(embed, groups, _loss_fn, chunk_size=total)
    assert calls == [total]
    _assert_same(
        (value, [p.grad.clone() for p in model.parameters()]), _reference(model, groups, 100)
    )
