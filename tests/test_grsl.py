"""GRSL: reading scores, fitting the law and its bootstrap intervals, writing its report, and
the PAC-Bayes bound."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from lcoemb.cli import main
from lcoemb.grsl import (
    binary_kl,
    fit_file,
    fit_law,
    gaussian_kl,
    lora_gaussian_kl,
    pac_bayes_bound,
    read_scores,
    representation_ceiling,
    retrieval_error_certificate,
)

# fitting


def test_fit_recovers_a_planted_line() -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(10.0, 90.0, 40)
    y = 5.0 + 0.7 * x + rng.normal(scale=1.0, size=x.shape)
    fit = fit_law(x, y)
    assert fit["slope"] == pytest.approx(0.7, abs=0.03)
    assert fit["intercept"] == pytest.approx(5.0, abs=1.5)
    assert fit["r2"] > 0.98
    assert fit["pearson"] == pytest.approx(math.sqrt(fit["r2"]))
    assert fit["spearman"] > 0.95
    assert fit["n"] == 40


def test_fit_exact_line_and_negative_trend() -> None:
    fit = fit_law([1.0, 2.0, 3.0], [7.0, 5.0, 3.0])
    assert fit["slope"] == pytest.approx(-2.0)
    assert fit["intercept"] == pytest.approx(9.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["spearman"] == pytest.approx(-1.0)


def test_log_linear_fit_recovers_a_planted_curve() -> None:
    x = np.array([1.0, 2.0, 5.0, 10.0, 40.0, 100.0])
    fit = fit_law(x, 2.0 + 3.0 * np.log(x))
    assert fit["log_linear"]["slope"] == pytest.approx(3.0)
    assert fit["log_linear"]["intercept"] == pytest.approx(2.0)
    assert fit["log_linear"]["r2"] == pytest.approx(1.0)
    assert fit["r2"] < 0.95  # the straight line fits the same points worse
    assert "log_linear_skipped" not in fit


def test_log_linear_needs_positive_generation_scores() -> None:
    fit = fit_law([0.0, 1.0, 2.0], [1.0, 2.0, 3.5])
    assert fit["log_linear"] is None
    assert "> 0" in fit["log_linear_skipped"]


def test_constant_representation_has_no_correlation() -> None:
    fit = fit_law([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])
    assert fit["slope"] == pytest.approx(0.0, abs=1e-12)
    assert fit["r2"] is None and fit["pearson"] is None and fit["spearman"] is None


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0], [2.0], "at least 2"),
        ([1.0, 2.0], [2.0], "equal length"),
        ([3.0, 3.0], [1.0, 2.0], "two values"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
    ],
)
def test_fit_rejects_unusable_points(x, y, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_law(x, y)


# reading scores


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scores.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_scores_with_and_without_group(tmp_path) -> None:
    rows = read_scores(
        _write(
            tmp_path,
            "model,generation,representation,group\n"
            "llava-next-8b,63.9,66.5,LLaVA\n"
            "\n"
            "qwen2.5-vl-7b, 81.1 ,75.0,\n",
        )
    )
    assert rows == [
        {
            "model": "llava-next-8b",
            "generation": 63.9,
            "representation": 66.5,
            "group": "LLaVA",
            "budget": None,
        },
        {
            "model": "qwen2.5-vl-7b",
            "generation": 81.1,
            "representation": 75.0,
            "group": None,
            "budget": None,
        },
    ]
    no_group = read_scores(_write(tmp_path, "representation,model,generation\n1,a,2\n3,b,4\n"))
    assert [r["group"] for r in no_group] == [None, None]
    assert no_group[1] == {
        "model": "b",
        "generation": 4.0,
        "representation": 3.0,
        "group": None,
        "budget": None,
    }


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("model,generation\na,1\nb,2\n", ":1:", "missing column.*representation"),
        ("model,generation,representation\na,1,2\nb,high,3\n", ":3:", "generation.*'high'"),
        ("model,generation,representation\na,1,2\nb,2,\n", ":3:", "no representation"),
        ("model,generation,representation\na,1,2\n,2,3\n", ":3:", "empty model"),
        ("model,generation,representation\na,1,2,9\nb,2,3\n", ":2:", "more values"),
        ("model,generation,representation\na,1,2\nb,inf,3\n", ":3:", "not finite"),
        ("model,generation,representation\na,1,2\n", ":", "at least 2 rows"),
        ("model,generation,representation,budget\na,1,2,100\nb,2,3,\n", ":3:", "no budget"),
    ],
)
def test_read_scores_errors_name_file_and_line(tmp_path, text, where, problem) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=problem) as info:
        read_scores(path)
    assert str(info.value).startswith(f"{path}{where}")


def test_fit_file_writes_json_and_png(tmp_path) -> None:
    scores = _write(
        tmp_path,
        "model,generation,representation,group\n"
        "llava-next-8b,63.9,66.5,LLaVA\n"
        "qwen2.5-vl-3b,74.0,70.1,Qwen\n"
        "qwen2.5-vl-7b,81.1,75.0,Qwen\n",
    )
    result = fit_file(scores, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "grsl.json").read_text())
    assert written == result
    assert written["n"] == 3 and written["slope"] > 0
    assert [p["model"] for p in written["points"]] == [
        "llava-next-8b",
        "qwen2.5-vl-3b",
        "qwen2.5-vl-7b",
    ]
    assert written["log_linear"]["slope"] > 0
    assert written["plot"] == "grsl.png"
    assert (tmp_path / "out" / "grsl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# bootstrap intervals


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bivariate normal points, y = 0.5·x + N(0, 1): slope 0.5, Pearson 0.5/√1.25."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, 0.5 * x + rng.normal(size=n)


TRUE_PEARSON = 0.5 / math.sqrt(1.25)
TRUE_SPEARMAN = 6 / math.pi * math.asin(TRUE_PEARSON / 2)  # Pearson's 1907 bivariate-normal link


def _width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def test_intervals_contain_the_planted_values_and_shrink_with_more_points() -> None:
    small, large = fit_law(*_planted(30, seed=1)), fit_law(*_planted(300, seed=1))
    for fit in (small, large):
        assert fit["bootstrap"]["scheme"] == "points"
        assert fit["bootstrap"]["used"] == fit["bootstrap"]["resamples"] == 2000
        for key, truth in (("spearman", TRUE_SPEARMAN), ("pearson", TRUE_PEARSON), ("slope", 0.5)):
            lo, hi = fit[f"{key}_ci"]
            assert lo <= truth <= hi, key
            assert lo <= fit[key] <= hi, key
    for key in ("spearman_ci", "pearson_ci", "slope_ci"):
        assert _width(large[key]) < 0.6 * _width(small[key]), key


def test_intervals_cover_the_planted_rho_about_as_often_as_they_claim() -> None:
    covered = 0
    for seed in range(40):
        lo, hi = fit_law(*_planted(40, seed), resamples=400, seed=seed)["spearman_ci"]
        covered += lo <= TRUE_SPEARMAN <= hi
    assert covered >= 34  # 95 % of 40 is 38; percentile intervals run a little short at n=40


def test_intervals_are_deterministic_given_the_seed() -> None:
    x, y = _planted(25, seed=3)
    first, again = fit_law(x, y, seed=7), fit_law(x, y, seed=7)
    other = fit_law(x, y, seed=8)
    assert first == again
    assert first["spearman_ci"] != other["spearman_ci"]
    assert first["bootstrap"]["seed"] == 7


def test_resamples_and_confidence_set_the_interval() -> None:
    x, y = _planted(40, seed=4)
    narrow = fit_law(x, y, resamples=500, confidence=0.5)
    wide = fit_law(x, y, resamples=500, confidence=0.99)
    assert narrow["bootstrap"]["resamples"] == 500
    assert _width(narrow["slope_ci"]) < _width(wide["slope_ci"])


def _sweep(seeds: int, spread: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Five budgets' seeds, scattered by ``spread`` around a rising trend."""
    rng = np.random.default_rng(5)
    means = {"50": 0.1, "100": 0.3, "300": 0.4, "1000": 0.55, "3000": 0.6}
    budgets = [b for b in means for _ in range(seeds)]
    x = np.array([means[b] for b in budgets]) + spread * rng.normal(size=len(budgets))
    return x, 0.25 + 0.6 * x + spread * rng.normal(size=len(budgets)), budgets


def test_seeds_are_resampled_within_their_budget() -> None:
    # seeds that agree exactly leave nothing to resample within a budget: the interval
    # collapses to the estimate, where resampling points across budgets would not
    x, y, budgets = _sweep(seeds=3, spread=0.0)
    y = y + np.repeat([0.0, 0.05, -0.04, 0.02, 0.0], 3)  # off the line, so r < 1
    within = fit_law(x, y, budgets)
    assert within["bootstrap"]["scheme"] == "seeds within budgets"
    assert within["pearson_ci"] == pytest.approx([within["pearson"]] * 2)
    assert within["slope_ci"] == pytest.approx([within["slope"]] * 2)
    across = fit_law(x, y)
    assert across["bootstrap"]["scheme"] == "points" and _width(across["pearson_ci"]) > 0.01


def test_groups_summarise_each_budget_in_numeric_order() -> None:
    x, y, budgets = _sweep(seeds=3, spread=0.03)
    fit = fit_law(x, y, budgets)
    assert [g["budget"] for g in fit["groups"]] == ["50", "100", "300", "1000", "3000"]
    first = fit["groups"][0]
    assert first["n"] == 3
    assert first["generation_mean"] == pytest.approx(x[:3].mean())
    assert first["generation_sd"] == pytest.approx(x[:3].std(ddof=1))
    assert first["representation_sd"] == pytest.approx(y[:3].std(ddof=1))
    assert fit["n"] == 15 and fit["spearman_ci"][0] > 0.5  # all points, seeds included
    assert fit_law(x, y)["groups"] == []


def test_a_budget_with_one_seed_stays_fixed() -> None:
    x, y, budgets = _sweep(seeds=3, spread=0.03)
    fit = fit_law(x[2:], y[2:], budgets[2:])  # budget "50" keeps one seed
    assert fit["groups"][0]["n"] == 1 and fit["groups"][0]["generation_sd"] is None
    assert fit["bootstrap"]["fixed_budgets"] == ["50"]
    once = fit_law(x[::3], y[::3], budgets[::3])  # one seed each: budgets are mere labels
    assert once["bootstrap"]["scheme"] == "points" and once["spearman_ci"] is not None


@pytest.mark.parametrize(
    ("x", "y", "budgets", "reason"),
    [
        ([1.0, 2.0], [1.0, 3.0], None, "at least 3 points"),
        ([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0], ["a"] * 4, "share budget 'a'"),
        ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], None, "representation"),
        # each score varies by one point only: most resamples miss one of the two
        ([1.0, 1.0, 1.0, 1.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0, 2.0], None, "resamples vary"),
    ],
)
def test_degenerate_points_have_no_intervals(x, y, budgets, reason) -> None:
    fit = fit_law(x, y, budgets)
    assert fit["spearman_ci"] is None and fit["pearson_ci"] is None and fit["slope_ci"] is None
    assert reason in fit["ci_skipped"]
    assert "slope" in fit  # the fit itself stands


@pytest.mark.parametrize(
    ("budgets", "kwargs", "message"),
    [
        (["a", None, "b"], {}, "1 of 3 points have no budget"),
        (["a", "b"], {}, "one budget per point"),
        (None, {"resamples": 0}, "at least 1"),
        (None, {"confidence": 1.0}, "between 0 and 1"),
    ],
)
def test_fit_rejects_bad_budgets_and_settings(budgets, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_law([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], budgets, **kwargs)


def _sweep_csv(tmp_path: Path) -> Path:
    x, y, budgets = _sweep(seeds=3, spread=0.03)
    lines = [f"step-{b}-seed{i % 3},{g},{r},{b}" for i, (g, r, b) in enumerate(zip(x, y, budgets))]
    return _write(tmp_path, "model,generation,representation,budget\n" + "\n".join(lines) + "\n")


def test_grouped_scores_round_trip_through_the_report(tmp_path) -> None:
    scores = _sweep_csv(tmp_path)
    result = fit_file(scores, tmp_path / "out", resamples=300, seed=2)
    written = json.loads((tmp_path / "out" / "grsl.json").read_text())
    assert written == result
    assert [p["budget"] for p in written["points"]] == [p["budget"] for p in read_scores(scores)]
    assert [(g["budget"], g["n"]) for g in written["groups"]] == [
        ("50", 3),
        ("100", 3),
        ("300", 3),
        ("1000", 3),
        ("3000", 3),
    ]
    assert written["bootstrap"] == {
        "scheme": "seeds within budgets",
        "resamples": 300,
        "used": 300,
        "seed": 2,
        "confidence": 0.95,
        "fixed_budgets": [],
    }
    for key in ("spearman", "pearson", "slope"):
        lo, hi = written[f"{key}_ci"]
        assert lo <= written[key] <= hi
    assert (tmp_path / "out" / "grsl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_each_statistic_with_its_interval(tmp_path, capsys) -> None:
    assert (
        main(["grsl", "fit", "--scores", str(_sweep_csv(tmp_path)), "--output", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out
    number = r"-?\d\.\d{3}"
    for name in ("Spearman rho", "Pearson r", "slope"):
        assert re.search(rf"^{name} +{number} \[{number}, {number}\]$", out, re.M), name
    assert "seeds within budgets" in out and "budget 3000" in out


# PAC-Bayes


def test_bound_matches_hand_computation() -> None:
    # budget = (KL + ln(2·sqrt(n)/δ)) / n = (10 + ln(2·sqrt(1000)/0.05)) / 1000
    #        = (10 + 7.142757) / 1000 = 0.017142757
    budget = 0.017142757093605007
    # square-root form: 0.2 + sqrt(budget / 2) = 0.2 + 0.0925817 = 0.2925817
    assert pac_bayes_bound(0.2, 10.0, 1000, 0.05, form="sqrt") == pytest.approx(0.2925817398)

    # kl form: the p > 0.2 with kl(0.2 || p) = budget, solved here independently
    def kl(q, p):
        return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))

    expected = brentq(lambda p: kl(0.2, p) - budget, 0.2, 1 - 1e-12)
    bound = pac_bayes_bound(0.2, 10.0, 1000, 0.05)
    assert bound == pytest.approx(expected, abs=1e-9)
    assert bound == pytest.approx(0.2803742, abs=1e-6)
    assert bound < pac_bayes_bound(0.2, 10.0, 1000, 0.05, form="sqrt")  # kl form is tighter
    assert binary_kl(0.2, bound) == pytest.approx(budget, rel=1e-6)


@pytest.mark.parametrize("form", ["kl", "sqrt"])
def test_bound_is_monotone(form) -> None:
    def bound(loss=0.3, kl=50.0, n=5000):
        return pac_bayes_bound(loss, kl, n, 0.05, form=form)

    assert bound(n=50_000) < bound(n=5000) < bound(n=500)  # more samples: tighter
    assert bound(kl=5.0) < bound(kl=50.0) < bound(kl=500.0)  # larger KL: looser
    assert bound(loss=0.1) < bound(loss=0.3) < bound(loss=0.5)  # lower loss: tighter
    assert bound() > 0.3  # never below the empirical loss
    tighter_delta = pac_bayes_bound(0.3, 50.0, 5000, 0.01, form=form)
    assert tighter_delta > bound()  # more confidence costs width


def test_bound_rescales_a_loss_range_and_saturates() -> None:
    unit = pac_bayes_bound(0.2, 10.0, 1000)
    assert pac_bayes_bound(2.0, 10.0, 1000, loss_range=(0.0, 10.0)) == pytest.approx(10 * unit)
    assert pac_bayes_bound(0.2, 1e6, 100) == pytest.approx(1.0)  # vacuous: capped at the max


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"empirical_loss": 1.5}, "outside loss_range"),
        ({"kl": -1.0}, "kl must be >= 0"),
        ({"n": 5}, "n must be >= 8"),
        ({"delta": 1.0}, "delta"),
        ({"loss_range": (1.0, 1.0)}, "loss_range"),
        ({"form": "catoni"}, "form"),
    ],
)
def test_bound_rejects_invalid_inputs(kwargs, message) -> None:
    args = {"empirical_loss": 0.2, "kl": 1.0, "n": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        pac_bayes_bound(**args)


def test_gaussian_kl_hand_value_and_zero() -> None:
    # KL(N(1, 0.5²) || N(0, 1)) = ln(1/0.5) + (0.25 + 1) / 2 - 1/2
    assert gaussian_kl(1.0, 0.5) == pytest.approx(math.log(2.0) + 0.625 - 0.5)
    mean = np.random.default_rng(0).normal(size=(3, 4))
    assert gaussian_kl(mean, 0.2, mean, 0.2) == pytest.approx(0.0, abs=1e-12)
    assert gaussian_kl(np.zeros(12), 0.5) == pytest.approx(12 * (math.log(2.0) + 0.125 - 0.5))
    with pytest.raises(ValueError, match="positive"):
        gaussian_kl(0.0, 0.0)


def test_lora_gaussian_kl_sums_over_adapter_tensors() -> None:
    g = torch.Generator().manual_seed(0)
    trained = {
        "layers.0.q_proj.lora_A.weight": torch.randn(4, 8, generator=g),
        "layers.0.q_proj.lora_B.weight": 0.1 * torch.randn(8, 4, generator=g),
    }
    init = {"layers.0.q_proj.lora_A.weight": torch.randn(4, 8, generator=g)}  # B starts at 0
    expected = gaussian_kl(
        trained["layers.0.q_proj.lora_A.weight"], 0.01, init["layers.0.q_proj.lora_A.weight"], 0.1
    ) + gaussian_kl(trained["layers.0.q_proj.lora_B.weight"], 0.01, 0.0, 0.1)
    assert lora_gaussian_kl(trained, 0.01, 0.1, prior=init) == pytest.approx(expected)
    at_init = {k: torch.zeros_like(v) for k, v in trained.items()}
    assert lora_gaussian_kl(at_init, 0.1, 0.1) == pytest.approx(0.0, abs=1e-9)
    # moving further from the prior costs more, so the certified risk gets looser
    assert lora_gaussian_kl(trained, 0.01, 0.1) < lora_gaussian_kl(
        {k: 2 * v for k, v in trained.items()}, 0.01, 0.1
    )
    with pytest.raises(ValueError, match="lacks"):
        lora_gaussian_kl(trained, 0.01, 0.1, prior={"other.lora_A.weight": torch.zeros(1)})


# the link from generative loss to attainable retrieval


def test_certificate_hand_values_and_saturation() -> None:
    err = retrieval_error_certificate([1.0, 3.0, 9.0], [5.0, 5.0, 5.0], n_candidates=3)
    np.testing.assert_allclose(err, [2 * math.exp(-4), 2 * math.exp(-2), 1.0])


def test_certificate_bounds_the_true_retrieval_error_of_a_toy_generator() -> None:
    """K equally likely captions; the generator puts mass a on the right one. Retrieval by
    its likelihood ratio among N candidates drawn from p(y) fails only on ties with a copy of
    the true caption; the certificate (N-1)/(aK) must lie above the simulated error rate."""
    rng = np.random.default_rng(0)
    k, n, a = 200, 20, 0.6
    certificate = retrieval_error_certificate([-math.log(a)], [math.log(k)], n)[0]
    truth = rng.integers(k, size=20_000)
    distractors = rng.integers(k, size=(20_000, n - 1))
    simulated = (distractors == truth[:, None]).any(1).mean()  # a tie counts as a failure
    assert simulated < certificate == pytest.approx((n - 1) / (a * k))


def test_ceiling_moves_the_ways_grsl_says() -> None:
    gen, text = np.full(500, 10.0), np.full(500, 20.0)
    base = representation_ceiling(gen, text, kl=10.0, n_candidates=50)
    assert base["n"] == 500 and base["information_gain"] == pytest.approx(10.0)
    assert base["empirical_error"] == pytest.approx(49 * math.exp(-10))
    assert 0 < base["certified_r_at_1"] == pytest.approx(1 - base["certified_error"])
    better = representation_ceiling(gen - 2, text, kl=10.0, n_candidates=50)
    moved = representation_ceiling(gen, text, kl=500.0, n_candidates=50)
    harder = representation_ceiling(gen, text, kl=10.0, n_candidates=5000)
    assert better["certified_r_at_1"] > base["certified_r_at_1"]  # generates better
    assert moved["certified_r_at_1"] < base["certified_r_at_1"]  # LoRA moved further
    assert harder["certified_r_at_1"] < base["certified_r_at_1"]  # more distractors


@pytest.mark.parametrize(
    ("gen", "text", "n", "message"),
    [
        ([1.0, 2.0], [1.0], 10, "equal-length"),
        ([1.0, float("nan")], [1.0, 2.0], 10, "pair 1"),
        ([1.0], [2.0], 1, "n_candidates"),
    ],
)
def test_certificate_rejects_bad_input(gen, text, n, message) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_error_certificate(gen, text, n)
