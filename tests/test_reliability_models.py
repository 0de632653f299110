"""Saved and merged models give the vectors of the model they came from; normalised vectors are
unit length; Matryoshka truncation at encode time; LCO-Mini's media markers in user text."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

from lcoemb import InputError, OmniEncoder
from lcoemb.backbones import QwenOmniBackbone
from lcoemb.cli import main
from lcoemb.mini.model import LM_WEIGHTS_NAME, MARKERS
from lcoemb.mini.registry import EMBEDDED
from lcoemb.training.merge import merge_adapter

LCO_ADAPTER = EMBEDDED["lco-mini"].adapter
TEXTS = ["a red circle on a white table", "the cat sleeps on the sofa", "quarterly revenue grew"]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def lco_mini() -> OmniEncoder:
    """LCO-Mini base with the shipped LCO adapter applied at run time (the reference)."""
    return OmniEncoder.from_pretrained("lco-mini", device="cpu")


@pytest.fixture(scope="module")
def lco_vectors(lco_mini) -> np.ndarray:
    return lco_mini.encode(TEXTS)


@pytest.fixture(scope="module")
def base_vectors() -> np.ndarray:
    return OmniEncoder.from_pretrained("lco-mini-base", device="cpu").encode(TEXTS)


# ---------------------------------------------------------------------- merging LCO-Mini


def test_cli_merge_of_lco_mini_folds_the_adapter_into_its_language_model(
    lco_vectors, base_vectors, tmp_path, capsys
):
    out = tmp_path / "merged"
    code = main(
        ["merge", "--model", "lco-mini-base", "--adapter", str(LCO_ADAPTER), "--output", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["language_model_weights"] == LM_WEIGHTS_NAME
    assert (out / LM_WEIGHTS_NAME).is_file()
    merged = OmniEncoder.from_pretrained(out, device="cpu")
    assert merged.peft_model is None
    vectors = merged.encode(TEXTS)
    # the merged bf16 weights round W + ΔW once, while the unmerged adapter adds x·ΔW exactly:
    # with a small adapter (lr 1e-4) that one rounding moves the vectors by about 1e-3
    assert _cos(vectors, lco_vectors).min() > 0.998
    assert _cos(vectors, base_vectors).max() < 0.7  # the adapter is in, not lost (lco: 0.47-0.6)


def test_merge_takes_the_adapter_a_model_carries_and_refuses_a_second(lco_vectors, tmp_path):
    out = merge_adapter("lco-mini", None, tmp_path / "merged")  # in its own float32
    vectors = OmniEncoder.from_pretrained(out, device="cpu").encode(TEXTS)
    assert _cos(vectors, lco_vectors).min() > 0.998  # one bf16 rounding, as above
    with pytest.raises(ValueError, match="already carries the adapter"):
        merge_adapter("lco-mini", LCO_ADAPTER, tmp_path / "x")
    with pytest.raises(ValueError, match="carries no adapter"):
        merge_adapter("lco-mini-base", None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------- save_pretrained


def test_save_pretrained_merges_so_plain_transformers_loads_the_adapted_model(
    omni_path, omni_adapter, tmp_path
):
    adapted = OmniEncoder.from_pretrained(omni_path, adapter=omni_adapter, device="cpu")
    expected = adapted.encode(TEXTS)
    out = tmp_path / "saved"
    adapted.save_pretrained(out)
    assert not (out / "adapter").exists() and (out / "config.json").is_file()

    # the encoder now holds the merged weights: what it gives is exactly what the folder gives
    assert adapted.peft_model is None
    after = adapted.encode(TEXTS)
    assert _cos(after, expected).min() > 0.999
    reloaded = OmniEncoder.from_pretrained(out, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(reloaded, after, atol=1e-6)

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(out, dtype=torch.bfloat16)
    plain = OmniEncoder(
        QwenOmniBackbone(model.eval(), Qwen2_5OmniProcessor.from_pretrained(out), str(out))
    )
    assert _cos(plain.encode(TEXTS), expected).min() > 0.999


def test_adapter_kept_apart_on_request_is_not_a_loadable_checkpoint(
    omni_path, omni_adapter, tmp_path
):
    adapted = OmniEncoder.from_pretrained(omni_path, adapter=omni_adapter, device="cpu")
    expected = adapted.encode(TEXTS)
    out = tmp_path / "adapter-only"
    adapted.save_pretrained(out, merge=False)
    assert adapted.peft_model is not None  # nothing merged here
    assert not (out / "config.json").exists()
    assert not list(out.glob("model*.safetensors"))
    assert (out / "adapter_config.json").is_file()
    settings = json.loads((out / "lcoemb.json").read_text())
    assert settings["base"] == str(omni_path.resolve())

    reloaded = OmniEncoder.from_pretrained(out, device="cpu")
    assert reloaded.peft_model is not None
    np.testing.assert_allclose(reloaded.encode(TEXTS), expected, atol=1e-6)

    # the two layouts never share a folder: a loader would take whichever it looks for
    with pytest.raises(ValueError, match=r"already holds adapter_config\.json"):
        reloaded.save_pretrained(out)
    merged = tmp_path / "merged"
    OmniEncoder.from_pretrained(omni_path, device="cpu").save_pretrained(merged)
    with pytest.raises(ValueError, match=r"already holds config\.json"):
        reloaded.save_pretrained(merged, merge=False)
    assert not (merged / "adapter_config.json").exists()


def test_lco_mini_save_pretrained_carries_its_merged_language_model(lco_vectors, tmp_path):
    # merged in float32: a bf16 merge rounds away part of the small adapter (cosine 0.97)
    encoder = OmniEncoder.from_pretrained("lco-mini", device="cpu", dtype="float32")
    kept, merged = tmp_path / "kept", tmp_path / "merged"
    encoder.save_pretrained(kept, merge=False)
    assert json.loads((kept / "lcoemb.json").read_text())["base"] == "lco-mini-base"
    assert not (kept / "config.json").exists()
    np.testing.assert_allclose(
        OmniEncoder.from_pretrained(kept, device="cpu").encode(TEXTS), lco_vectors, atol=1e-6
    )

    encoder.save_pretrained(merged)
    assert (merged / LM_WEIGHTS_NAME).is_file()
    after = encoder.encode(TEXTS)
    assert _cos(after, lco_vectors).min() > 0.998  # one bf16 rounding, as above
    reloaded = OmniEncoder.from_pretrained(merged, device="cpu", dtype="float32")
    np.testing.assert_allclose(reloaded.encode(TEXTS), after, atol=1e-6)
    # saved again, with no adapter left to merge, the folder still carries the merged layers
    reloaded.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["language_model_weights"] == LM_WEIGHTS_NAME
    assert (tmp_path / "again" / LM_WEIGHTS_NAME).is_file()


# ---------------------------------------------------------------------- normalisation


def test_normalized_vectors_are_unit_length_in_float32(omni_encoder):
    texts = [f"sentence number {i} about {w}" for i, w in enumerate("abcdefghij")]
    norms = np.linalg.norm(omni_encoder.encode(texts).astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < 1e-6, norms


def test_dimensions_keep_the_leading_components_renormalised(omni_encoder):
    raw = omni_encoder.encode(TEXTS, normalize=False)
    np.testing.assert_array_equal(
        omni_encoder.encode(TEXTS, normalize=False, dimensions=8), raw[:, :8]
    )
    short = omni_encoder.encode(TEXTS, dimensions=8)
    assert short.shape == (len(TEXTS), 8) and short.dtype == np.float32
    assert np.abs(np.linalg.norm(short.astype(np.float64), axis=1) - 1).max() < 1e-6
    expected = raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-2)  # bf16 normalisation comes first

    # refused before any item is looked at (the bad item would raise an InputError)
    for bad in (0, omni_encoder.embedding_dim + 1):
        with pytest.raises(ValueError, match=r"dimensions must be between 1 and the model's"):
            omni_encoder.encode([object()], dimensions=bad)


def test_cli_encode_dimensions(lco_mini, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "vecs.npy"
    args = ["encode", "--model", "lco-mini", "--input", str(items), "--output", str(out)]
    assert main([*args, "--device", "cpu", "--quiet", "--dimensions", "64"]) == 0
    vectors = np.load(out)
    assert vectors.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(vectors, lco_mini.encode(TEXTS, dimensions=64), atol=1e-6)


# ---------------------------------------------------------------------- LCO-Mini markers


def test_text_holding_a_media_marker_is_an_input_error_naming_the_item(lco_mini):
    for marker in MARKERS.values():
        with pytest.raises(InputError, match=rf"item 1: .*{re.escape(marker)}") as caught:
            lco_mini.encode(["plain text", f"look at this {marker} please"])
        assert caught.value.index == 1
    with pytest.raises(InputError, match="item 0: "):
        lco_mini.encode([["caption", f"part {MARKERS['audio']}"]])
    with pytest.raises(ValueError, match="instruction contains"):
        lco_mini.encode(["plain text"], instruction=f"Find {MARKERS['image']}")
