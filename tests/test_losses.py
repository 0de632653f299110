"""InfoNCE and Matryoshka against hand-written references, and the 2-process global batch."""

from __future__ import annotations

import math
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lcoemb.training.gradcache import grad_cache_step
from lcoemb.training.losses import InfoNCELoss, MatryoshkaLoss, gather_with_grad


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def _ce(logits: list[float], label: int) -> float:
    """-log softmax(logits)[label], written out."""
    top = max(logits)
    log_z = top + math.log(sum(math.exp(x - top) for x in logits))
    return log_z - logits[label]


def _reference(a, p, n=None, t=0.03, bidirectional=False, pos_keys=None, neg_keys=None) -> float:
    """Explicit loops: anchor i against [positives; negatives], minus masked duplicates."""
    cands = list(p) + ([] if n is None else list(n))
    cand_keys = None
    if pos_keys is not None:
        cand_keys = list(pos_keys) + (
            list(neg_keys) if neg_keys else [None] * (len(cands) - len(p))
        )
    forward, reverse = [], []
    for i in range(len(a)):
        keep = [
            j
            for j in range(len(cands))
            if j == i or cand_keys is None or cand_keys[j] != pos_keys[i]
        ]
        forward.append(_ce([_cos(a[i], cands[j]) / t for j in keep], keep.index(i)))
        keep = [
            j for j in range(len(a)) if j == i or pos_keys is None or pos_keys[j] != pos_keys[i]
        ]
        reverse.append(_ce([_cos(p[i], a[j]) / t for j in keep], keep.index(i)))
    loss = sum(forward) / len(a)
    return (loss + sum(reverse) / len(a)) / 2 if bidirectional else loss


def _data(n=5, m=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, p, neg = (torch.randn(k, d, generator=g, dtype=torch.float64) for k in (n, n, m))
    return a, p + 0.5 * a, neg  # positives correlated with their anchors


@pytest.mark.parametrize("temperature", [0.03, 0.5])
@pytest.mark.parametrize("with_negatives", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_infonce_matches_reference(temperature, with_negatives, bidirectional) -> None:
    a, p, n = _data()
    n = n if with_negatives else None
    loss = InfoNCELoss(temperature=temperature, bidirectional=bidirectional)(a, p, n)
    expected = _reference(a, p, n, temperature, bidirectional)
    assert loss.item() == pytest.approx(expected, abs=1e-10)


def test_temperature_scales_the_cosine_logits_and_norms_do_not_matter() -> None:
    a, p, n = _data()
    base = InfoNCELoss(temperature=0.1)(a, p, n)
    assert InfoNCELoss(temperature=0.1)(3 * a, 0.2 * p, 7 * n).item() == pytest.approx(base.item())
    cos = (
        torch.nn.functional.normalize(a, dim=-1)
        @ torch.nn.functional.normalize(torch.cat([p, n]), dim=-1).T
    )
    manual = torch.nn.functional.cross_entropy(cos / 0.1, torch.arange(5))
    assert base.item() == pytest.approx(manual.item(), abs=1e-12)
    assert InfoNCELoss(temperature=0.5)(a, p, n).item() != pytest.approx(base.item())
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)


def test_duplicate_masking_removes_exactly_the_documented_candidates() -> None:
    a, p, n = _data()
    p[3] = p[1]  # anchors 1 and 3 share a positive (same text, same embedding)
    pos_keys = ["x", "y", "z", "y", "w"]
    neg_keys = ["y", "q", "x"]  # negative 0 duplicates positive "y", negative 2 positive "x"
    plain = InfoNCELoss(temperature=0.1)(a, p, n, positive_keys=pos_keys)
    assert plain.item() == pytest.approx(_reference(a, p, n, 0.1), abs=1e-10)

    masked = InfoNCELoss(temperature=0.1, mask_duplicates=True)
    only_pos = masked(a, p, n, positive_keys=pos_keys)
    assert only_pos.item() == pytest.approx(_reference(a, p, n, 0.1, pos_keys=pos_keys), abs=1e-10)
    assert only_pos.item() < plain.item()  # a shared positive no longer counts as a negative
    both = masked(a, p, n, positive_keys=pos_keys, negative_keys=neg_keys)
    expected = _reference(a, p, n, 0.1, pos_keys=pos_keys, neg_keys=neg_keys)
    assert both.item() == pytest.approx(expected, abs=1e-10)
    assert both.item() < only_pos.item()

    bidir = InfoNCELoss(temperature=0.1, mask_duplicates=True, bidirectional=True)
    got = bidir(a, p, n, positive_keys=pos_keys, negative_keys=neg_keys)
    expected = _reference(a, p, n, 0.1, True, pos_keys=pos_keys, neg_keys=neg_keys)
    assert got.item() == pytest.approx(expected, abs=1e-10)

    # unique keys mask nothing
    unique = masked(a, p, n, positive_keys=list("abcde"))
    assert unique.item() == pytest.approx(plain.item(), abs=1e-12)
    with pytest.raises(ValueError, match="positive_keys"):
        masked(a, p, n)
    with pytest.raises(ValueError, match="negative_keys"):
        masked(a, p, n, positive_keys=pos_keys, negative_keys=["y"])


def test_shape_errors() -> None:
    a, p, n = _data()
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="one positive per anchor"):
        loss(a, p[:4], n)
    with pytest.raises(ValueError, match="negatives must be"):
        loss(a, p, n[:, :4])


def test_matryoshka_is_the_weighted_mean_of_prefix_losses() -> None:
    a, p, n = _data(d=16)
    base = InfoNCELoss(temperature=0.05, bidirectional=True)
    got = MatryoshkaLoss(base, [4, 8, 16], weights=[1.0, 2.0, 0.5])(a, p, n)
    parts = [base(a[:, :d], p[:, :d], n[:, :d]) for d in (4, 8, 16)]
    expected = (parts[0] + 2 * parts[1] + 0.5 * parts[2]) / 3.5
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)
    equal = MatryoshkaLoss(base, [4, 16])(a, p, n)
    assert equal.item() == pytest.approx(((parts[0] + parts[2]) / 2).item(), abs=1e-12)

    with pytest.raises(ValueError, match=r"dims \[32\] exceed the embedding size 16"):
        MatryoshkaLoss(base, [8, 32])(a, p, n)
    with pytest.raises(ValueError, match="weights for"):
        MatryoshkaLoss(base, [4, 8], weights=[1.0])
    with pytest.raises(ValueError, match="positive sizes"):
        MatryoshkaLoss(base, [])


def test_perfect_alignment_gives_zero_loss() -> None:
    x = torch.eye(6, dtype=torch.float64)
    loss = InfoNCELoss(temperature=0.01, bidirectional=True)(x, 2 * x, -x)
    assert loss.item() < 1e-30


def test_gradients_are_finite_with_masking_and_bf16() -> None:
    a, p, n = (t.to(torch.bfloat16).requires_grad_() for t in _data())
    loss = InfoNCELoss(mask_duplicates=True, bidirectional=True)(
        a, p, n, positive_keys=["x", "y", "x", "y", "z"], negative_keys=["x", "a", "b"]
    )
    assert loss.dtype == torch.float32  # scored in float32 whatever the embedding dtype
    loss.backward()
    for t in (a, p, n):
        assert t.grad.dtype == torch.bfloat16
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gather_is_the_identity_without_distributed() -> None:
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x


# ---------------------------------------------------------------------- two processes

WORLD = 2
# 8 triplets split 4/4; 7 hard negatives split 4/3 (uneven pools are padded for the gather).
# Anchors 1 and 6 (on different ranks) share a positive key, negative 5 duplicates positive 2.
POS_KEYS = ["p0", "dup", "p2", "p3", "p4", "p5", "dup", "p7"]
NEG_KEYS = ["n0", "n1", "n2", "n3", "n4", "p2", "n6"]
SPLIT_NEG = [(0, 4), (4, 7)]


def _losses() -> dict[str, nn.Module]:
    masked = InfoNCELoss(temperature=0.05, bidirectional=True, mask_duplicates=True)
    return {
        "plain": InfoNCELoss(temperature=0.05),
        "masked": masked,
        "matryoshka": MatryoshkaLoss(masked, [4, 8], weights=[1.0, 3.0]),
    }


def _toy(seed: int = 0) -> nn.Module:
    """A frozen base plus a small trainable low-rank branch, like a LoRA layer."""

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = nn.Linear(6, 8).requires_grad_(False)
            self.down = nn.Linear(6, 2, bias=False)
            self.up = nn.Linear(2, 8, bias=False)
            self.head = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.base(x) + self.up(self.down(x))))

    torch.manual_seed(seed)
    return Toy().double()


def _triplets() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(8, 6, generator=g, dtype=torch.float64)
    return (
        a,
        a + 0.3 * torch.randn(8, 6, generator=g, dtype=torch.float64),
        torch.randn(7, 6, generator=g, dtype=torch.float64),
    )


def _compute(name, loss_fn, model, a, p, n, pos_keys, neg_keys, chunk_size=None, no_sync=None):
    """Loss value and raw (un-averaged) parameter gradients of one process's step."""
    model.zero_grad()
    kwargs = {} if name == "plain" else {"positive_keys": pos_keys, "negative_keys": neg_keys}
    if chunk_size is None:
        loss = loss_fn(model(a), model(p), model(n), **kwargs)
        loss.backward()
        value = loss.item()
    else:
        value = grad_cache_step(
            lambda items: model(torch.stack(items)),
            {"anchor": list(a), "positive": list(p), "negative": list(n)},
            lambda r: loss_fn(r["anchor"], r["positive"], r["negative"], **kwargs),
            chunk_size=chunk_size,
            no_sync=no_sync,
        )
    return value, [q.grad.clone() for q in model.parameters() if q.requires_grad]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        a, p, n = _triplets()
        local = slice(4 * rank, 4 * rank + 4)
        neg = slice(*SPLIT_NEG[rank])
        args = (a[local], p[local], n[neg], POS_KEYS[local], NEG_KEYS[neg])
        model = _toy()
        results = {}
        for name, loss_fn in _losses().items():
            for chunk in (None, 2):
                value, grads = _compute(name, loss_fn, model, *args, chunk_size=chunk)
                for g in grads:  # what DDP does: average over ranks
                    dist.all_reduce(g)
                    g /= WORLD
                results[f"{name}/{chunk}"] = (value, grads)
        # and through DDP itself, which all-reduces once, after GradCache's last chunk
        ddp = nn.parallel.DistributedDataParallel(_toy())
        masked = _losses()["masked"]
        results["masked/ddp"] = _compute("masked", masked, ddp, *args, 2, no_sync=ddp.no_sync)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    a, p, n = _triplets()
    expected = {}
    for name, loss_fn in _losses().items():  # no process group here: gather is the identity
        expected[name] = _compute(name, loss_fn, _toy(), a, p, n, POS_KEYS, NEG_KEYS)
    for rank in range(WORLD):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(results) == 7
        for key, (value, grads) in results.items():
            want_value, want_grads = expected[key.split("/")[0]]
            assert value == pytest.approx(want_value, abs=1e-10), key
            for got, want in zip(grads, want_grads, strict=True):
                assert (got - want).abs().max().item() < 1e-10, key
