"""`lcoemb analyze` and `lcoemb grsl` on a tiny random model: per-layer anisotropy and
alignment, their agreement with the encoder's own vectors, pairs-file errors, plots, and the
GRSL measurement loop."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from lcoemb import InputError, OmniEncoder
from lcoemb.analysis.metrics import anisotropy
from lcoemb.analysis.space import analyze, offline_pairs, parse_layers, read_pairs
from lcoemb.cli import main
from lcoemb.recipes.grsl import measure

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder32(omni_path):
    return OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def pairs():
    return offline_pairs(12)


def test_final_layer_matches_the_encoder_vectors(encoder32, pairs):
    result = analyze(encoder32, pairs, k=3, alignment=["mutual_knn", "cka", "cknna"])
    n_layers = encoder32.backbone.num_layers + 1
    assert result["layers"] == list(range(n_layers))
    for modality, items in pairs.media.items():
        vectors = encoder32.encode(items)
        assert result["anisotropy"][modality][-1] == pytest.approx(anisotropy(vectors), abs=1e-5)
        assert len(result["anisotropy"][modality]) == n_layers
    texts = [t for m in pairs.media for t in pairs.texts[m]]
    assert result["anisotropy"]["text"][-1] == pytest.approx(
        anisotropy(encoder32.encode(texts)), abs=1e-5
    )
    assert set(result["mutual_knn"]) == {"image-text", "audio-text", "video-text"}
    for values in result["mutual_knn"].values():
        assert all(v is None or 0.0 <= v <= 1.0 for v in values)
    assert set(result["cka"]) == set(result["cknna"]) == set(result["mutual_knn"])
    # layer 0: every item ends on the same prompt token, so alignment is undefined, not 1
    assert result["anisotropy"]["text"][0] == pytest.approx(1.0)
    assert all(values[0] is None for values in result["mutual_knn"].values())


def test_layer_selection_always_ends_with_the_final_layer():
    assert parse_layers("all", 5) == [0, 1, 2, 3, 4]
    assert parse_layers("last", 5) == [4]
    assert parse_layers("0,2", 5) == [0, 2, 4]
    assert parse_layers("-2,1", 5) == [1, 3, 4]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("7", 5)
    with pytest.raises(ValueError, match="not a layer index"):
        parse_layers("x", 5)


def test_pairs_file(tmp_path):
    PIL.Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"text": "a red square", "image": "a.png"}\n\n')
    pairs = read_pairs(good)
    assert pairs.texts == {"image": ["a red square"]} and len(pairs) == 1

    cases = {
        '{"text": "x", "image": "a.png"}\n{"text": "y"': "pairs.jsonl:2: not valid JSON",
        '{"image": "a.png"}': "pairs.jsonl:1: a pair needs a non-empty 'text'",
        '{"text": "x", "image": "a.png", "audio": "b.wav"}': "exactly one of",
        '{"text": "x", "image": "missing.png"}': "pairs.jsonl:1: image file not found",
    }
    for body, message in cases.items():
        good.write_text(body + "\n")
        with pytest.raises(InputError, match=message):
            read_pairs(good)


def test_cli_analyze_with_comparison(omni_path, omni_adapter, tmp_path, capsys):
    out = tmp_path / "analysis"
    args = ["analyze", "--model", str(omni_path), "--pairs", "offline", "--n", "12"]
    args += ["--k", "3", "--layers", "0,1", "--output", str(out), "--dtype", "float32"]
    args += ["--compare-adapter", str(omni_adapter)]
    assert main(args) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert report["layers"][-1] == report["compare"]["layers"][-1] > 1
    assert report["anisotropy"]["image"] != report["compare"]["anisotropy"]["image"]
    assert (out / "anisotropy.png").stat().st_size > 0
    assert (out / "mutual_knn.png").stat().st_size > 0
    assert "final-layer anisotropy" in capsys.readouterr().out


def test_cli_grsl_fit(tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    with scores.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "generation", "representation"])
        for i, g in enumerate([0.1, 0.4, 0.5, 0.9]):
            w.writerow([f"m{i}", g, 0.2 + 0.5 * g])
    assert main(["grsl", "fit", "--scores", str(scores), "--output", str(tmp_path / "fit")]) == 0
    fit = json.loads((tmp_path / "fit" / "grsl.json").read_text())
    assert fit["slope"] == pytest.approx(0.5) and fit["r2"] == pytest.approx(1.0)
    assert (tmp_path / "fit" / "grsl.png").is_file()


def test_grsl_measure_with_given_adapters(omni_path, omni_adapter, tmp_path, monkeypatch, capsys):
    """Two checkpoints with the same folder name are measured apart, and a rerun reuses the
    rows already measured with the same settings."""
    monkeypatch.setenv("LCOEMB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "measure"
    twin = tmp_path / "other-run" / omni_path.name
    shutil.copytree(omni_path, twin)
    args = ["grsl", "measure", "--models", str(omni_path), str(twin), "--output", str(out)]
    args += ["--adapters", str(omni_adapter), str(omni_adapter), "--budgets", "100", "100"]
    args += ["--n-generation", "2", "--offline-size", "6"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        f"00-{omni_path.name}",
        f"01-{omni_path.name}",
    ]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["model"] for r in rows] == [str(omni_path), str(twin)]
    assert rows[0]["budget"] == "100"
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("measured before") == 2
    assert list(csv.DictReader((out / "scores.csv").open())) == rows
    assert main([*args[:-1], "8"]) == 0  # other settings: measured again
    assert "measured before" not in capsys.readouterr().out
    assert 0.0 <= float(rows[0]["generation"]) <= 1.0
    assert 0.0 <= float(rows[0]["representation"]) <= 1.0
    report = json.loads((out / "measure.json").read_text())
    assert {"scene_exact_match", "ocr_char_accuracy", "speech_wer"} <= set(
        report["models"][0]["generation_scores"]
    )
    assert np.isfinite(report["models"][0]["representation"])


def test_grsl_measure_seeds(omni_path, tmp_path, monkeypatch, capsys):
    """Seeds train one adapter each and share the model's generation, measured once; their rows
    share the model as budget, carry their seed, and a rerun reuses them."""
    monkeypatch.setenv("LCOEMB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "measure"
    args = ["grsl", "measure", "--models", str(omni_path), "--output", str(out)]
    args += ["--seeds", "0", "1", "--train-steps", "2", "--n-generation", "2"]
    args += ["--offline-size", "6"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("] generation:") == 1
    assert "seed 1" in printed
    folder = out / f"00-{omni_path.name}"
    assert sorted(p.name for p in folder.iterdir()) == ["seed-0", "seed-1"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert {r["budget"] for r in rows} == {str(omni_path)}
    assert rows[0]["generation"] == rows[1]["generation"]
    report = json.loads((out / "measure.json").read_text())
    adapters = [m["adapter"] for m in report["models"]]
    assert len(set(adapters)) == 2 and all(str(folder) in a for a in adapters)
    lora = [load_file(Path(a) / "adapter_model.safetensors") for a in adapters]
    key = next(k for k in lora[0] if "lora_A" in k)
    assert not torch.equal(lora[0][key], lora[1][key])  # the seed reached the LoRA init
    assert main(args) == 0
    assert capsys.readouterr().out.count("measured before") == 2
    targets = json.loads((Path(adapters[0]) / "adapter_config.json").read_text())
    assert {t.rsplit(".", 1)[-1] for t in targets["target_modules"]} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    }  # the quickstart's default: attention only
    narrow = tmp_path / "narrow"
    args = ["grsl", "measure", "--models", str(omni_path), "--output", str(narrow)]
    args += ["--train-steps", "1", "--n-generation", "1", "--offline-size", "6"]
    assert main([*args, "--lora-targets", "v_proj"]) == 0
    row = json.loads((narrow / "measure.json").read_text())["models"][0]
    targets = json.loads((Path(row["adapter"]) / "adapter_config.json").read_text())
    assert {t.rsplit(".", 1)[-1] for t in targets["target_modules"]} == {"v_proj"}
    with pytest.raises(ValueError, match="given adapters skip"):
        measure([str(omni_path)], out, adapters=["a"], seeds=[0])
    with pytest.raises(ValueError, match="seeds repeat"):
        measure([str(omni_path)], out, seeds=[3, 3])
