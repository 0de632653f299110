"""Fit the Generation-Representation Scaling Law across backbones.

GRSL is a claim about a *population* of backbones: the better a model generates (OCR,
captioning, ASR scores), the better its embeddings after the same contrastive recipe. The
evidence is a scatter of (generation score, representation score) pairs, one per
backbone, and a positive fit through it. This module reads such pairs from a CSV, fits a
line (and, when the scores allow it, a log-linear curve, since scaling laws are often
linear in the log), reports rank and linear correlation with bootstrap confidence
intervals, and writes the fit and a plot.

At mini scale the backbones are stage-1 *budgets* of one recipe, each trained with several
seeds, so a point is one (budget, seed) run. Seeds are what is random in that design and
budgets what was chosen, so the bootstrap resamples seeds within each budget
(:func:`_bootstrap_intervals`); without budgets it resamples points.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lcoemb.analysis.plots import grsl_plot

REQUIRED_COLUMNS = ("model", "generation", "representation")
OPTIONAL_COLUMNS = ("group", "budget")


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a scores CSV as ``{"model", "generation", "representation", "group",
    "budget"}``.

    Columns ``model,generation,representation`` are required. Two are optional, empty
    meaning none: ``group`` labels a point for the plot (the model family, the modality of
    the task), and ``budget`` marks repeated measurements, rows with one budget being the
    seeds of one configuration (a stage-1 budget), which the bootstrap resamples within.
    Either every row has a budget or none does: a point outside every budget would have no
    seeds to resample among. Any problem is a ``ValueError`` that names ``file:line``,
    because these files are written by hand.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets add a BOM
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header must include "
                f"{','.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)}), "
                f"got {','.join(header) or 'nothing'}"
            )
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if None in record:
                raise ValueError(f"{where}: more values than the {len(header)} header columns")
            model = (record["model"] or "").strip()
            if not model:
                raise ValueError(f"{where}: empty model name")
            values = {}
            for column in ("generation", "representation"):
                text = (record[column] or "").strip()
                if not text:
                    raise ValueError(f"{where}: no {column} value")
                try:
                    values[column] = float(text)
                except ValueError:
                    raise ValueError(f"{where}: {column} is not a number: {text!r}") from None
                if not math.isfinite(values[column]):
                    raise ValueError(f"{where}: {column} is not finite: {text!r}")
            labels = {c: (record.get(c) or "").strip() or None for c in OPTIONAL_COLUMNS}
            rows.append({"model": model, **values, **labels})
            lines.append(reader.line_num)
    if len(rows) < 2:
        raise ValueError(f"{path}: a fit needs at least 2 rows of scores, found {len(rows)}")
    with_budget = [r["budget"] is not None for r in rows]
    if any(with_budget) and not all(with_budget):
        line = lines[with_budget.index(False)]
        raise ValueError(
            f"{path}:{line}: no budget, but other rows have one; give every row a budget or none"
        )
    return rows


def _line(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Least-squares line ``y = intercept + slope·x`` with its r² (None if y is constant)."""
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (intercept + slope * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else None
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def _budget_order(budgets: Sequence[str]) -> list[str]:
    """Distinct budgets, by value when all are numbers (a sweep reads in order), else as met."""
    distinct = list(dict.fromkeys(budgets))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def _group_summary(
    generation: np.ndarray, representation: np.ndarray, budgets: Sequence[str]
) -> list[dict[str, Any]]:
    """Per budget: ``budget``, ``n`` and the mean and sample standard deviation (ddof=1,
    None for a single seed) of both scores, the error bars of the plot."""
    groups = []
    for budget in _budget_order(budgets):
        members = np.array([b == budget for b in budgets])
        summary: dict[str, Any] = {"budget": budget, "n": int(members.sum())}
        for name, values in (("generation", generation), ("representation", representation)):
            chosen = values[members]
            summary[f"{name}_mean"] = float(chosen.mean())
            summary[f"{name}_sd"] = float(chosen.std(ddof=1)) if len(chosen) > 1 else None
        groups.append(summary)
    return groups


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and least-squares slope of ``b`` on ``a`` for each row of two 2-D arrays."""
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    sab = (ac * bc).sum(axis=1)
    saa = (ac * ac).sum(axis=1)
    sbb = (bc * bc).sum(axis=1)
    return sab / np.sqrt(saa * sbb), sab / saa


def _bootstrap_intervals(
    generation: Sequence[float],
    representation: Sequence[float],
    budgets: Sequence[str] | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of Spearman's rho, Pearson's r and the slope.

    Returns ``spearman_ci``, ``pearson_ci``, ``slope_ci`` (``[lo, hi]``) and ``bootstrap``
    (``scheme``, ``resamples``, ``used``, ``seed``, ``confidence``, ``fixed_budgets``); the
    intervals are None, with ``ci_skipped`` saying why, where no interval means anything:
    fewer than 3 points, a constant score, one budget only, or fewer than half the resamples
    usable.

    With ``budgets`` the scheme is ``"seeds within budgets"``: each resample draws, for
    every budget, as many of its rows with replacement as it has. The budgets are the
    design, fixed by whoever ran the sweep; the seeds are the sampling noise. Resampling
    points across budgets instead would make resamples that miss budgets or count one
    twice, answering a question about a sweep nobody ran. A budget measured once has no
    seed spread to draw from and stays fixed (listed in ``fixed_budgets``; its noise is
    then missing from the interval). Without budgets, or with one row per budget, the scheme
    is ``"points"``: ordinary resampling of all rows. Resamples in which either score is
    constant have no correlation and are dropped (``used`` counts the rest). Percentile
    intervals stay inside [-1, 1] for the correlations, and the same resamples serve all
    three statistics. A budget's resampled spread is (n−1)/n of its sample variance, so with
    3 seeds the intervals run somewhat narrow: more seeds tighten them honestly, more
    resamples only smooth them. The result depends only on the data and ``seed``.
    """
    x = np.asarray(generation, dtype=np.float64)
    y = np.asarray(representation, dtype=np.float64)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    strata = (
        [
            np.array([i for i, b in enumerate(budgets) if b == budget])
            for budget in dict.fromkeys(budgets)
        ]
        if budgets is not None
        else []
    )
    within = any(len(s) > 1 for s in strata)
    scheme = "seeds within budgets" if within and len(strata) > 1 else "points"
    result: dict[str, Any] = {"spearman_ci": None, "pearson_ci": None, "slope_ci": None}
    info: dict[str, Any] = {
        "scheme": scheme,
        "resamples": resamples,
        "used": 0,
        "seed": seed,
        "confidence": confidence,
        "fixed_budgets": [],
    }
    result["bootstrap"] = info
    if len(x) < 3:
        result["ci_skipped"] = f"needs at least 3 points, got {len(x)}"
        return result
    if budgets is not None and len(strata) == 1:
        result["ci_skipped"] = (
            f"all {len(x)} points share budget {budgets[0]!r}: the law compares budgets"
        )
        return result
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        constant = "generation" if np.ptp(x) == 0 else "representation"
        result["ci_skipped"] = f"every {constant} score is the same: no correlation to bound"
        return result
    rng = np.random.default_rng(seed)
    if scheme == "points":
        index = rng.integers(0, len(x), size=(resamples, len(x)))
    else:
        info["fixed_budgets"] = [budgets[s[0]] for s in strata if len(s) == 1]
        index = np.concatenate(
            [s[rng.integers(0, len(s), size=(resamples, len(s)))] for s in strata], axis=1
        )
    xs, ys = x[index], y[index]
    usable = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    xs, ys = xs[usable], ys[usable]
    info["used"] = int(usable.sum())
    if info["used"] < resamples / 2:
        result["ci_skipped"] = (
            f"only {info['used']} of {resamples} resamples vary in both scores: too few points"
        )
        return result
    pearson, slope = _rowwise_pearson(xs, ys)
    spearman, _ = _rowwise_pearson(stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1))
    tails = [(1 - confidence) / 2, (1 + confidence) / 2]
    for key, values in (("spearman_ci", spearman), ("pearson_ci", pearson), ("slope_ci", slope)):
        result[key] = [float(v) for v in np.quantile(values, tails)]
    return result


def fit_law(
    generation: Sequence[float],
    representation: Sequence[float],
    budgets: Sequence[str | None] | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Fit ``representation = intercept + slope·generation`` across backbones.

    Returns ``slope``, ``intercept``, ``r2``, ``pearson`` and ``spearman`` (correlations;
    None when either score is constant), ``n``, and ``log_linear``: the fit of
    ``representation = intercept + slope·ln(generation)`` as ``{"slope", "intercept",
    "r2"}``, or None with ``log_linear_skipped`` saying why (it needs every generation
    score > 0). A positive slope with a high rank correlation is what GRSL predicts; with
    the handful of backbones one usually has, the Spearman coefficient says more than r².

    Every point enters the fit and the correlations, seeds included, so repeated runs of
    one budget weigh as much as their number. ``budgets`` (one per point, all None or none)
    adds ``groups``, the mean ± sd of both scores per budget (``[]`` without budgets), and
    steers the bootstrap of :func:`_bootstrap_intervals`, whose ``spearman_ci``,
    ``pearson_ci``, ``slope_ci``, ``bootstrap`` (and ``ci_skipped``) are merged in.
    """
    x = np.asarray(generation, dtype=np.float64)
    y = np.asarray(representation, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"generation and representation must be 1-D and of equal length, got shapes "
            f"{x.shape} and {y.shape}"
        )
    if len(x) < 2:
        raise ValueError(f"a fit needs at least 2 points, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("generation and representation must be finite numbers")
    if np.ptp(x) == 0:
        raise ValueError(f"every generation score is {x[0]}: a slope needs at least two values")
    if budgets is not None:
        if len(budgets) != len(x):
            raise ValueError(f"give one budget per point: {len(x)} points, {len(budgets)}")
        missing = sum(b is None for b in budgets)
        if missing == len(budgets):
            budgets = None
        elif missing:
            raise ValueError(f"{missing} of {len(budgets)} points have no budget: all or none")
    varied = np.ptp(y) > 0
    result: dict[str, Any] = {
        **_line(x, y),
        "pearson": float(stats.pearsonr(x, y).statistic) if varied else None,
        "spearman": float(stats.spearmanr(x, y).statistic) if varied else None,
        "n": len(x),
    }
    if (x > 0).all():
        log_x = np.log(x)
        if np.ptp(log_x) > 0:
            result["log_linear"] = _line(log_x, y)
        else:  # distinct x whose logs round to one value: not worth a separate message
            result["log_linear"] = None
            result["log_linear_skipped"] = "ln(generation) does not vary"
    else:
        result["log_linear"] = None
        result["log_linear_skipped"] = (
            f"needs every generation score > 0 (min is {x.min():g}) to take ln(generation)"
        )
    result["groups"] = _group_summary(x, y, budgets) if budgets is not None else []
    result.update(
        _bootstrap_intervals(x, y, budgets, resamples=resamples, seed=seed, confidence=confidence)
    )
    return result


def fit_file(
    scores_csv: str | Path,
    output_dir: str | Path,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the scores in ``scores_csv``; write ``grsl.json`` and ``grsl.png`` to ``output_dir``.

    The JSON holds the fit of :func:`fit_law` (bootstrapped with ``resamples`` and ``seed``,
    by budget when the CSV has a ``budget`` column), the points it was fitted to and the
    names of the files written; the same dict is returned.
    """
    points = read_scores(scores_csv)
    fit = fit_law(
        [p["generation"] for p in points],
        [p["representation"] for p in points],
        [p["budget"] for p in points],
        resamples=resamples,
        seed=seed,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = grsl_plot(points, fit, output_dir / "grsl.png")
    result = {"scores": str(scores_csv), **fit, "points": points, "plot": plot.name}
    (output_dir / "grsl.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
