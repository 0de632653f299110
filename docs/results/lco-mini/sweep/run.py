"""The adapter sweep behind the shipped LCO adapter's settings (README, "Generation kept").

``python run.py BASE OUT LR STEPS RANK CORPUS [SEED [TARGETS]]`` (TARGETS: comma-separated
Linear names, such as ``q_proj,v_proj``; default every Linear) trains the quickstart's text-only
adapter on the stage-1 backbone BASE with those settings (everything else is the quickstart's), then
scores, with the adapter disabled and active: generation on every stage-1 task (20 test items
each), in-distribution retrieval (50 items per set) and out-of-distribution retrieval (40 items
per set). The base's scores are computed once per BASE and cached in OUT/base.json. Writes
OUT/<run>.json."""

import json
import sys
import time
from pathlib import Path

import numpy as np

from lcoemb import OmniEncoder
from lcoemb.config import QuickstartConfig
from lcoemb.evaluation.generation import generation_scores, quality, score_key
from lcoemb.evaluation.retrieval import evaluate_ood, evaluate_retrieval
from lcoemb.recipes.quickstart import train_text_adapter
from lcoemb.synthetic import TASKS

N_GENERATION, N_EVAL, N_OOD = 20, 50, 40


def scores(encoder: OmniEncoder) -> dict:
    return {
        "generation": generation_scores(encoder, N_GENERATION),
        "retrieval": evaluate_retrieval(encoder, N_EVAL),
        "ood": evaluate_ood(encoder, N_OOD),
    }


def main() -> None:
    base, out = sys.argv[1], Path(sys.argv[2])
    lr, steps, rank, corpus = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    seed = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    targets = sys.argv[8].split(",") if len(sys.argv) > 8 else []
    name = f"{corpus}-lr{sys.argv[3]}-s{steps}-r{rank}-seed{seed}"
    name += f"-{'+'.join(targets)}" if targets else ""
    out.mkdir(parents=True, exist_ok=True)
    cached = out / "base.json"
    if not cached.exists():
        cached.write_text(json.dumps(scores(OmniEncoder.from_pretrained(base, device="cpu"))))
    before = json.loads(cached.read_text())
    start = time.time()
    config = QuickstartConfig(
        output=str(out / name),
        lr=lr,
        max_steps=steps,
        lora_r=rank,
        lora_targets=targets,
        corpus=corpus,
        seed=seed,
    )
    result = train_text_adapter(base, out / name, config)
    seconds = time.time() - start
    after = scores(OmniEncoder.from_pretrained(base, adapter=result.adapter, device="cpu"))
    kept = {}
    for task in TASKS.values():
        key = score_key(task)
        b = quality(task, before["generation"][key])
        a = quality(task, after["generation"][key])
        kept[task.name] = {"base": b, "adapter": a, "kept": a / b if b > 0 else None}
    ratios = [k["kept"] for k in kept.values() if k["kept"] is not None]
    report = {
        "settings": {
            "lr": lr,
            "steps": steps,
            "rank": rank,
            "targets": targets or "all",
            "corpus": corpus,
            "seed": seed,
        },
        "train_seconds": seconds,
        "final_loss": result.final_loss,
        "generation_kept": kept,
        "mean_kept": float(np.mean(ratios)),
        "min_kept": float(np.min(ratios)),
        "retrieval": {
            k: [before["retrieval"][k]["R@1"], v["R@1"]] for k, v in after["retrieval"].items()
        },
        "ood": {k: [before["ood"][k]["R@1"], v["R@1"]] for k, v in after["ood"].items()},
    }
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    print(name, json.dumps({k: report[k] for k in ("mean_kept", "min_kept", "retrieval", "ood")}))


if __name__ == "__main__":
    main()
