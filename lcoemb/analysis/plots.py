"""Plots people would rather look at than read (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    # imported on first plot, not at module level: pyplot binds a process-wide backend when it
    # is imported, and a user's own (interactive) choice must win until lcoemb actually draws
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def retrieval_bars(
    base: dict[str, dict[str, float]],
    trained: dict[str, dict[str, float]],
    path: str | Path,
    metric: str = "R@1",
    labels: tuple[str, str] = ("base (generative stage only)", "after text-only LCO training"),
) -> Path:
    """Grouped bars of ``metric`` per retrieval task, base against trained."""
    plt = _pyplot()
    tasks = list(base)
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tasks)), 4))
    for offset, (scores, label) in zip((-0.2, 0.2), ((base, labels[0]), (trained, labels[1]))):
        values = [scores[t][metric] for t in tasks]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, tasks, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Cross-modal retrieval ({metric}) on held-out data")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def layer_curves(
    series: dict[str, list[float]],
    path: str | Path,
    title: str,
    ylabel: str,
    compare: dict[str, list[float]] | None = None,
    labels: tuple[str, str] = ("before", "after"),
    x: list[int] | None = None,
) -> Path:
    """One line per key of ``series`` against layer index (``x``, default 0, 1, ...);
    ``compare`` dashed, same colours.

    Drawn for the paper's per-layer analyses (anisotropy per modality, kernel alignment per
    modality pair), where the point is how a curve moves between two checkpoints. With
    ``compare`` the legend names ``series`` by ``labels[0]`` and ``compare`` by
    ``labels[1]`` (argument order), so the default reads ``layer_curves(base, ...,
    compare=trained)``. NaN values (an undefined metric at some layer) leave gaps.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, values) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        label = f"{key} ({labels[0]})" if compare is not None else key
        ax.plot(x or range(len(values)), values, color=colour, marker=".", label=label)
        if compare is not None and key in compare:
            other = compare[key]
            ax.plot(
                x or range(len(other)),
                other,
                color=colour,
                linestyle="--",
                marker=".",
                label=f"{key} ({labels[1]})",
            )
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _interval(value: float | None, ci: list[float] | None) -> str:
    """``0.83 [0.61, 0.95]``, or ``n/a`` for an undefined statistic."""
    if value is None:
        return "n/a"
    return f"{value:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def grsl_plot(
    points: list[dict[str, Any]],
    fit: dict[str, Any],
    path: str | Path,
    xlabel: str = "generation score",
    ylabel: str = "representation score",
    title: str = "Generation-Representation Scaling Law",
) -> Path:
    """Draw the scores of :func:`lcoemb.grsl.fit.read_scores` and the fit of
    :func:`lcoemb.grsl.fit.fit_law` to ``path``.

    With budgets, points are coloured by budget and each budget's mean is drawn with ±1 sd
    bars in both axes, so the seed spread is seen against the trend; names are left off, as
    the seeds of one budget crowd each other. Without, points are coloured by ``group`` and
    named, one backbone each. The linear fit is solid and, when present, the log-linear fit
    dashed, so one sees whether the law bends over the range measured; the title carries
    Spearman's rho with its bootstrap interval, the number the law is judged by.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = fit.get("groups") or []
    key = "budget" if groups else "group"
    labels = [g["budget"] for g in groups] or list(dict.fromkeys(p.get("group") for p in points))
    for i, label in enumerate(labels):
        colour = colours[i % len(colours)]
        members = [p for p in points if p.get(key) == label]
        if groups:
            name = f"budget {label} (n={len(members)})"
        else:
            name = label if label is not None else ("ungrouped" if len(labels) > 1 else None)
        ax.scatter(
            [p["generation"] for p in members],
            [p["representation"] for p in members],
            color=colour,
            alpha=0.6 if groups else 1.0,
            label=name,
            zorder=3,
        )
    for i, g in enumerate(groups):
        ax.errorbar(
            g["generation_mean"],
            g["representation_mean"],
            xerr=g["generation_sd"] or 0.0,
            yerr=g["representation_sd"] or 0.0,
            fmt="s",
            color=colours[i % len(colours)],
            markeredgecolor="black",
            capsize=3,
            zorder=4,
            label="budget mean ± 1 sd" if i == 0 else None,
        )
    if not groups:
        for p in points:
            ax.annotate(
                p["model"],
                (p["generation"], p["representation"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    xs = np.array([p["generation"] for p in points], dtype=float)
    grid = np.linspace(xs.min(), xs.max(), 200)

    def r2_text(r2: float | None) -> str:
        return "n/a" if r2 is None else f"{r2:.2f}"

    ax.plot(
        grid,
        fit["intercept"] + fit["slope"] * grid,
        color="black",
        label=(
            f"linear: y = {fit['intercept']:.3g} + {fit['slope']:.3g}·x (r²={r2_text(fit['r2'])})"
        ),
    )
    log_fit = fit.get("log_linear")
    if log_fit is not None:
        ax.plot(
            grid,
            log_fit["intercept"] + log_fit["slope"] * np.log(grid),
            color="grey",
            linestyle="--",
            label=(
                f"log-linear: y = {log_fit['intercept']:.3g} + {log_fit['slope']:.3g}·ln x "
                f"(r²={r2_text(log_fit['r2'])})"
            ),
        )
    level = round(100 * fit["bootstrap"]["confidence"])
    subtitle = (
        f"n={fit['n']}"
        + (f" in {len(groups)} budgets" if groups else "")
        + f", Spearman ρ={_interval(fit['spearman'], fit['spearman_ci'])}"
        + (f" ({level} % CI)" if fit["spearman_ci"] is not None else "")
    )
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
