"""Fit the Generation-Representation Scaling Law across backbones.

GRSL is a claim about a *population* of backbones: the better a model generates (OCR,
captioning, ASR scores), the better its embeddings after the same contrastive recipe. The
evidence is a scatter of (generation score, representation score) pairs, one per
backbone, and a positive fit through it. This module reads such pairs from a CSV, fits a
line (and, when the scores allow it, a log-linear curve, since scaling laws are often
linear in the log), reports rank and linear correlation, and writes the fit and a plot.
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

from lcoemb.analysis.plots import grsl_scatter

REQUIRED_COLUMNS = ("model", "generation", "representation")


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a scores CSV as ``{"model", "generation", "representation", "group"}``.

    Columns ``model,generation,representation`` are required, ``group`` (e.g. the model
    family or the modality of the task) is optional and empty means none. Any problem is a
    ``ValueError`` that names ``file:line``, because these files are written by hand.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets add a BOM
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header must include "
                f"{','.join(REQUIRED_COLUMNS)} (optional: group), "
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
            group = (record.get("group") or "").strip() or None
            rows.append({"model": model, **values, "group": group})
    if len(rows) < 2:
        raise ValueError(f"{path}: a fit needs at least 2 rows of scores, found {len(rows)}")
    return rows


def _line(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Least-squares line ``y = intercept + slope·x`` with its r² (None if y is constant)."""
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (intercept + slope * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else None
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def fit_law(generation: Sequence[float], representation: Sequence[float]) -> dict[str, Any]:
    """Fit ``representation = intercept + slope·generation`` across backbones.

    Returns ``slope``, ``intercept``, ``r2``, ``pearson`` and ``spearman`` (correlations;
    None when either score is constant), ``n``, and ``log_linear``: the fit of
    ``representation = intercept + slope·ln(generation)`` as ``{"slope", "intercept",
    "r2"}``, or None with ``log_linear_skipped`` saying why (it needs every generation
    score > 0). A positive slope with a high rank correlation is what GRSL predicts; with
    the handful of backbones one usually has, the Spearman coefficient says more than r².
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
    return result


def fit_file(scores_csv: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Fit the scores in ``scores_csv``; write ``grsl.json`` and ``grsl.png`` to ``output_dir``.

    The JSON holds the fit of :func:`fit_law`, the points it was fitted to and the names of
    the files written; the same dict is returned.
    """
    points = read_scores(scores_csv)
    fit = fit_law([p["generation"] for p in points], [p["representation"] for p in points])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = grsl_scatter(points, fit, output_dir / "grsl.png")
    result = {"scores": str(scores_csv), **fit, "points": points, "plot": plot.name}
    (output_dir / "grsl.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
