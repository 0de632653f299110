"""Held-out generation quality: what a backbone's own ``generate`` says about generated media.

Each task of :data:`lcoemb.synthetic.TASKS` is asked its instruction on ``n`` test-split
samples and scored by its metric: exact match (captions, clips, digits), character accuracy
(1 − CER, OCR) or word error rate (ASR). Stage-1 pretraining reports these scores
(:mod:`lcoemb.recipes.pretrain`); the GRSL measurement combines some of them into its generation
axis (:mod:`lcoemb.recipes.grsl`).
"""

from __future__ import annotations

from typing import Any

import jiwer
import numpy as np
from tqdm.auto import tqdm

from lcoemb.synthetic import TASKS, Task, as_input, dataset


def normalise(text: str) -> str:
    """Lower case, letters, digits and single spaces only: how answers are compared."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def score_key(task: Task) -> str:
    """The key of ``task``'s score in :func:`generation_scores`' result: ``<task>_<metric>``."""
    return f"{task.name}_{task.metric}"


def generation_scores(
    encoder: Any, n: int = 100, tasks: list[str] | None = None, show_progress: bool = True
) -> dict:
    """Held-out generation quality of ``tasks`` (default: all), each on ``n`` test-split samples:
    ``<task>_<metric>`` (``scene_exact_match``, ``ocr_char_accuracy``, ``speech_wer``...) and
    ``<task>_examples`` (three references with what the model said).
    Clips pass all their frames, as stage 1 saw them. ``show_progress`` draws a bar over the
    tasks."""
    scores: dict[str, Any] = {}
    names = tasks or list(TASKS)
    for name in tqdm(names, desc="Generation", unit="task", disable=not show_progress):
        task = TASKS[name]
        samples = dataset(name, "test", n)
        outputs = encoder.generate(
            [as_input(s, all_frames=True) for s in samples],
            "\n" + task.instruction,
            max_new_tokens=16,
        )
        refs = [normalise(s.text) for s in samples]
        hyps = [normalise(o) for o in outputs]
        if task.metric == "char_accuracy":
            score = max(0.0, 1 - jiwer.cer(refs, hyps))
        elif task.metric == "wer":
            score = jiwer.wer(refs, [h or "<empty>" for h in hyps])
        else:
            score = float(np.mean([r == h for r, h in zip(refs, hyps)]))
        scores[score_key(task)] = score
        scores[f"{name}_examples"] = [  # a few, so a reader can see what the model says
            {"reference": s.text, "generated": o} for s, o in zip(samples[:3], outputs[:3])
        ]
    return scores


def quality(task: Task, score: float) -> float:
    """A task's score as higher-is-better in [0, 1]: 1 − WER for ASR (0 past WER 1), else the
    score itself."""
    return max(0.0, 1.0 - score) if task.metric == "wer" else score


def generation_retained(encoder: Any, n: int = 100, tasks: list[str] | None = None) -> dict:
    """How much of the backbone's generation an adapter keeps: each task of ``tasks`` (default:
    all) scored on ``n`` test samples with ``encoder``'s adapter disabled (the base) and active,
    and ``retained`` = adapter quality / base quality (:func:`quality`; None where the base
    scores 0). The paper's claim is that text-only LoRA training keeps generation; this is the
    number that checks it. Raises ``ValueError`` for an encoder without an adapter."""
    if encoder.peft_model is None:
        raise ValueError("the model has no adapter to compare against its base (pass --adapter)")
    names = tasks or list(TASKS)
    with encoder.peft_model.disable_adapter():
        base = generation_scores(encoder, n, names)
    adapted = generation_scores(encoder, n, names)
    rows: dict[str, Any] = {}
    for name in names:
        task, key = TASKS[name], score_key(TASKS[name])
        b, a = quality(task, base[key]), quality(task, adapted[key])
        rows[name] = {
            "metric": key,
            "base": base[key],
            "adapter": adapted[key],
            "retained": a / b if b > 0 else None,
            "examples": [
                {**x, "with adapter": y["generated"]}
                for x, y in zip(base[f"{name}_examples"], adapted[f"{name}_examples"])
            ],
        }
    ratios = [r["retained"] for r in rows.values() if r["retained"] is not None]
    return {
        "n": n,
        "tasks": rows,
        "min_retained": min(ratios) if ratios else None,
        "mean_retained": float(np.mean(ratios)) if ratios else None,
    }


def format_retained(result: dict) -> str:
    """The table of :func:`generation_retained`: per task, base → adapter and the ratio."""
    w = max([len("task"), *map(len, result["tasks"])]) + 2
    m = max([len("metric"), *(len(row["metric"]) for row in result["tasks"].values())]) + 2
    lines = [f"{'task':<{w}}{'metric':<{m}}{'base':>8}{'adapter':>9}{'retained':>10}"]
    for name, row in result["tasks"].items():
        kept = "-" if row["retained"] is None else f"{row['retained']:.1%}"
        lines.append(
            f"{name:<{w}}{row['metric']:<{m}}{row['base']:>8.3f}{row['adapter']:>9.3f}{kept:>10}"
        )
    if result["min_retained"] is not None:
        lines.append(
            f"retained: min {result['min_retained']:.1%}, mean {result['mean_retained']:.1%} "
            "(quality = score, or 1 - WER)"
        )
    return "\n".join(lines)
