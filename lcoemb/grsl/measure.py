"""Both axes of the Generation-Representation Scaling Law, measured on a backbone.

* **Generation**: the backbone's own ``generate`` on held-out generated data — caption exact
  match on scenes, OCR character accuracy (1 − CER) on rendered text, and ASR word error rate
  on espeak-ng speech where the backbone takes audio. The single ``generation`` score is the
  mean of caption accuracy, OCR accuracy and 1 − WER (clipped to [0, 1]) over those measured.
  Caption exact match presumes the project's caption wording (``"two red circles on the
  left"``), which LCO-Mini learns in stage 1; OCR and ASR scores are meaningful for any model.
* **Representation**: the offline benchmark's mean main score (``lcoemb eval --benchmark
  offline``) after an identical, short text-only LCO training run (the quickstart's budget), or
  with given adapters.

:func:`measure` writes ``scores.csv`` (``model,generation,representation``) for
:func:`lcoemb.grsl.fit.fit_file`, and ``measure.json`` with every sub-score.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the generation tasks scored per modality (from :data:`lcoemb.mini.pretrain.TASKS`)
GENERATION_TASKS = {"image": ("scene", "ocr"), "audio": ("speech",)}


def _normalise(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def generation_scores(encoder: Any, n: int = 100, tasks: list[str] | None = None) -> dict:
    """Held-out generation quality: caption/clip/digit exact match, OCR character accuracy
    (1 − CER) and ASR word error rate, each on ``n`` test-split samples per task."""
    import jiwer

    from lcoemb.mini.data import dataset
    from lcoemb.mini.pretrain import TASKS, to_item

    scores: dict[str, Any] = {}
    for task in tasks or list(TASKS):
        modality, instruction = TASKS[task]
        samples = dataset(task, "test", n)
        outputs = encoder.generate(
            [to_item(s, modality) for s in samples], "\n" + instruction, max_new_tokens=16
        )
        refs = [_normalise(s.text) for s in samples]
        hyps = [_normalise(o) for o in outputs]
        if task == "ocr":
            scores["ocr_char_accuracy"] = max(0.0, 1 - jiwer.cer(refs, hyps))
        elif task == "speech":
            scores["asr_wer"] = jiwer.wer(refs, [h or "<empty>" for h in hyps])
        else:
            scores[f"{task}_exact_match"] = float(np.mean([r == h for r, h in zip(refs, hyps)]))
        scores[f"{task}_examples"] = [  # a few, so a reader can see what the model says
            {"reference": s.text, "generated": o} for s, o in zip(samples[:3], outputs[:3])
        ]
    return scores


def generation_score(scores: dict[str, Any]) -> float:
    """One number from :func:`generation_scores`: mean of caption exact match, OCR character
    accuracy and 1 − ASR WER (clipped), over those present."""
    parts = []
    if "scene_exact_match" in scores:
        parts.append(scores["scene_exact_match"])
    if "ocr_char_accuracy" in scores:
        parts.append(scores["ocr_char_accuracy"])
    if "asr_wer" in scores:
        parts.append(1.0 - min(1.0, scores["asr_wer"]))
    if not parts:
        raise ValueError("no generation score to combine (need scene, ocr or speech scores)")
    return float(np.mean(parts))


def measure(
    models: Sequence[str],
    output: str | os.PathLike[str],
    *,
    adapters: Sequence[str] | None = None,
    train_steps: int = 60,
    n_generation: int = 50,
    offline_size: int | None = None,
) -> dict[str, Any]:
    """Measure generation and representation for each model; write ``scores.csv`` and
    ``measure.json`` under ``output``, and fit the law when there are at least 3 models."""
    from lcoemb.encoder import OmniEncoder
    from lcoemb.evaluation import MTEBEncoder, evaluate, model_name, offline_tasks
    from lcoemb.mini.quickstart import QuickstartConfig, train_text_adapter
    from lcoemb.mini.registry import resolve

    if adapters is not None and len(adapters) != len(models):
        raise ValueError(f"give one adapter per model: {len(models)} models, {len(adapters)}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i, model in enumerate(models):
        name = model_name(model)
        folder = out / name.replace("/", "__")
        embedded = resolve(model)
        base = str(embedded[0]) if embedded else model
        encoder = OmniEncoder.from_pretrained(base)
        tasks = [t for m in sorted(encoder.modalities) for t in GENERATION_TASKS.get(m, ())]
        print(f"[{name}] generation: {', '.join(tasks)} on {n_generation} items each")
        gen = generation_scores(encoder, n_generation, tasks)
        if adapters is not None:
            adapter = adapters[i]
        else:
            print(f"[{name}] text-only LCO training, {train_steps} steps")
            config = QuickstartConfig(steps=train_steps)
            adapter = str(train_text_adapter(base, folder, config).adapter)
        trained = OmniEncoder.from_pretrained(base, adapter=adapter)
        print(f"[{name}] representation: offline benchmark")
        summary = evaluate(
            MTEBEncoder(trained, name, adapter=adapter),
            offline_tasks(size=offline_size),
            folder / "eval",
        )
        rows.append(
            {
                "model": model,
                "generation": generation_score(gen),
                "representation": summary["mean"],
                "generation_scores": {k: v for k, v in gen.items() if not k.endswith("_examples")},
                "representation_by_type": summary["by_type"],
                "adapter": adapter,
            }
        )
    with (out / "scores.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "generation", "representation"])
        for row in rows:
            writer.writerow([row["model"], row["generation"], row["representation"]])
    report: dict[str, Any] = {"models": rows}
    if len(rows) >= 3:
        from lcoemb.grsl.fit import fit_file

        report["fit"] = fit_file(out / "scores.csv", out)
    (out / "measure.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
