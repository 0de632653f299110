"""A PAC-Bayesian certificate for the generative risk, the quantity GRSL says caps embeddings.

The paper (arXiv 2510.11693) explains the Generation-Representation Scaling Law with a
PAC-Bayesian bound: the contrastively refined model is a posterior ``Q`` around the
generatively pretrained prior ``P``, and how well ``Q`` can do is tied to the generative
loss and to how far LoRA moved it, ``KL(Q || P)``. **The paper's own statement and
constants were not available to us** (only summaries that say such a bound exists), so
this module implements the standard PAC-Bayes-kl bound instead and says so everywhere:

    With probability at least 1 - δ over an i.i.d. sample of n examples, simultaneously
    for every posterior Q,
        kl( L̂(Q) || L(Q) ) <= ( KL(Q || P) + ln(2·√n / δ) ) / n,
    where L̂ and L are the empirical and the expected loss of the Gibbs predictor (a model
    drawn from Q), the loss lies in [0, 1], and P was fixed before the sample was seen.

That is Maurer 2004 ("A note on the PAC Bayesian theorem", arXiv cs/0411099; stated there
for n >= 8), which sharpens Seeger 2002 / Langford & Seeger 2001, after McAllester 1999.
Inverting the binary kl gives the tightest upper bound on L(Q) the inequality allows;
Pinsker's inequality ``kl(q||p) >= 2(q-p)²`` relaxes it to the familiar square-root form
``L(Q) <= L̂(Q) + sqrt((KL + ln(2√n/δ)) / (2n))``. See ``docs/pac_bayes.md``.

:func:`representation_ceiling` links it to representations (our own derivation, not the
paper's): a pair's generative loss with and without its media bounds the retrieval error of
the generator's likelihood-ratio scorer, a [0, 1] loss the same bound then certifies, so a
generator that saves more nats on its captions certifies a higher attainable R@1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

Form = Literal["kl", "sqrt"]


def binary_kl(q: float, p: float) -> float:
    """KL divergence between Bernoulli(q) and Bernoulli(p), in nats (0·ln 0 = 0)."""
    if not (0.0 <= q <= 1.0 and 0.0 <= p <= 1.0):
        raise ValueError(f"binary_kl needs q and p in [0, 1], got q={q}, p={p}")

    def term(x: float, y: float) -> float:
        if x == 0.0:
            return 0.0
        return math.inf if y == 0.0 else x * math.log(x / y)

    return term(q, p) + term(1.0 - q, 1.0 - p)


def kl_inverse(q: float, budget: float, tol: float = 1e-12) -> float:
    """Largest p in [q, 1] with ``binary_kl(q, p) <= budget``, by bisection.

    ``binary_kl(q, ·)`` increases on [q, 1], so bisection finds the boundary; this is how the
    kl form of the bound is turned into a number (Seeger 2002; Dziugaite & Roy 2017).
    """
    if budget < 0.0:
        raise ValueError(f"kl_inverse needs a non-negative budget, got {budget}")
    if binary_kl(q, 1.0) <= budget:
        return 1.0
    lo, hi = q, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if binary_kl(q, mid) > budget:
            hi = mid
        else:
            lo = mid
    return lo


def pac_bayes_bound(
    empirical_loss: float,
    kl: float,
    n: int,
    delta: float = 0.05,
    loss_range: tuple[float, float] = (0.0, 1.0),
    form: Form = "kl",
) -> float:
    """Upper bound, holding with probability >= 1 - δ, on the expected generative loss.

    Args:
        empirical_loss: mean generative loss of the posterior (the LoRA-adapted model, or
            the expected loss of models drawn from its Gaussian posterior) on the n
            examples; e.g. per-example token cross-entropy, or 1 - accuracy of a
            generation metric (OCR, captioning, ASR).
        kl: ``KL(Q || P)`` in nats, e.g. from :func:`lora_gaussian_kl`.
        n: number of i.i.d. examples the empirical loss averages over (examples, not
            tokens: tokens of one document are not independent); at least 8.
        delta: the bound fails with probability at most delta over the sample.
        loss_range: ``(a, b)`` with every per-example loss in [a, b]; the bound is computed
            on ``(loss - a) / (b - a)`` and mapped back. Cross-entropy is unbounded, so it
            must be clipped (or the model's probabilities floored) to make a valid ``b``.
        form: ``"kl"`` inverts the binary kl (tightest); ``"sqrt"`` is its Pinsker
            relaxation, ``L̂ + sqrt((KL + ln(2√n/δ)) / (2n))``, capped at ``b``.

    Returns:
        The bound in the units of ``loss_range``. It falls with more samples and with a
        lower empirical loss and rises with a larger KL, which is the GRSL reading: a
        backbone that generates better, reached by a smaller move from its prior, has a
        lower certified generative risk and so a higher ceiling for its embeddings.
    """
    lo, hi = loss_range
    if not hi > lo:
        raise ValueError(f"loss_range must be (a, b) with a < b, got {loss_range}")
    if not lo <= empirical_loss <= hi:
        raise ValueError(f"empirical_loss={empirical_loss} lies outside loss_range {loss_range}")
    if kl < 0.0:
        raise ValueError(f"kl must be >= 0 (a KL divergence), got {kl}")
    if n < 8:
        raise ValueError(f"n must be >= 8 examples (Maurer states the bound for n >= 8), got {n}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    q = (empirical_loss - lo) / (hi - lo)
    budget = (kl + math.log(2.0 * math.sqrt(n) / delta)) / n
    if form == "kl":
        p = kl_inverse(q, budget)
    elif form == "sqrt":
        p = min(1.0, q + math.sqrt(budget / 2.0))
    else:
        raise ValueError(f"form must be 'kl' or 'sqrt', got {form!r}")
    return lo + p * (hi - lo)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, any dtype or device
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def gaussian_kl(mean_q: Any, std_q: Any, mean_p: Any = 0.0, std_p: Any = 1.0) -> float:
    """``KL(N(mean_q, diag std_q²) || N(mean_p, diag std_p²))`` in nats, summed over entries.

    Arguments broadcast against each other (a scalar std is shared by every entry) and may
    be numpy arrays or torch tensors. Per entry:
    ``ln(σp/σq) + (σq² + (μq - μp)²) / (2σp²) - 1/2``.
    """
    mq, sq, mp, sp = (_to_numpy(v) for v in (mean_q, std_q, mean_p, std_p))
    if (sq <= 0).any() or (sp <= 0).any():
        raise ValueError("standard deviations must be positive")
    mq, sq, mp, sp = np.broadcast_arrays(mq, sq, mp, sp)
    per_entry = np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2.0 * sp**2) - 0.5
    return float(per_entry.sum())


def lora_gaussian_kl(
    lora: Mapping[str, Any],
    posterior_std: float,
    prior_std: float,
    prior: Mapping[str, Any] | None = None,
) -> float:
    """KL of a diagonal-Gaussian posterior over LoRA weights to a Gaussian prior.

    The posterior is centred on the trained adapter, ``N(θ_LoRA, posterior_std² I)``; the
    prior is ``N(θ_0, prior_std² I)`` with ``θ_0`` the adapter *before* training (pass its
    state as ``prior``; zeros if omitted). The initial adapter is a valid prior centre
    because it is drawn (with a fixed seed) before the data are seen; since LoRA's B
    matrices start at zero, that prior sits exactly on the generatively pretrained model.

    Args:
        lora: parameter name -> tensor, e.g. the adapter's ``state_dict`` or
            ``{k: v for k, v in model.named_parameters() if "lora_" in k}``.
        posterior_std, prior_std: the Gaussian widths. Choosing them after seeing the data
            costs a union bound over the grid tried (add ``ln(grid size)`` to ``kl``).
        prior: the same names mapped to the initial values; missing names are zeros.
    """
    if not lora:
        raise ValueError("lora is empty: pass the adapter's parameters (names with 'lora_')")
    extra = sorted(set(prior or {}) - set(lora))
    if extra:
        raise ValueError(f"prior has parameters the adapter lacks: {extra[:5]}")
    return sum(
        gaussian_kl(value, posterior_std, (prior or {}).get(name, 0.0), prior_std)
        for name, value in lora.items()
    )


def retrieval_error_certificate(
    generative_loss: Any, text_loss: Any, n_candidates: int
) -> np.ndarray:
    """Per pair, an upper bound on the N-way retrieval error of the generative model's own
    scorer: ``min(1, (N - 1) · exp(ℓ_gen - ℓ_text))``, a loss in [0, 1].

    For a pair ``(x, y)`` retrieved among ``y`` and ``N - 1`` distractors drawn from the
    captions' marginal ``p(y)``, score each candidate by the pointwise mutual information the
    generator assigns, ``s(x, y') = log q(y'|x) - log p(y')``. Top-1 fails only if some
    distractor scores at least ``s(x, y)``; by the union bound and Markov's inequality, and
    because ``E_{y'~p}[q(y'|x)/p(y')] = Σ q(y'|x) <= 1``,
    ``P(error | x, y) <= (N - 1) · exp(-s(x, y))``. With ``ℓ_gen = -log q(y|x)`` (the
    generative loss of the caption given its media) and ``ℓ_text = -log p(y)`` (its loss
    without the media), ``exp(-s) = exp(ℓ_gen - ℓ_text)``: every nat the media saves the
    generator lowers the certified error e-fold. See ``docs/pac_bayes.md``.

    Args:
        generative_loss, text_loss: per-pair losses in nats, summed over the caption's
            tokens (not averaged), with and without the media. ``text_loss`` should be the
            caption's loss under the captions' true marginal; the same LM without the media
            is the practical stand-in (see the docs for what that costs).
        n_candidates: N, the candidates per query (the true caption included), >= 2.
    """
    gen, text = _to_numpy(generative_loss), _to_numpy(text_loss)
    if gen.shape != text.shape or gen.ndim != 1 or not len(gen):
        raise ValueError(
            f"generative_loss and text_loss must be equal-length 1-D sequences, got shapes "
            f"{gen.shape} and {text.shape}"
        )
    if not (np.isfinite(gen).all() and np.isfinite(text).all()):
        bad = int(np.flatnonzero(~(np.isfinite(gen) & np.isfinite(text)))[0])
        raise ValueError(f"pair {bad}: losses must be finite, got {gen[bad]} and {text[bad]}")
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2, got {n_candidates}")
    log_err = math.log(n_candidates - 1) + gen - text
    return np.exp(np.minimum(log_err, 0.0))


def representation_ceiling(
    generative_loss: Any,
    text_loss: Any,
    kl: float,
    n_candidates: int,
    delta: float = 0.05,
    form: Form = "kl",
) -> dict[str, float]:
    """A PAC-Bayes certificate linking generative loss to attainable retrieval (R@1).

    The per-pair losses of :func:`retrieval_error_certificate` lie in [0, 1], so Maurer's
    PAC-Bayes-kl bound (:func:`pac_bayes_bound`) applies to them: with probability at least
    ``1 - δ`` over ``n`` i.i.d. held-out pairs, the expected certified error of the posterior
    ``Q`` (the LoRA-adapted model; ``kl`` = ``KL(Q‖P)``) is at most ``certified_error``. So
    its generative scorer retrieves at R@1 >= ``certified_r_at_1`` among N candidates on the
    whole distribution: the **representation ceiling is at least that high**, for any
    scorer at least as expressive as the generator's likelihood ratio. Lower generative loss
    raises it; a larger move from the prior lowers it. This link is derived here, not taken
    from the paper (whose statement we could not read); ``docs/pac_bayes.md`` has the
    derivation and its assumptions.

    Returns:
        ``n``; ``information_gain`` (mean ``ℓ_text - ℓ_gen``, nats per pair);
        ``empirical_error`` (mean certified error on the sample); ``certified_error`` and
        ``certified_r_at_1 = 1 - certified_error``.
    """
    errors = retrieval_error_certificate(generative_loss, text_loss, n_candidates)
    gain = float(np.mean(_to_numpy(text_loss) - _to_numpy(generative_loss)))
    risk = pac_bayes_bound(float(errors.mean()), kl, len(errors), delta, (0.0, 1.0), form)
    return {
        "n": len(errors),
        "information_gain": gain,
        "empirical_error": float(errors.mean()),
        "certified_error": risk,
        "certified_r_at_1": 1.0 - risk,
    }
