"""`lcoemb mini ablation`: the calibration data is what the trainer reads and shares nothing
with the out-of-distribution sets, and the variants run end to end on the real
``lco-mini-base`` (with a tiny budget here; the real run's table is in docs/results/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from lcoemb import OmniEncoder
from lcoemb.cli import build_parser
from lcoemb.config import ABLATION_VARIANTS, AblationConfig, given_settings
from lcoemb.evaluation.retrieval import evaluate_ood, evaluate_retrieval
from lcoemb.inputs import Audio, ImageRef, Video
from lcoemb.mini.reader import load_text_reader
from lcoemb.mini.registry import backbone_path
from lcoemb.recipes.ablation import ablation, write_calibration_triplets
from lcoemb.synthetic import OOD_SETS
from lcoemb.training.data import load_triplets

TASKS = ["scene_wide", "words", "utterance", "clip_wide"]
MEDIA = {"scene_wide": ImageRef, "words": ImageRef, "utterance": Audio, "clip_wide": Video}
#: the tiny budget: every variant trains 2 steps of 4 and is scored on few items. Three of the
#: four variants run (a model load, training and scoring each, the bulk of this file's time):
#: multimodal-only is the calibration half of ``mix`` alone, the same code path.
TESTED_VARIANTS = ["none", "text-only", "mix"]
TINY = dict(
    variants=TESTED_VARIANTS,
    max_steps=2,
    batch_size=4,
    n_triplets=8,
    n_multimodal=8,
    n_eval=2,
    n_ood=2,
    n_generation=1,
    generation_tasks=["scene"],
)


def test_calibration_triplets_are_text_to_media_the_trainer_reads(tmp_path):
    path = write_calibration_triplets(tmp_path / "calibration.jsonl", 10, TASKS)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 10
    for row in rows:
        assert isinstance(row["anchor"], str) and row["anchor"].strip()
        for role in ("positive", "negative"):
            ((modality, file),) = row[role].items()
            assert (tmp_path / file).is_file() and file.startswith("calibration/" + modality)
        assert row["positive"] != row["negative"]
    triplets = load_triplets(path).triplets
    assert len(triplets) == 10
    kinds = [type(t.positive) for t in triplets]
    # 10 over 4 generators: 3, 3, 2, 2, in order
    assert kinds == [MEDIA[t] for t, n in zip(TASKS, (3, 3, 2, 2)) for _ in range(n)]
    assert all(type(t.negative) is type(t.positive) for t in triplets)


def test_calibration_texts_are_not_out_of_distribution_texts(tmp_path):
    path = write_calibration_triplets(tmp_path / "calibration.jsonl", 80, TASKS)
    calibration = {json.loads(line)["anchor"] for line in path.read_text().splitlines()}
    ood = {s.text for ood_set in OOD_SETS.values() for s in ood_set.samples(40)}
    assert len(calibration) > 60 and len(ood) == 160
    assert not calibration & ood


def test_the_command_line_maps_onto_ablation_config():
    argv = "mini ablation --output o --base b --steps 3 --variants none mix --n-generation 2"
    args = build_parser().parse_args(argv.split())
    config = AblationConfig(**given_settings(AblationConfig, args))
    assert (config.output, config.model, config.max_steps) == ("o", "b", 3)
    assert config.variants == ["none", "mix"] and config.n_generation == 2
    assert config.batch_size == AblationConfig().batch_size  # the quickstart's budget
    with pytest.raises(ValueError, match="variants must be among"):
        AblationConfig(variants=["text"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return out, ablation(AblationConfig(output=str(out), **TINY))


@pytest.mark.slow
def test_every_variant_is_trained_scored_and_tabled(report):
    out, result = report
    assert json.loads((out / "ablation.json").read_text()) == json.loads(json.dumps(result))
    assert list(result["variants"]) == TESTED_VARIANTS
    assert set(TESTED_VARIANTS) < set(ABLATION_VARIANTS)
    table = (out / "ablation.md").read_text()
    for name, row in result["variants"].items():
        assert f"| {row['label']} |" in table
        assert {"image→text", "audio→text", "OOD speech→text", "OOD text→video"} <= set(
            row["retrieval"]
        )
        assert set(row["ood_r1"]) == set(OOD_SETS)
        assert 0 <= row["in_distribution_r1"] <= 1 and 0 <= row["ood_mean_r1"] <= 1
        if name == "none":
            assert row["generation"] is None and row["training_seconds"] is None
        else:
            assert row["generation"]["n"] == 1 and row["training_seconds"] > 0
    assert "| mix 80/20 |" in table
    shared = load_text_reader()  # the variants shared its readings; now forgotten, cache off
    assert shared.cache_size is None and not shared._cache


@pytest.mark.slow
def test_none_is_the_base_and_the_trained_adapters_differ(report):
    _, result = report
    base = OmniEncoder.from_pretrained(backbone_path("lco-mini-base"), device="cpu")
    scores = evaluate_retrieval(base, TINY["n_eval"]) | evaluate_ood(base, TINY["n_ood"])
    assert result["variants"]["none"]["retrieval"] == scores
    weights = [
        load_file(Path(result["variants"][v]["adapter"]) / "adapter_model.safetensors")
        for v in ("text-only", "mix")
    ]
    for i, a in enumerate(weights):
        for b in weights[i + 1 :]:
            assert a.keys() == b.keys()
            assert any(not (a[k] == b[k]).all() for k in a)
