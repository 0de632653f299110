"""Whisper's encoder read out of a CTranslate2 checkpoint into PyTorch (lcoemb.mini.whisper).

A tiny random transformers Whisper, every parameter drawn at random (biases and norms too, so a
swapped tensor could not hide behind a zero), is converted with CTranslate2's own converter in
each quantization; the encoder read back must compute what the original and CTranslate2 compute.
"""

from __future__ import annotations

from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

from lcoemb.mini.towers import whisper_tiny_en_path
from lcoemb.mini.whisper import (
    CheckpointError,
    ctranslate2_index,
    encode_first_frames,
    load_whisper_encoder,
    read_ctranslate2_variables,
)

QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[WhisperForConditionalGeneration, dict[str, Path]]:
    """The random model and its CTranslate2 folders, one per quantization."""
    root = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=51864,  # tiny.en's tokenizer, which the converter reads
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=64,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "layer_norm.weight" in name else 0.0, 0.2)
    model.save_pretrained(root / "hf")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(whisper_tiny_en_path() / "tokenizer.json"))
    tokenizer.save_pretrained(root / "hf")
    folders = {}
    for q in QUANTIZATIONS:
        converter = ctranslate2.converters.TransformersConverter(str(root / "hf"))
        folders[q] = Path(converter.convert(str(root / q), quantization=q))
    return model, folders


def _mels(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 80, 3000, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("quantization", "tolerance"), [("float32", 1e-6), ("float16", 1e-3), ("bfloat16", 1e-2)]
)
def test_encoder_computes_what_the_original_and_ctranslate2_compute(
    converted, quantization, tolerance
):
    model, folders = converted
    encoder = load_whisper_encoder(folders[quantization])
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    mels = _mels()
    with torch.inference_mode():
        ours = encoder(mels).last_hidden_state
        original = model.model.encoder(mels).last_hidden_state
    # the original's float32 weights, rounded to the checkpoint's type
    assert float((ours - original).abs().max() / original.abs().max()) < tolerance
    ct2 = ctranslate2.models.Whisper(str(folders[quantization]), compute_type="float32")
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mels.numpy()), to_cpu=True))
    # the same weights: float32 summation order only
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


def test_ctranslate2_decodes_the_torch_encoders_states(converted):
    """The tower hands the torch encoder's states to CTranslate2's decoder: the same tokens."""
    _, folders = converted
    ct2 = ctranslate2.models.Whisper(str(folders["float32"]), compute_type="float32")
    mels = _mels()
    with torch.inference_mode():
        states = load_whisper_encoder(folders["float32"])(mels).last_hidden_state.numpy()
    prompt = [[50257, 50362]] * 2  # <|startoftranscript|> <|notimestamps|> in tiny.en
    theirs = ct2.generate(ctranslate2.StorageView.from_array(mels.numpy()), prompt, max_length=8)
    ours = ct2.generate(ctranslate2.StorageView.from_array(states), prompt, max_length=8)
    assert [r.sequences_ids for r in ours] == [r.sequences_ids for r in theirs]
    assert all(len(r.sequences_ids[0]) > 0 for r in ours)


def test_aliases_are_resolved(converted):
    """CTranslate2 stores equal tensors once: a zero bias shared by the encoder and the decoder
    is read back under the encoder's name."""
    _, folders = converted
    path = folders["float32"] / "model.bin"
    model = WhisperForConditionalGeneration.from_pretrained(path.parent.parent / "hf")
    with torch.no_grad():
        model.model.encoder.layers[0].fc2.bias.zero_()
        model.model.decoder.layers[0].fc2.bias.zero_()
    model.save_pretrained(path.parent.parent / "aliased-hf")
    WhisperTokenizerFast.from_pretrained(path.parent.parent / "hf").save_pretrained(
        path.parent.parent / "aliased-hf"
    )
    out = ctranslate2.converters.TransformersConverter(str(path.parent.parent / "aliased-hf"))
    folder = Path(out.convert(str(path.parent.parent / "aliased"), quantization="float32"))
    _, stored, aliases = ctranslate2_index(folder / "model.bin")
    name = "encoder/layer_0/ffn/linear_1/bias"
    assert name not in stored and aliases[name].startswith("decoder/")
    _, variables = read_ctranslate2_variables(folder / "model.bin", prefix="encoder/")
    assert not variables["encoder/layer_0/ffn/linear_1/bias"].any()
    assert not any(name.startswith("decoder/") for name in variables)
    encoder = load_whisper_encoder(folder)
    assert not encoder.layers[0].fc2.bias.any()


def test_refuses_what_it_cannot_read(converted, tmp_path):
    _, folders = converted
    with pytest.raises(CheckpointError, match=r"int8.*quantized weights \(encoder/"):
        load_whisper_encoder(folders["int8"])
    with pytest.raises(CheckpointError, match="no such file"):
        load_whisper_encoder(tmp_path)
    raw = (folders["float32"] / "model.bin").read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cut/model.bin: truncated"):
        load_whisper_encoder(cut)
    future = tmp_path / "future"
    future.mkdir()
    (future / "model.bin").write_bytes((99).to_bytes(4, "little") + raw[4:])
    with pytest.raises(CheckpointError, match="binary version 99"):
        load_whisper_encoder(future)
    other = tmp_path / "other"
    other.mkdir()
    spec = b"WhisperSpec\0"
    (other / "model.bin").write_bytes(raw.replace(spec, b"WhisperSpek\0", 1))
    with pytest.raises(CheckpointError, match="'WhisperSpek' checkpoint, not a Whisper one"):
        load_whisper_encoder(other)


@pytest.mark.parametrize("frames", [1, 7, 1500])
def test_first_frames_are_the_full_encoders(converted, frames):
    """The last layer run for the kept frames only: the full encoder's first frames, to float32
    rounding (the GEMMs see fewer rows)."""
    _, folders = converted
    encoder = load_whisper_encoder(folders["float32"])
    mels = _mels(3)
    with torch.inference_mode():
        full = encoder(mels).last_hidden_state
        first = encode_first_frames(encoder, mels, frames)
    assert first.shape == (3, frames, 32)
    assert (first - full[:, :frames]).abs().max() <= 1e-5 * full.abs().max()


def test_first_frames_refuses_bad_arguments(converted):
    _, folders = converted
    encoder = load_whisper_encoder(folders["float32"])
    with pytest.raises(ValueError, match="expects 3000 mel frames, got 2999"):
        encode_first_frames(encoder, torch.zeros(1, 80, 2999), 5)
    for frames in (0, 1501):
        with pytest.raises(ValueError, match=rf"frames must be in 1\.\.1500: {frames}"):
            encode_first_frames(encoder, torch.zeros(1, 80, 3000), frames)
