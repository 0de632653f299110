"""Plots people would rather look at than read (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
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
