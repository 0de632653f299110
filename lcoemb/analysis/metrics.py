"""Geometry of an embedding space: anisotropy and kernel alignment between paired sets.

The paper's first two claims are about geometry, not benchmark scores: a generatively
pretrained MLLM embeds everything into a narrow cone (high *anisotropy*), and text-only
contrastive training both widens that cone for every modality and makes the neighbourhood
structure of paired items agree across modalities (*kernel alignment*). These functions
measure both, on plain arrays, so that the same code scores any layer of any backbone.

Kernel alignment follows Huh et al. 2024, "The Platonic Representation Hypothesis"
(reference code: ``github.com/minyoungg/platonic-rep``, ``metrics.py``; the LCO-Emb
authors ship a copy of its metrics as ``Analysis/kernel_alignment.py``). Where our numbers
differ from that code, the docstring says so and why.

All functions take ``(n, d)`` arrays (numpy, or torch tensors of any dtype, which are
converted) and compute in float64, so bf16 embeddings from a checkpoint score the same
on every machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_EPS = 1e-12  # as torch.nn.functional.normalize: a zero row stays zero instead of NaN


def _as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite float64 ``(n, d)`` array; torch tensors (bf16 too) are converted."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch for numpy users
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite values (shape {arr.shape})")
    return arr


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as matrices, checked to hold the same number of paired rows."""
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must hold the same items in the same order: a has shape {a.shape}, "
            f"b has shape {b.shape} (row counts differ)"
        )
    return a, b


def _check_k(k: int, n: int, shapes: str) -> None:
    if k < 1 or k >= n:
        raise ValueError(f"k must satisfy 1 <= k < n (need n > k rows); got k={k} for {shapes}")


def anisotropy(x: Any) -> float:
    """Mean cosine similarity between distinct rows of ``x``.

    This is the mean of the strictly-lower triangle of the pairwise cosine matrix, the
    paper's definition: 0 for an isotropic set (orthogonal or random high-dimensional
    vectors), 1 when every embedding points the same way. A generatively trained MLLM
    scores high here, which is why its raw last-token states retrieve poorly.

    It is computed in O(n·d) from the identity
    ``sum_{i != j} cos_ij = ||sum_i x̂_i||² - sum_i ||x̂_i||²`` rather than from the n×n
    matrix. The LCO-Emb script divides the triangle's sum by its count of *non-zero*
    entries instead of by n(n-1)/2; the two agree unless some cosines are exactly 0
    (for orthonormal vectors that script returns NaN, this returns 0).
    """
    x = _as_matrix(x, "x")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"anisotropy needs at least 2 rows, got shape {x.shape}")
    unit = _normalize(x)
    total = unit.sum(axis=0)
    off_diagonal = float(total @ total) - float(np.einsum("ij,ij->", unit, unit))
    return off_diagonal / (n * (n - 1))


def _knn_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean (n, n) mask of each row's k most similar *other* rows by inner product."""
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    idx = np.argpartition(sim, -k, axis=1)[:, -k:]
    mask = np.zeros(sim.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def mutual_knn(a: Any, b: Any, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment of paired rows (Huh et al. 2024).

    Row ``i`` of ``a`` and row ``i`` of ``b`` are the same item seen two ways (an image and
    its caption, two layers, two models); the dimensions may differ. For every item the k
    nearest other items by cosine are found in each space, and the score is the mean over
    items of ``|N_a(i) ∩ N_b(i)| / k``. It is 1 when both spaces have the same local
    neighbourhoods and about ``k / (n - 1)`` when the pairing carries no information, so
    it asks whether two modalities agree on *which items are alike*, which is what the
    paper means by implicit cross-modal alignment.

    Rows are L2-normalised first, as the reference pipeline does before calling its
    ``mutual_knn``; the item itself is never its own neighbour.
    """
    a, b = _paired(a, b)
    _check_k(k, a.shape[0], f"a {a.shape}, b {b.shape}")
    overlap = _knn_mask(_normalize(a), k) & _knn_mask(_normalize(b), k)
    return float(overlap.sum(axis=1).mean() / k)


def _hsic_biased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 - HSIC's usual names
    """tr(KHLH) with H the centring matrix (Gretton et al. 2005), the original CKA's HSIC."""
    kc = k - k.mean(axis=0, keepdims=True)
    kc = kc - kc.mean(axis=1, keepdims=True)
    lc = l - l.mean(axis=0, keepdims=True)
    lc = lc - lc.mean(axis=1, keepdims=True)
    return float(np.einsum("ij,ji->", kc, lc))


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Unbiased HSIC estimator of Song et al. 2012 (JMLR 13, eq. 5), as the reference uses.

    Kept literally general (``sum(K̃ ∘ L̃ᵀ)``, i.e. ``tr(K̃ L̃)``) because CKNNA feeds it
    the non-symmetric kernels left after masking to mutual neighbours.
    """
    m = k.shape[0]
    kt = k.copy()
    lt = l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    value = (
        float(np.sum(kt * lt.T))
        + float(kt.sum()) * float(lt.sum()) / ((m - 1) * (m - 2))
        - 2.0 * float((kt @ lt).sum()) / (m - 2)
    )
    return value / (m * (m - 3))


def _ratio(kl: float, kk: float, ll: float) -> float:
    """``kl / sqrt(kk·ll)``, NaN when a kernel has no variance (the score is undefined).

    That happens in practice: at the embedding layer every item's last token is the same
    prompt token, so a per-layer sweep meets identical rows there. NaN leaves a gap in a
    plotted curve instead of aborting the sweep. The reference adds 1e-6 to the
    denominator instead; leaving it out keeps the score exactly scale-invariant.
    """
    denom = kk * ll
    if not denom > 0.0:
        return float("nan")
    return kl / float(np.sqrt(denom))


def cka(a: Any, b: Any, unbiased: bool = False) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between paired rows.

    ``HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))`` with linear kernels ``K = a aᵀ`` and
    ``L = b bᵀ``. Unlike mutual k-NN it looks at the whole kernel, so it complements the
    local measure with a global one. It is invariant to orthogonal transforms and to
    isotropic scaling of either set, and 1 for identical sets.

    By default HSIC is the *biased* estimator ``tr(KHLH)``, as in the reference ``cka``
    (its default ``unbiased=False``); ``unbiased=True`` uses Song et al.'s estimator, the
    reference's ``unbiased_cka``, which removes the positive bias CKA has when n is small
    relative to d (it needs n >= 4). The features are used as given: the reference
    pipeline L2-normalises rows before calling, and so should callers that want the same
    numbers. Returns NaN when either set has no variance.
    """
    a, b = _paired(a, b)
    n = a.shape[0]
    if n < (4 if unbiased else 2):
        raise ValueError(
            f"cka needs at least {4 if unbiased else 2} rows; got a {a.shape}, b {b.shape}"
        )
    hsic = _hsic_unbiased if unbiased else _hsic_biased
    k, l = a @ a.T, b @ b.T  # noqa: E741
    return _ratio(hsic(k, l), hsic(k, k), hsic(l, l))


def cknna(a: Any, b: Any, k: int = 10) -> float:
    """Centred kernel nearest-neighbour alignment, CKNNA (Huh et al. 2024).

    CKA restricted to pairs that are mutual nearest neighbours: the linear kernels
    ``K = a aᵀ`` and ``L = b bᵀ`` are masked to the entries ``(i, j)`` where ``j`` is among
    the k nearest other rows of ``i`` in *both* spaces, and the score is
    ``HSIC(M∘K, M∘L) / sqrt(HSIC(M_K∘K, M_K∘K) · HSIC(M_L∘L, M_L∘L))`` with the unbiased
    HSIC of Song et al. 2012 (the self-terms use each space's own k-NN mask). It sits
    between CKA (k = n-1, global) and mutual k-NN (only the overlap count): it counts the
    shared neighbours but weights them by how similar they are. 1 for identical sets, near
    0 for unrelated ones.

    This follows ``AlignmentMetrics.cknna`` in ``minyoungg/platonic-rep`` ``metrics.py``
    with its defaults (``unbiased=True``, ``distance_agnostic=False``): self is excluded
    from the neighbours, neighbours come from the raw inner products of the given features
    (callers L2-normalise first, as the reference pipeline does), and the masks are
    row-wise, hence not symmetric. Differences: no 1e-6 in the denominator (NaN when a
    self-term is not positive), and ties between equal similarities may pick different
    neighbours than ``torch.topk``.
    """
    a, b = _paired(a, b)
    n = a.shape[0]
    shapes = f"a {a.shape}, b {b.shape}"
    if k < 2:
        raise ValueError(f"cknna needs k >= 2 (as the reference); got k={k} for {shapes}")
    _check_k(k, n, shapes)
    if n < 4:
        raise ValueError(f"cknna needs at least 4 rows for the unbiased HSIC; got {shapes}")
    kern_a, kern_b = a @ a.T, b @ b.T
    mask_a, mask_b = _knn_mask(a, k), _knn_mask(b, k)
    both = mask_a & mask_b
    kl = _hsic_unbiased(both * kern_a, both * kern_b)
    kk = _hsic_unbiased(mask_a * kern_a, mask_a * kern_a)
    ll = _hsic_unbiased(mask_b * kern_b, mask_b * kern_b)
    return _ratio(kl, kk, ll)


def layerwise(
    fn: Callable[..., float],
    per_layer_a: Sequence[Any],
    per_layer_b: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float]:
    """``fn`` applied layer by layer, for the paper's per-layer curves.

    ``per_layer_a[l]`` is the ``(n, d)`` set of last-token states at layer ``l`` (a list,
    or an ``(L, n, d)`` array). With ``per_layer_b`` the metric is paired layer to layer
    (alignment of image and caption states at the same depth); without it ``fn`` takes
    one set (anisotropy).
    """
    if per_layer_b is None:
        return [fn(x, **kwargs) for x in per_layer_a]
    if len(per_layer_a) != len(per_layer_b):
        raise ValueError(
            f"per_layer_a has {len(per_layer_a)} layers but per_layer_b has {len(per_layer_b)}"
        )
    return [fn(x, y, **kwargs) for x, y in zip(per_layer_a, per_layer_b)]
