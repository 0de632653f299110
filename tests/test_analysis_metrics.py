"""Anisotropy and kernel-alignment metrics on arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcoemb.analysis.metrics import anisotropy, cka, cknna, layerwise, mutual_knn
from lcoemb.analysis.plots import layer_curves


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@pytest.fixture
def paired() -> tuple[np.ndarray, np.ndarray]:
    """Two views of 200 items sharing a 16-dim latent, in different dimensions."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 16))
    a = z @ rng.normal(size=(16, 64)) + 0.5 * rng.normal(size=(200, 64))
    b = z @ rng.normal(size=(16, 48)) + 1.0 * rng.normal(size=(200, 48))
    return a, b


# anisotropy


def test_anisotropy_identical_directions_is_one() -> None:
    x = np.outer([1.0, 2.0, 0.5, 7.0], [0.3, -1.0, 2.0])  # same direction, different norms
    assert anisotropy(x) == pytest.approx(1.0, abs=1e-12)


def test_anisotropy_orthonormal_is_zero() -> None:
    assert anisotropy(np.eye(6, 10)) == pytest.approx(0.0, abs=1e-12)


def test_anisotropy_is_the_mean_of_the_lower_triangle() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)) + 2.0  # a shifted cloud: clearly anisotropic
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = (unit @ unit.T)[np.tril_indices(50, k=-1)].mean()
    assert anisotropy(x) == pytest.approx(expected, rel=1e-10)
    assert anisotropy(x) > 0.5
    two = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # 60 degrees apart
    assert anisotropy(two) == pytest.approx(0.5)


def test_anisotropy_accepts_bf16_tensors() -> None:
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0)) + 3.0
    assert anisotropy(x.to(torch.bfloat16)) == pytest.approx(anisotropy(x.numpy()), abs=1e-2)


@pytest.mark.parametrize("bad", [np.ones((1, 4)), np.ones(4), np.array([[np.nan, 1.0]] * 3)])
def test_anisotropy_rejects_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"shape \("):
        anisotropy(bad)


# mutual k-NN


def test_mutual_knn_identical_sets_is_one(paired) -> None:
    a, _ = paired
    assert mutual_knn(a, a, k=10) == pytest.approx(1.0)


def test_mutual_knn_is_invariant_to_rotation_and_row_scaling(paired) -> None:
    a, b = paired
    scales = np.random.default_rng(2).uniform(0.1, 10.0, size=(a.shape[0], 1))
    transformed = (a @ _rotation(a.shape[1], 3)) * scales
    assert mutual_knn(transformed, a) == pytest.approx(1.0)
    assert mutual_knn(transformed, b) == pytest.approx(mutual_knn(a, b))


def test_mutual_knn_random_pairing_is_chance() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(500, 32)), rng.normal(size=(500, 24))
    assert mutual_knn(a, b, k=10) == pytest.approx(10 / 499, abs=0.01)


def test_mutual_knn_shared_structure_beats_chance(paired) -> None:
    a, b = paired
    assert mutual_knn(a, b, k=10) > 0.2


def test_mutual_knn_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(6, 3\)"):
        mutual_knn(np.ones((5, 3)), np.ones((6, 3)))
    with pytest.raises(ValueError, match=r"k=10.*\(10, 3\)"):
        mutual_knn(np.ones((10, 3)), np.ones((10, 4)), k=10)


# CKA


def test_cka_identical_is_one(paired) -> None:
    a, _ = paired
    assert cka(a, a) == pytest.approx(1.0)
    assert cka(a, a, unbiased=True) == pytest.approx(1.0)


def test_cka_invariant_to_rotation_and_isotropic_scaling(paired) -> None:
    a, b = paired
    q = _rotation(a.shape[1], 5)
    assert cka(a, 3.0 * a @ q) == pytest.approx(1.0)
    assert cka(0.01 * a @ q, 7.0 * b) == pytest.approx(cka(a, b))
    assert cka(a @ q, b, unbiased=True) == pytest.approx(cka(a, b, unbiased=True))


def test_cka_matches_the_centring_matrix_formula(paired) -> None:
    a, b = paired
    n = a.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = a @ a.T, b @ b.T  # noqa: E741

    def hsic(x, y):
        return np.trace(x @ h @ y @ h)

    expected = hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
    assert cka(a, b) == pytest.approx(expected, rel=1e-9)
    assert 0.3 < cka(a, b) < 1.0


def test_cka_unbiased_removes_the_small_sample_bias() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(100, 200)), rng.normal(size=(100, 200))
    assert cka(a, b) > 0.3  # biased CKA is far from 0 for independent, wide features
    assert abs(cka(a, b, unbiased=True)) < 0.05


def test_cka_without_variance_is_nan() -> None:
    constant = np.tile([1.0, 2.0, 3.0], (10, 1))
    assert np.isnan(cka(constant, np.random.default_rng(0).normal(size=(10, 3))))


# CKNNA


def test_cknna_identical_is_one(paired) -> None:
    a, _ = paired
    assert cknna(a, a, k=10) == pytest.approx(1.0)


def test_cknna_random_is_near_zero_and_shared_structure_is_not(paired) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(300, 64)), rng.normal(size=(300, 64))
    assert abs(cknna(x, y, k=10)) < 0.1
    a, b = paired
    assert cknna(a, b, k=10) > 0.3


def test_cknna_requires_two_neighbours() -> None:
    with pytest.raises(ValueError, match="k >= 2"):
        cknna(np.eye(8), np.eye(8), k=1)


# layerwise and the plot it feeds


def test_layerwise_pairs_layers_and_checks_depth(paired) -> None:
    a, b = paired
    assert layerwise(mutual_knn, [a, a], [a, b], k=5) == [
        pytest.approx(1.0),
        pytest.approx(mutual_knn(a, b, k=5)),
    ]
    assert layerwise(anisotropy, np.stack([np.eye(4), np.ones((4, 4))])) == [
        pytest.approx(0.0),
        pytest.approx(1.0),
    ]
    with pytest.raises(ValueError, match=r"2 layers.*1"):
        layerwise(cka, [a, a], [b])


def test_layer_curves_writes_a_png(tmp_path) -> None:
    path = layer_curves(
        {"image": [0.9, 0.8, float("nan")], "text": [0.95, 0.7, 0.6]},
        tmp_path / "aniso.png",
        title="Anisotropy per layer",
        ylabel="mean cosine",
        compare={"image": [0.5, 0.3, 0.2]},
        labels=("base", "trained"),
    )
    assert path == tmp_path / "aniso.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
