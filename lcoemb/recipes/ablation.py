"""``lcoemb mini ablation``: the paper's calibration ablation at LCO-Mini's scale.

The paper trains its LoRA adapter on text alone and reports what multimodal training data would
have bought instead: text-only, text mixed about 80/20 with multimodal calibration pairs,
multimodal pairs alone, and no training. This recipe runs those four variants from one
generative-stage base (``lco-mini-base`` by default), every trained one on the quickstart's
budget (:class:`~lcoemb.config.QuickstartConfig`'s steps, batch and LoRA), so that the only
difference between them is the data:

* **text-only**: the quickstart's general text triplets
  (:func:`lcoemb.recipes.quickstart.write_text_triplets`);
* **mix**: those and the calibration pairs mixed by ratio (``--mix text:0.8 calib:0.2``);
* **multimodal-only**: the calibration pairs alone;
* **none**: the base as it is.

Calibration pairs (:func:`write_calibration_triplets`) are drawn from the **train** split of
stage-1 generators (the wider scene and clip grammars, open-vocabulary OCR words and speech by
default): the anchor is a caption or transcript, the positive its image, speech or clip, the
negative another sample's media of the same generator. The out-of-distribution sets
(:data:`lcoemb.synthetic.OOD_SETS`) hold out exactly those generators' words, sentences,
wordings, fonts and voices, so the OOD columns measure transfer, not memorised pairs.

Each variant is scored on in-distribution retrieval
(:func:`~lcoemb.evaluation.retrieval.evaluate_retrieval`), on the OOD sets
(:func:`~lcoemb.evaluation.retrieval.evaluate_ood`) and, when trained, on how much of the
base's generation its adapter keeps (:func:`~lcoemb.evaluation.generation.generation_retained`).
``ablation.json`` holds every score; ``ablation.md`` the table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lcoemb.config import AblationConfig
from lcoemb.encoder import OmniEncoder
from lcoemb.evaluation.generation import generation_retained
from lcoemb.evaluation.retrieval import evaluate_ood, evaluate_retrieval
from lcoemb.mini.reader import reading_cache
from lcoemb.mini.registry import backbone_path
from lcoemb.recipes.quickstart import write_text_triplets
from lcoemb.synthetic import OOD_SETS, TASKS, AnySample, AudioSample, ClipSample, dataset, mp4_bytes
from lcoemb.training.trainer import train

#: The file each modality's media is written as: what the triplet JSONL points at.
MEDIA_SUFFIX = {"image": ".png", "audio": ".wav", "video": ".mp4"}


def _write_media(sample: AnySample, path: Path) -> None:
    """The sample's media as a file the trainer reads back: PNG, 16-bit WAV or H.264 mp4
    (near-lossless, at the clip's own fps, so the encoder samples it as it samples any video)."""
    if isinstance(sample, AudioSample):
        sf.write(path, sample.wave, sample.sampling_rate)
    elif isinstance(sample, ClipSample):
        path.write_bytes(mp4_bytes(sample.frames, sample.fps))
    else:
        sample.image.save(path)


def write_calibration_triplets(
    path: Path, n: int, tasks: Sequence[str], split: str = "train"
) -> Path:
    """``n`` multimodal calibration triplets as the trainer's JSONL, shared out evenly over
    ``tasks`` (generators of :data:`lcoemb.synthetic.TASKS`), from their ``split``.

    Each line is ``{"anchor": TEXT, "positive": {MODALITY: FILE}, "negative": {MODALITY:
    FILE}}``: the sample's caption or transcript, its own media, and the media of the next
    sample of the same generator whose text differs (captions can repeat), so the negative is
    the same modality and only the content tells them apart. ``negative`` is left out when a
    generator contributes a single sample. Media files go in ``path``'s sibling folder named
    after its stem (``calibration.jsonl`` → ``calibration/``), one subfolder per modality, and
    the lines name them relative to ``path``'s folder, where the trainer resolves them."""
    media_dir = path.with_suffix("")
    counts = [n // len(tasks) + (i < n % len(tasks)) for i in range(len(tasks))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for name, count in zip(tasks, counts):
            modality = TASKS[name].modality
            (media_dir / modality).mkdir(parents=True, exist_ok=True)
            samples = dataset(name, split, count)
            files = []
            for i, sample in enumerate(samples):
                file = media_dir / modality / f"{name}-{i:05d}{MEDIA_SUFFIX[modality]}"
                _write_media(sample, file)
                files.append(file.relative_to(path.parent).as_posix())
            for i, sample in enumerate(samples):
                line: dict[str, Any] = {"anchor": sample.text, "positive": {modality: files[i]}}
                after = ((i + k) % count for k in range(1, count))
                other = next((j for j in after if samples[j].text != sample.text), None)
                if other is not None:
                    line["negative"] = {modality: files[other]}
                f.write(json.dumps(line) + "\n")
    return path


def _label(variant: str, config: AblationConfig) -> str:
    """The variant as the table names it: the mix with its ratio (``mix 80/20``)."""
    if variant != "mix":
        return variant
    share = round(100 * config.multimodal_weight)
    return f"mix {100 - share}/{share}"


def _training_data(variant: str, text: Path, calibration: Path, config: AblationConfig) -> dict:
    """The training data of a trained variant as :class:`~lcoemb.config.TrainConfig` fields."""
    if variant == "text-only":
        return {"data": [str(text)]}
    if variant == "multimodal-only":
        return {"data": [str(calibration)]}
    w = config.multimodal_weight
    return {"mix": [f"{text}:{1 - w:g}", f"{calibration}:{w:g}"]}


def summarize(scores: dict[str, dict]) -> dict[str, Any]:
    """The table's numbers from one variant's retrieval scores: the mean R@1 over the
    in-distribution rows, each OOD set's R@1 (mean of media→text and text→media) and their
    mean."""
    ood_rows = {row for s in OOD_SETS.values() for row in s.retrieval}
    in_dist = [v["R@1"] for row, v in scores.items() if row not in ood_rows]
    ood = {
        name: float(np.mean([scores[row]["R@1"] for row in s.retrieval]))
        for name, s in OOD_SETS.items()
    }
    return {
        "in_distribution_r1": float(np.mean(in_dist)),
        "ood_r1": ood,
        "ood_mean_r1": float(np.mean(list(ood.values()))),
    }


def format_table(report: dict[str, Any]) -> str:
    """``ablation.md``'s table: one row per variant, R@1 columns, generation kept, training
    time."""

    def number(value: float | None, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    head = ["variant", "in-dist. R@1", *[f"OOD {n} R@1" for n in OOD_SETS], "OOD mean R@1"]
    head += ["gen. kept min", "gen. kept mean", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in report["variants"].values():
        generation = row["generation"] or {}
        cells = [
            row["label"],
            number(row["in_distribution_r1"]),
            *[number(row["ood_r1"][n]) for n in OOD_SETS],
            number(row["ood_mean_r1"]),
            number(generation.get("min_retained"), ".0%"),
            number(generation.get("mean_retained"), ".0%"),
            number(row["training_seconds"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(report: dict[str, Any], table: str) -> str:
    """The table with the sentence a reader needs to read it."""
    c = report["config"]
    return (
        f"# Calibration ablation on {c['model']}\n\n"
        f"Each trained variant: {c['max_steps']} steps of {c['batch_size']} triplets, LoRA "
        f"r={c['lora_r']}, lr {c['lr']:g}, seed {c['seed']}. R@1 in-distribution: mean over "
        f"the test split's retrieval rows ({c['n_eval']} items each); OOD: mean of media→text "
        f"and text→media among {c['n_ood']} candidates. Generation kept: adapter quality / "
        f"base quality over the generation tasks ({c['n_generation']} samples each), min and "
        f"mean.\n\n{table}\n"
    )


def ablation(config: AblationConfig) -> dict[str, Any]:
    """Write the data, train and evaluate every variant of ``config.variants`` as the module
    says; print the table, write ``ablation.json`` and ``ablation.md`` under ``config.output``
    and return the report."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    base_path = backbone_path(config.model)
    trained = [v for v in config.variants if v != "none"]
    text = out / "text_triplets.jsonl"
    calibration = out / "calibration.jsonl"
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    print(f"[1/3] writing the training data for {', '.join(trained) or 'no trained variant'}")
    if {"text-only", "mix"} & set(trained):
        write_text_triplets(text, config.n_triplets, config.corpus)
    if {"mix", "multimodal-only"} & set(trained):
        write_calibration_triplets(calibration, config.n_multimodal, config.calibration_tasks)
    seconds["data"] = time.perf_counter() - t0

    rows: dict[str, dict[str, Any]] = {}
    # every variant reads the same images with the same frozen reader: the ~500 calibration
    # images of the default run (scenes and words), 180 for evaluation and a few for generation
    # fit in the cache, so no variant evicts what the next one reads
    with reading_cache(max_images=1024):
        for i, variant in enumerate(config.variants, 1):
            print(f"[2/3] variant {i}/{len(config.variants)}: {_label(variant, config)}")
            row: dict[str, Any] = {"label": _label(variant, config), "training_seconds": None}
            adapter = None
            if variant != "none":
                t0 = time.perf_counter()
                result = train(
                    config.train_config(
                        model=base_path,
                        output=str(out / "runs" / variant),
                        **_training_data(variant, text, calibration, config),
                    )
                )
                row["training_seconds"] = time.perf_counter() - t0
                row["final_loss"] = result.final_loss
                row["adapter"] = str(result.adapter)
                adapter = result.adapter
            encoder = OmniEncoder.from_pretrained(base_path, adapter=adapter, device=config.device)
            row["retrieval"] = evaluate_retrieval(encoder, config.n_eval) | evaluate_ood(
                encoder, config.n_ood
            )
            row |= summarize(row["retrieval"])
            row["generation"] = (
                None
                if adapter is None
                else generation_retained(encoder, config.n_generation, config.generation_tasks)
            )
            rows[variant] = row

    print("[3/3] results")
    report = {"config": vars(config), "variants": rows, "seconds": seconds}
    table = format_table(report)
    print(table)
    (out / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ablation.md").write_text(_markdown(report, table))
    print(f"\nwrote {out / 'ablation.json'} and {out / 'ablation.md'}")
    return report
