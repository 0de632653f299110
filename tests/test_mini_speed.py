"""LCO-Mini's encode fast paths against its plain path, on the real embedded weights (bf16 where
the CPU computes it fast, float32 elsewhere).

In bf16, SmolLM2 turns a last-bit difference anywhere into cosines of ~0.999, so these checks
are close to bit-exactness: the fast text path must give every item encoded alone what the plain
forward gives it, and the reading tower's faster detector must find the same boxes. In a batch,
every row gets its unbatched vector bit for bit where the CPU's GEMMs do not depend on the
number of rows (:func:`conftest.gemm_rows_independent`); elsewhere a batched row moves by
last bits, as the plain forward's own rows do, and the checks allow that noise floor.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import gemm_rows_independent

from lcoemb import Audio, OmniEncoder, Video, synthetic
from lcoemb.backbones import fastpath
from lcoemb.inputs import Limits, load_item
from lcoemb.mini import reader as reader_module
from lcoemb.mini.reader import DETECT_SIZE, TextReader, fuse_detector, load_text_reader
from lcoemb.mini.towers import load_audio_tower, load_efficientnet_lite0, load_image_tower

#: min cosine between an item's batched and unbatched vectors where the CPU's GEMMs depend on
#: the number of rows: the bf16 noise floor of batching (the plain path's own: 0.9989-0.9997)
BATCH_NOISE_FLOOR = 0.998


@pytest.fixture(scope="module")
def lco_mini() -> OmniEncoder:
    return OmniEncoder.from_pretrained("lco-mini", device="cpu")


def _reader_as_it_was() -> TextReader:
    """The reading tower before issue 19: the shipped detector, contiguous, 8 images a call."""
    shipped = load_text_reader(fused=False)
    detector = copy.deepcopy(shipped.detector).to(memory_format=torch.contiguous_format)
    return TextReader(detector, shipped.recognizer, batch_size=8)


def _min_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())


def test_fast_text_path_gives_each_row_its_unbatched_state(lco_mini, monkeypatch):
    """One left-padded batch of every kind of item (texts of several lengths, images with and
    without text, speech, a clip, an interleaved item): the fast path's pooled state of each row
    against the plain forward of that row's own tokens, alone, without padding."""
    backbone = lco_mini.backbone
    assert backbone.fast_text_path  # SmolLM2 is a Llama: the fast path fits
    speech = synthetic.speech(0, "test")
    raw = [
        "a red circle",
        synthetic.general_triplet(0, "test").anchor,
        synthetic.ocr(0, "test").image,
        synthetic.scene(0, "test").image,
        Audio(speech.wave, sampling_rate=speech.sampling_rate),
        Video(synthetic.clip(0, "test").frames),
        ["the caption", synthetic.ocr(1, "test").image],
    ]
    items = [load_item(x, i, Limits()) for i, x in enumerate(raw)]
    shared = []
    real = fastpath.shared_prefix_length
    monkeypatch.setattr(
        fastpath, "shared_prefix_length", lambda *a: shared.append(real(*a)) or shared[-1]
    )
    with torch.inference_mode():
        inputs = backbone.prepare(items)
        mask = inputs["attention_mask"]
        assert len(set(mask.sum(1).tolist())) > 4  # rows of many lengths: real padding
        fast = backbone.forward(inputs).states[:, 0]
        assert shared == [24]  # SmolLM2's system turn and "<|im_start|>user\n", computed once
        rows = []
        for row, keep in zip(inputs["inputs_embeds"], mask.bool()):
            embeds = row[keep][None]
            n = embeds.shape[1]
            rows.append(
                {
                    "inputs_embeds": embeds,
                    "attention_mask": torch.ones(1, n, dtype=torch.long),
                    "position_ids": torch.arange(n)[None],
                }
            )
        fast_alone = torch.stack([backbone.forward(one).states[0, 0] for one in rows])
        monkeypatch.setattr(backbone, "fast_text_path", False)
        alone = torch.stack([backbone.forward(one).states[0, -1] for one in rows])
    assert fast.shape == (len(raw), 576)
    assert _min_cos(fast_alone, alone) >= 0.99999  # each item alone: what the forward gives it
    floor = 0.99999 if gemm_rows_independent() else BATCH_NOISE_FLOOR
    assert _min_cos(fast, alone) >= floor
    assert _min_cos(fast[:1], fast[1:2]) < 0.99  # rows differ: the check has teeth


def test_encode_keeps_its_vectors(lco_mini, monkeypatch):
    """Through ``encode``: the fast path (shared prefixes, the channels-last detector, fused
    where it runs in float32, one image per detector call, EfficientNet channels-last and fused
    and Whisper's encoder in PyTorch where models run in float32) against the plain path as it
    was, each item encoded alone, per modality."""
    plain_reader = _reader_as_it_was()
    speech = [synthetic.speech(i, "test") for i in range(2)]
    items = [
        "a red circle",
        "three blue squares at the top of a very long caption that pads the others",
        synthetic.ocr(2, "test").image,
        synthetic.ocr(3, "test").image,
        synthetic.scene(2, "test").image,
        *(Audio(s.wave, sampling_rate=s.sampling_rate) for s in speech),
        Video(synthetic.clip(1, "test").frames),
    ]
    fast = lco_mini.encode(items, batch_size=8)
    fast_alone = np.concatenate([lco_mini.encode([x]) for x in items])
    monkeypatch.setattr(lco_mini.backbone, "fast_text_path", False)
    monkeypatch.setattr(lco_mini.backbone, "text_reader", plain_reader)
    monkeypatch.setattr(load_audio_tower(), "encoder", None)  # CTranslate2's encoder
    monkeypatch.setattr(load_image_tower(), "model", load_efficientnet_lite0())  # as shipped
    plain = np.concatenate([lco_mini.encode([x]) for x in items])
    alone = (fast_alone * plain).sum(1)
    assert alone.min() >= 0.9999, alone
    batched = (fast * plain).sum(1)
    assert batched.min() >= (0.9999 if gemm_rows_independent() else BATCH_NOISE_FLOOR), batched


@pytest.mark.parametrize("kind", ["ocr", "scene", "page"])
def test_channels_last_detector_finds_the_same_boxes_and_tokens(kind):
    """The detector's channels-last layout and one image per call (the defaults on CPU, with
    the batch norms folded in where it runs in float32) against the shipped detector,
    contiguous, in batches of 8: the same lines and the same reading tokens."""
    if kind == "page":
        images = [synthetic.page(language, 0).image for language in synthetic.LANGUAGES]
    else:
        sample = synthetic.ocr if kind == "ocr" else synthetic.scene
        images = [sample(i, "test").image for i in range(6)]
    fast = load_text_reader()
    assert fast.batch_size == 1
    assert fast.detector.basenet.slice1[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = _reader_as_it_was()
    lines = fast.detect(images)
    assert lines == plain.detect(images)
    if kind != "scene":
        assert all(lines)  # there is text to find
    for a, b in zip(fast(images), plain(images)):
        assert torch.equal(a, b)


def test_float32_fused_detector_finds_the_same_boxes_and_tokens_on_any_cpu(monkeypatch):
    """The default detector on CPUs without fast bf16 (batch norms folded in, in float32),
    checked on every CPU: with both detectors in float32, the same lines and reading tokens as
    the shipped detector, on images with text and without."""
    monkeypatch.setattr(reader_module, "fast_bf16", lambda device: False)  # float32 everywhere
    shipped = load_text_reader(fused=False)
    fused = TextReader(fuse_detector(shipped.detector, torch.float32), shipped.recognizer)
    images = [synthetic.ocr(i, "test").image for i in range(10, 14)]
    images += [synthetic.page(language, 1).image for language in ("eng", "vie")]
    images += [synthetic.scene(i, "test").image for i in range(10, 12)]
    lines = fused.detect(images)
    assert lines == shipped.detect(images)
    assert sum(bool(x) for x in lines) >= 6  # there is text to find
    for a, b in zip(fused(images), shipped(images)):
        assert torch.equal(a, b)


def test_max_image_pixels_sets_the_detector_side(lco_mini, monkeypatch):
    """``max_image_pixels`` is LCO-Mini's opt-in speed knob: the largest multiple of 32 whose
    square fits, never above 448, for the reading tower's detector (EfficientNet keeps 224)."""
    backbone = lco_mini.backbone
    assert backbone.detect_size == DETECT_SIZE == 448
    for pixels, side in ((None, 448), (10**8, 448), (320 * 320 + 5, 320), (224 * 224 - 1, 192)):
        monkeypatch.setattr(backbone, "max_image_pixels", pixels)
        assert backbone.detect_size == side
    monkeypatch.setattr(backbone, "max_image_pixels", 10)
    assert backbone.detect_size == 32
    monkeypatch.setattr(backbone, "max_image_pixels", 224 * 224)
    monkeypatch.setattr(backbone, "text_reader", None)
    image = synthetic.ocr(0, "test").image
    small = lco_mini.encode([image])
    assert backbone.text_reader.detect_size == 224
    assert backbone.text_reader.detector is load_text_reader().detector  # the same networks
    monkeypatch.setattr(backbone, "text_reader", load_text_reader())
    assert (small * lco_mini.encode([image])).sum() < 0.9999  # it reads less: a real change


def test_training_keeps_the_plain_forward(lco_mini):
    """LCO-Mini's shipped projectors and adapter were trained on the plain forward; with
    autograd on, the forward gives every position (the plain path), without it the pooled one."""
    backbone = lco_mini.backbone
    items = [load_item(x, 0, Limits()) for x in ("a red circle", "two green stars on the left")]
    inputs = backbone.prepare(items)
    with torch.enable_grad():
        assert backbone.forward(inputs).states.shape[1] == inputs["attention_mask"].shape[1]
    with torch.inference_mode():
        assert backbone.forward(inputs).states.shape[1] == 1
