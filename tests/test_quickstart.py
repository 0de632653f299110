"""The embedded defaults load offline, and `lcoemb quickstart` runs end to end on them (with a
tiny budget here; the real run's numbers are in README and docs/results/)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lcoemb import OmniEncoder
from lcoemb.cli import main

pytestmark = pytest.mark.slow


def test_embedded_models_load_and_differ():
    base = OmniEncoder.from_pretrained("lco-mini-base")
    lco = OmniEncoder.from_pretrained("lco-mini")
    assert lco.peft_model is not None and base.peft_model is None
    texts = ["a red circle on the left", "two blue squares at the top"]
    a, b = base.encode(texts), lco.encode(texts)
    assert a.shape == b.shape == (2, 576)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-2)
    assert (a * b).sum(1).max() < 0.99  # the adapter changes the vectors


def test_training_from_lco_mini_is_refused(tmp_path):
    from lcoemb.config import TrainConfig
    from lcoemb.training.trainer import train

    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"anchor": "a", "positive": "b"}) + "\n")
    with pytest.raises(ValueError, match="train from its base"):
        train(TrainConfig(model="lco-mini", data=[str(data)], output=str(tmp_path / "o")))


def test_quickstart_end_to_end_with_a_tiny_budget(tmp_path, capsys):
    from lcoemb.config import QuickstartConfig
    from lcoemb.recipes.quickstart import quickstart

    out = tmp_path / "qs"
    report = quickstart(
        QuickstartConfig(
            output=str(out),
            max_steps=2,
            batch_size=4,
            n_triplets=16,
            n_eval=6,
            n_ood=4,
            n_analysis=8,
            k=3,
        )
    )
    printed = capsys.readouterr().out
    assert "image→text" in printed and "anisotropy image" in printed
    for name in ("report.json", "table.txt", "retrieval.png", "anisotropy.png", "mutual_knn.png"):
        assert (out / name).is_file(), name
    assert set(report["base"]) == set(report["trained"])
    assert {"image→text", "OCR text→image", "audio→text", "video→text"} <= set(report["base"])
    ood = {f"OOD {name}→text" for name in ("image", "OCR", "speech", "video")}
    assert ood <= set(report["base"]) and "OOD speech→text" in printed
    assert (out / "lco" / "adapter" / "adapter_config.json").is_file()
    assert report["space"]["trained"]["layers"][-1] == report["space"]["base"]["layers"][-1]
    # the readings it cached for the trained model are forgotten, the cache off again
    from lcoemb.mini.reader import load_text_reader

    shared = load_text_reader()
    assert shared.cache_size is None and not shared._cache


def test_cli_default_model_is_lco_mini(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"text": "a red circle"}) + "\n")
    assert main(["encode", "--input", str(items), "--output", str(tmp_path / "v.npy")]) == 0
    vectors = np.load(tmp_path / "v.npy")
    expected = OmniEncoder.from_pretrained("lco-mini").encode(["a red circle"])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


@pytest.mark.parametrize("corpus", ["general", "wordnet", "in-domain"])
def test_every_text_corpus_writes_triplets(tmp_path, corpus):
    """The general and wordnet corpora are open text (no closed-grammar caption parses among
    these anchors), the in-domain one is the evaluation's grammar; all write complete
    anchor/positive/negative lines."""
    from lcoemb.recipes.quickstart import write_text_triplets
    from lcoemb.synthetic import parse_description

    path = write_text_triplets(tmp_path / "t.jsonl", 20, corpus)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20
    assert all(r["anchor"] and r["positive"] and r["negative"] for r in rows)
    parsed = sum(bool(parse_description(r["anchor"])) for r in rows)
    assert parsed == (20 if corpus == "in-domain" else 0)


def test_unknown_corpus_is_refused():
    from lcoemb.config import QuickstartConfig

    with pytest.raises(ValueError, match="corpus must be general, wordnet or in-domain"):
        QuickstartConfig(corpus="nli")


def test_shipped_adapter_is_the_quickstarts_recipe():
    """``lco-mini``'s adapter is what ``lcoemb quickstart`` trains with its defaults: LoRA on
    the attention projections only, rank 16, alpha 32; each config gets its own target list."""
    from lcoemb.config import QUICKSTART_LORA_TARGETS, QuickstartConfig
    from lcoemb.mini.registry import WEIGHTS_DIR

    config, other = QuickstartConfig(), QuickstartConfig()
    assert config.lora_targets == list(QUICKSTART_LORA_TARGETS)
    assert QUICKSTART_LORA_TARGETS == ("q_proj", "k_proj", "v_proj", "o_proj")
    config.lora_targets.append("gate_proj")
    assert other.lora_targets == list(QUICKSTART_LORA_TARGETS)  # not a shared default list
    shipped = json.loads((WEIGHTS_DIR / "lco" / "adapter_config.json").read_text())
    assert sorted(shipped["target_modules"]) == sorted(QUICKSTART_LORA_TARGETS)
    assert (shipped["r"], shipped["lora_alpha"]) == (other.lora_r, other.lora_alpha) == (16, 32)
