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

from lcoemb.synthetic import TASKS, Task, as_input, dataset


def normalise(text: str) -> str:
    """Lower case, letters, digits and single spaces only: how answers are compared."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def score_key(task: Task) -> str:
    """The key of ``task``'s score in :func:`generation_scores`' result."""
    if task.metric == "wer":
        return "asr_wer"
    return f"{task.name}_{task.metric}"


def generation_scores(encoder: Any, n: int = 100, tasks: list[str] | None = None) -> dict:
    """Held-out generation quality of ``tasks`` (default: all), each on ``n`` test-split samples:
    ``scene_exact_match``, ``ocr_char_accuracy``, ``digit_exact_match``, ``asr_wer``,
    ``clip_exact_match``, and ``<task>_examples`` (three references with what the model said).
    Clips pass all their frames, as stage 1 saw them."""
    scores: dict[str, Any] = {}
    for name in tasks or list(TASKS):
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
