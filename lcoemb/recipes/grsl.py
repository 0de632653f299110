"""``lcoemb grsl measure``: both axes of the Generation-Representation Scaling Law, measured on
a backbone (the law itself, its fit and bound, is :mod:`lcoemb.grsl`).

* **Generation**: the backbone's own ``generate`` on held-out generated data
  (:func:`lcoemb.evaluation.generation.generation_scores` on the tasks of
  :data:`lcoemb.synthetic.TASKS` marked ``grsl``) — caption exact match on scenes, OCR character
  accuracy (1 − CER) on rendered text, and ASR word error rate on espeak-ng speech where the
  backbone takes audio. The single ``generation`` score is the mean of caption accuracy, OCR
  accuracy and 1 − WER (clipped to [0, 1]) over those measured.
  Caption exact match presumes the project's caption wording (``"two red circles on the
  left"``), which LCO-Mini learns in stage 1; OCR and ASR scores are meaningful for any model.
* **Representation**: the offline benchmark's mean main score (``lcoemb eval --benchmark
  offline``) after an identical, short text-only LCO training run (the quickstart's budget,
  :func:`lcoemb.recipes.quickstart.train_text_adapter`), or with given adapters.

:func:`measure` writes ``scores.csv`` (``model,generation,representation``, and ``budget``
when the models are budgets and seeds of one recipe) for :func:`lcoemb.grsl.fit.fit_file`, and
``measure.json`` with every sub-score.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcoemb.config import QuickstartConfig
from lcoemb.encoder import OmniEncoder
from lcoemb.evaluation.generation import generation_scores, score_key
from lcoemb.grsl.fit import fit_file
from lcoemb.mini.reader import reading_cache
from lcoemb.mini.registry import backbone_path
from lcoemb.recipes.quickstart import train_text_adapter
from lcoemb.synthetic import TASKS


def grsl_tasks(modalities: Sequence[str]) -> list[str]:
    """The tasks whose generation scores enter the law for a model taking ``modalities``:
    those of :data:`lcoemb.synthetic.TASKS` marked ``grsl``, by sorted modality."""
    return [
        t.name for m in sorted(modalities) for t in TASKS.values() if t.grsl and t.modality == m
    ]


def generation_score(scores: dict[str, Any]) -> float:
    """One number from :func:`~lcoemb.evaluation.generation.generation_scores`: the mean, over
    the ``grsl`` tasks present, of caption exact match, OCR character accuracy and 1 − ASR WER
    (clipped)."""
    parts = []
    for task in TASKS.values():
        key = score_key(task)
        if task.grsl and key in scores:
            parts.append(1.0 - min(1.0, scores[key]) if task.metric == "wer" else scores[key])
    if not parts:
        raise ValueError("no generation score to combine (need scene, ocr or speech scores)")
    return float(np.mean(parts))


#: a measured model's row, in its folder, for reruns to reuse
ROW_FILE = "row.json"


def _finished_row(folder: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The row a model's folder holds from an earlier run with the same ``settings``, or None
    (none yet, unreadable, or measured with other settings)."""
    try:
        saved = json.loads((folder / ROW_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved["row"] if saved.get("settings") == settings else None


def measure(
    models: Sequence[str],
    output: str | os.PathLike[str],
    *,
    adapters: Sequence[str] | None = None,
    budgets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    train_steps: int = 60,
    lora_targets: Sequence[str] | None = None,
    n_generation: int = 50,
    offline_size: int | None = None,
) -> dict[str, Any]:
    """Measure generation and representation for each model; write ``scores.csv`` and
    ``measure.json`` under ``output``, and fit the law when there are at least 3 models.

    ``budgets`` (one per model) marks models that are seeds of one configuration, such as
    stage-1 runs of one length: the fit then reports each budget's mean and spread and
    bootstraps seeds within budgets (:func:`lcoemb.grsl.fit.fit_file`).

    ``seeds`` repeats each model's text-only LCO training once per seed (data order, LoRA
    initialisation, dropout), one row each: the spread of the representation axis for one
    backbone. Generation is the backbone's own (greedy, on fixed held-out items), so it is
    measured once per model and shared by its seeds. A model's seeds share a budget: its
    entry in ``budgets``, else the model itself. ``lora_targets`` overrides the text-only
    training's LoRA targets (:class:`~lcoemb.config.QuickstartConfig`'s by default).

    Each model works in its own folder ``output/<index>-<name>`` (checkpoints of different runs
    often share a folder name, such as ``step-100``), each seed in ``seed-<seed>`` below it,
    and leaves its row there as ``row.json``. A rerun into the same ``output`` reuses a row
    when it was measured with the same model, adapter, seed and settings, so an interrupted
    measurement of many backbones continues where it stopped; any other row there is measured
    again."""
    # mteb is an optional dependency (lcoemb[eval]): imported only when a measurement runs
    from lcoemb.evaluation import MTEBEncoder, evaluate, model_name, offline_tasks

    if adapters is not None and len(adapters) != len(models):
        raise ValueError(f"give one adapter per model: {len(models)} models, {len(adapters)}")
    if budgets is not None and len(budgets) != len(models):
        raise ValueError(f"give one budget per model: {len(models)} models, {len(budgets)}")
    if seeds is not None and adapters is not None:
        raise ValueError("seeds repeat the text-only training, which given adapters skip")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {list(seeds)}")
    # the training's overrides of QuickstartConfig, recorded in each row's settings only when
    # given, so rows measured before an option existed stay reusable
    training = {} if lora_targets is None else {"lora_targets": list(lora_targets)}
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    # LCO-Mini checkpoints (stage-1 budgets, seeds) all read with one frozen reader: each image
    # of the offline benchmark and the generation tasks is detected once, not once per row
    # (the benchmark's ~1,000 images fit); models that do not read load nothing for it
    with reading_cache(max_images=2048):
        for i, model in enumerate(models):
            name = model_name(model)
            folder = out / f"{i:02d}-{name.rsplit('/', 1)[-1]}"
            budget = budgets[i] if budgets is not None else None
            if seeds is not None and budget is None:
                budget = os.fspath(model)
            gen: dict[str, Any] | None = None  # measured once, shared by the model's seeds
            for seed in seeds if seeds is not None else [None]:
                run = folder if seed is None else folder / f"seed-{seed}"
                settings = {
                    "model": os.fspath(model),
                    "adapter": os.fspath(adapters[i]) if adapters is not None else None,
                    "train_steps": train_steps,
                    **training,
                    "n_generation": n_generation,
                    "offline_size": offline_size,
                } | ({} if seed is None else {"seed": seed})
                done = _finished_row(run, settings)
                if done is not None:
                    print(f"[{name}] measured before: {run / ROW_FILE}")
                    rows.append(done | {"budget": budget})
                    gen = gen or done["generation_scores"]
                    continue
                base = backbone_path(model)
                if gen is None:
                    encoder = OmniEncoder.from_pretrained(base)
                    tasks = grsl_tasks(encoder.modalities)
                    print(f"[{name}] generation: {', '.join(tasks)} on {n_generation} items each")
                    scores = generation_scores(encoder, n_generation, tasks)
                    gen = {k: v for k, v in scores.items() if not k.endswith("_examples")}
                    del encoder
                if adapters is not None:
                    adapter = adapters[i]
                else:
                    seeded = "" if seed is None else f", seed {seed}"
                    print(f"[{name}] text-only LCO training, {train_steps} steps{seeded}")
                    seeding = {} if seed is None else {"seed": seed}
                    config = QuickstartConfig(max_steps=train_steps, **seeding, **training)
                    adapter = str(train_text_adapter(base, run, config).adapter)
                trained = OmniEncoder.from_pretrained(base, adapter=adapter)
                print(f"[{name}] representation: offline benchmark")
                summary = evaluate(
                    MTEBEncoder(trained, name, adapter=adapter),
                    offline_tasks(size=offline_size),
                    run / "eval",
                )
                rows.append(
                    {
                        "model": model,
                        "budget": budget,
                        "seed": seed,
                        "generation": generation_score(gen),
                        "representation": summary["mean"],
                        "generation_scores": gen,
                        "representation_by_type": summary["by_type"],
                        "adapter": adapter,
                    }
                )
                run.mkdir(parents=True, exist_ok=True)
                (run / ROW_FILE).write_text(json.dumps({"settings": settings, "row": rows[-1]}))
    columns = ["model", "generation", "representation"]
    columns += (["budget"] if budgets is not None or seeds is not None else []) + (
        ["seed"] if seeds is not None else []
    )
    with (out / "scores.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    report: dict[str, Any] = {"models": rows}
    if len(rows) >= 3:
        report["fit"] = fit_file(out / "scores.csv", out)
    (out / "measure.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
