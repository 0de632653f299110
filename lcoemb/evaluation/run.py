"""``lcoemb eval``: pick mteb tasks by benchmark or task name, run them through ``mteb.evaluate``,
and summarise the scores per task type the way the MIEB leaderboard shows them.

Result files are mteb's own (``DIR/results/<model>/<revision>/<task>.json``, via a
``ResultCache`` rooted at ``DIR``), so they load into mteb's leaderboard tooling; finished tasks
are not run again when the command is repeated. ``DIR/summary.json`` holds
``{"tasks": {name: {"main_score", "modalities", "type"}}, "by_type": {...}, "mean": float,
"skipped": {name: reason}}``; scores are mteb's (0-1), tables show them ×100 as leaderboards do.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lcoemb.evaluation.offline import BENCHMARK_NAME, OFFLINE_TASKS, offline_tasks

#: short names people use → mteb's benchmark names
BENCHMARK_ALIASES = {
    "MIEB-Lite": "MIEB(lite)",
    "MIEB-lite": "MIEB(lite)",
    "MAEB": "MAEB(v1)",
    "MVEB": "MVEB(v1)",
}

#: mteb task type → the MIEB leaderboard's category (the paper's table columns)
CATEGORIES = {
    "Any2AnyRetrieval": "Retrieval",
    "Any2AnyMultilingualRetrieval": "Retrieval",
    "ImageClustering": "Clustering",
    "ZeroShotClassification": "Zero-shot",
    "ImageClassification": "Linear probe",
    "Compositionality": "Compositionality",
    "DocumentUnderstanding": "Documents",
    "VisionCentricQA": "Vision-centric QA",
    "VisualSTS(eng)": "Visual STS",
    "VisualSTS(multi)": "Visual STS",
}

#: Published MIEB-Lite rows (×100). LCO-Emb-Omni-7B's per-category values are secondary
#: summaries of the paper (unverified); the other rows give only the average.
REFERENCE_ROWS: dict[str, dict[str, float]] = {
    "LCO-Emb-Omni-7B (paper)": {
        "Retrieval": 36.4,
        "Clustering": 80.0,
        "Zero-shot": 68.5,
        "Linear probe": 74.1,
        "Compositionality": 50.1,
        "Documents": 75.4,
        "Visual STS": 86.2,
        "mean": 68.8,
    },
    "GME-7B (paper)": {"mean": 64.5},
    "CLIP-ViT-bigG (paper)": {"mean": 51.3},
}


@dataclass
class TaskSelection:
    """Tasks to run, and those skipped with the reason."""

    tasks: list[Any] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _close(name: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(name, options, n=5, cutoff=0.5)
    return f"; did you mean: {', '.join(matches)}?" if matches else ""


def resolve_tasks(
    benchmark: str | None = None, tasks: list[str] | None = None, offline_size: int | None = None
) -> list[Any]:
    """mteb task objects for a benchmark name (``MIEB(lite)``, ``MAEB``, ``MVEB``, any mteb
    benchmark, or ``offline``) or a list of task names (mteb's or the offline ones).
    Unknown names raise ``ValueError`` listing close matches."""
    import mteb

    if (benchmark is None) == (tasks is None):
        raise ValueError("give exactly one of a benchmark name or a list of task names")
    if benchmark is not None:
        if benchmark == BENCHMARK_NAME:
            return offline_tasks(size=offline_size)
        name = BENCHMARK_ALIASES.get(benchmark, benchmark)
        names = [b.name for b in mteb.get_benchmarks()]
        if name not in names:
            options = [*names, *BENCHMARK_ALIASES, BENCHMARK_NAME]
            raise ValueError(f"unknown benchmark {benchmark!r}{_close(benchmark, options)}")
        return list(mteb.get_benchmark(name).tasks)
    offline = {t.metadata.name for t in OFFLINE_TASKS}
    out = []
    for name in tasks or []:
        if name in offline:
            out += offline_tasks([name], size=offline_size)
            continue
        try:
            out.append(mteb.get_task(name))
        except KeyError:
            options = [t.metadata.name for t in mteb.get_tasks()] + sorted(offline)
            raise ValueError(f"unknown task {name!r}{_close(name, options)}") from None
    return out


def _task_modalities(task: Any) -> list[set[str]]:
    """The modality sets a model must cover: query and document sides for retrieval (mteb runs a
    retrieval task only if each side overlaps), the whole task otherwise."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.types import PromptType

    meta = task.metadata
    if isinstance(task, AbsTaskRetrieval):
        return [
            set(meta.get_modalities(PromptType.query)),
            set(meta.get_modalities(PromptType.document)),
        ]
    return [set(meta.modalities)]


def select_supported(tasks: list[Any], modalities: set[str]) -> TaskSelection:
    """Split tasks into those the model can take and those needing a modality it lacks."""
    selection = TaskSelection()
    for task in tasks:
        missing = sorted(set().union(*_task_modalities(task)) - modalities)
        if missing:
            selection.skipped[task.metadata.name] = (
                f"needs {', '.join(missing)}; the model takes {', '.join(sorted(modalities))}"
            )
        else:
            selection.tasks.append(task)
    return selection


def category(task_type: str) -> str:
    return CATEGORIES.get(task_type, task_type)


def summarize(results: Any, tasks: list[Any], skipped: dict[str, str]) -> dict[str, Any]:
    """The summary of an mteb ``ModelResult``: per task, per type (MIEB category), mean."""
    by_name = {t.metadata.name: t for t in tasks}
    summary: dict[str, Any] = {"tasks": {}, "by_type": {}, "mean": None, "skipped": skipped}
    for result in results.task_results:
        task = by_name.get(result.task_name)
        if task is None:
            continue
        entry = {
            "main_score": float(result.get_score()),
            "modalities": list(task.metadata.modalities),
            "type": task.metadata.type,
        }
        subsets = {
            s["hf_subset"]: float(s["main_score"])
            for split in result.scores.values()
            for s in split
            if "hf_subset" in s
        }
        if len(subsets) > 1:
            entry["subsets"] = subsets
        summary["tasks"][result.task_name] = entry
    for error in results.exceptions or []:
        summary.setdefault("errors", {})[error.task_name] = str(error.exception)
    groups: dict[str, list[float]] = {}
    for entry in summary["tasks"].values():
        groups.setdefault(category(entry["type"]), []).append(entry["main_score"])
    summary["by_type"] = {k: float(np.mean(v)) for k, v in groups.items()}
    scores = [e["main_score"] for e in summary["tasks"].values()]
    summary["mean"] = float(np.mean(scores)) if scores else None
    return summary


def format_table(summary: dict[str, Any], name: str = "ours", compare: bool = False) -> str:
    """Per-type means (×100) and the task mean; ``compare`` adds the published rows."""
    rows = {name: {**summary["by_type"], "mean": summary["mean"]}}
    if compare:
        rows.update(REFERENCE_ROWS)
    columns = list(summary["by_type"])
    if compare:
        columns += [c for c in REFERENCE_ROWS["LCO-Emb-Omni-7B (paper)"] if c not in columns]
        columns.remove("mean")
    columns.append("mean")
    width = max(len(r) for r in rows) + 2
    lines = [f"{'model':<{width}}" + "".join(f"{c:>{max(10, len(c) + 2)}}" for c in columns)]
    for row_name, row in rows.items():
        scale = 100.0 if row_name == name else 1.0
        cells = []
        for c in columns:
            value = row.get(c)
            text = "-" if value is None else f"{value * scale:.1f}"
            cells.append(f"{text:>{max(10, len(c) + 2)}}")
        lines.append(f"{row_name:<{width}}" + "".join(cells))
    lines.append("")
    lines.append(f"{'task':<34}{'type':<24}{'score':>8}")
    for task_name, entry in summary["tasks"].items():
        lines.append(f"{task_name:<34}{entry['type']:<24}{entry['main_score'] * 100:>8.1f}")
    for task_name, reason in summary["skipped"].items():
        lines.append(f"{task_name:<34}{'skipped':<24}  {reason}")
    for task_name, error in summary.get("errors", {}).items():
        lines.append(f"{task_name:<34}{'failed':<24}  {error.splitlines()[0][:80]}")
    return "\n".join(lines)


def evaluate(
    model: Any,
    tasks: list[Any],
    output: str | Path,
    *,
    batch_size: int = 16,
    show_progress: bool = True,
    raise_error: bool = True,
) -> dict[str, Any]:
    """Run ``tasks`` on an :class:`~lcoemb.evaluation.MTEBEncoder` with ``mteb.evaluate``; skip
    those needing a modality the model lacks; write ``output/summary.json`` and return it."""
    import mteb

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    selection = select_supported(tasks, set(model.mteb_model_meta.modalities))
    results = mteb.evaluate(
        model,
        selection.tasks,
        cache=mteb.ResultCache(cache_path=out),
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
        show_progress_bar=show_progress,
        raise_error=raise_error,
        co2_tracker=False,
    )
    summary = summarize(results, selection.tasks, selection.skipped)
    summary["model"] = model.mteb_model_meta.name
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
