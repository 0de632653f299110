"""SmolVLM2 (``smolvlm``) and SmolVLM v1 / Idefics3 (``idefics3``): the recipe against an
independent transformers forward pass, the refused modalities, LoRA training, generation and
all-layer states, each on both model types.

mteb ships no single-vector embedder on this family (its ColSmol models are ColPali-style
multi-vector MaxSim models run through ``colpali_engine``), so there is no wrapper to match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from family_checks import (
    SUFFIX,
    assert_adapter_changes_vectors,
    assert_adapter_targets,
    assert_distinct,
    assert_lora_targets,
    cos,
    load_reference,
    random_images,
    reference_alone,
    train_via_cli,
)
from transformers import AutoProcessor, Idefics3Processor, SmolVLMProcessor

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import ModalityError, backbone_class
from lcoemb.backbones.smolvlm import Idefics3Backbone, SmolVLMBackbone
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token
from lcoemb.testing.smolvlm import make_tiny_smolvlm

# 2 x 2 tiles of 32 px at most (plus the global view), 4 image tokens each
TINY_MAX_PIXELS = 64 * 64
TEXTS = [
    "a red square",
    "the quick brown fox jumps over the lazy dog " * 6,
    "two",
    "hello world, good morning and good night",
]


def _images() -> list:
    # 1 x 1 to 2 x 2 tiles
    return random_images(3, sizes=[(56, 56), (90, 112), (30, 100), (112, 64)])


@pytest.fixture(scope="module", params=["smolvlm", "idefics3"])
def smol_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return make_tiny_smolvlm(
        folder, idefics3=request.param == "idefics3", max_pixels=TINY_MAX_PIXELS
    )


@pytest.fixture(scope="module")
def smol_encoder(smol_path: Path) -> OmniEncoder:
    return OmniEncoder.from_pretrained(smol_path, device="cpu", dtype="bfloat16")


def _model_type(path: Path) -> str:
    return json.loads((path / "config.json").read_text())["model_type"]


def test_builder_is_deterministic_and_loads_with_its_own_classes(smol_path, tmp_path):
    idefics3 = _model_type(smol_path) == "idefics3"
    again = make_tiny_smolvlm(tmp_path, idefics3=idefics3, max_pixels=TINY_MAX_PIXELS)
    assert (again / "model.safetensors").read_bytes() == (
        smol_path / "model.safetensors"
    ).read_bytes()
    processor = AutoProcessor.from_pretrained(smol_path)
    assert type(processor) is (Idefics3Processor if idefics3 else SmolVLMProcessor)


def test_backbone_class_and_prompt_follow_the_checkpoint(smol_path, smol_encoder):
    backbone = smol_encoder.backbone
    assert backbone_class(_model_type(smol_path)) is SmolVLMBackbone
    expected = Idefics3Backbone if _model_type(smol_path) == "idefics3" else SmolVLMBackbone
    assert type(backbone) is expected
    assert smol_encoder.modalities == {"text", "image"}
    # SmolVLM's own template: no system turn, "User:" glued to a leading image
    image = load_item(_images()[0], 0)
    assert backbone.prompt(image) == (
        "<|im_start|>User:<image>\nSummarize the above image in one word:<end_of_utterance>\n"
        "Assistant:"
    )
    assert backbone.prompt(load_item("hi", 0)).startswith("<|im_start|>User: hi\n")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_vectors_match_an_independent_transformers_forward(smol_path, dtype):
    """The recipe written out by hand, one item per call (no padding): one user turn (media,
    text, suffix), the checkpoint's template with a generation prompt, the last layer's last
    token, L2 norm. Ours runs batches that mix lengths, so left padding and the fast text path
    (on by default) are both exercised."""
    torch_dtype = getattr(torch, dtype)
    model_class = SmolVLMBackbone.model_class
    if _model_type(smol_path) == "idefics3":
        model_class = Idefics3Backbone.model_class
    model, processor = load_reference(
        model_class, smol_path, dtype=torch_dtype, attn_implementation="sdpa"
    )

    def direct(content: list[dict], **media) -> np.ndarray:
        return reference_alone(model, processor, content, **media)

    images = _images()
    expected = [
        direct([{"type": "text", "text": t}, {"type": "text", "text": SUFFIX.format("text")}])
        for t in TEXTS
    ]
    expected += [
        direct([{"type": "image"}, {"type": "text", "text": SUFFIX.format("image")}], images=[im])
        for im in images
    ]
    encoder = OmniEncoder.from_pretrained(smol_path, device="cpu", dtype=dtype)
    assert encoder.backbone.fast_text_path
    ours = encoder.encode([*TEXTS, *images], batch_size=4)
    cosine = cos(ours, np.stack(expected))
    assert cosine.min() >= 0.9999, cosine
    assert_distinct(ours)


def test_a_batch_mixing_text_and_images_equals_each_item_alone(smol_encoder):
    """A text-only row gets an empty image list (SmolVLM's processor takes one list per
    prompt); every row must still be what it is alone."""
    backbone = smol_encoder.backbone
    items = [
        load_item("a lonely sentence", 0),
        load_item(_images()[1], 1),
        load_item(["caption", _images()[2]], 2),
    ]

    def pooled(batch):
        with torch.inference_mode():
            return last_token(backbone.forward(backbone.prepare(batch))).float().numpy()

    together = pooled(items)
    alone = np.concatenate([pooled([item]) for item in items])
    assert cos(together, alone).min() >= 0.999


def test_image_pixel_cap_reaches_the_processor(smol_path, smol_encoder):
    image = load_item(_images()[1], 0)  # 90 x 112 px: 2 x 2 tiles and the global view
    capped = OmniEncoder.from_pretrained(smol_path, device="cpu", max_image_pixels=32 * 32)
    default = smol_encoder.backbone.prepare([image])["pixel_values"]
    small = capped.backbone.prepare([image])["pixel_values"]
    assert default.shape[1] == 5 and small.shape[1] == 1  # the global view alone


def test_audio_and_video_are_refused_naming_the_item(smol_encoder, media):
    with pytest.raises(ModalityError, match=r"item 1: smolvlm backbone .* cannot encode audio"):
        smol_encoder.encode(["fine", Audio(media["wav16k"])])
    frames = [np.zeros((32, 32, 3), np.uint8)] * 2
    with pytest.raises(ModalityError, match=r"item 0: .*cannot encode video"):
        smol_encoder.encode([Video(frames)])


def test_lora_sits_on_the_text_model_only(smol_encoder):
    # q, k, v, o and the three MLP projections of every decoder layer
    _, towers = assert_lora_targets(
        smol_encoder.backbone,
        per_layer=7,
        prefix="model.text_model.layers.",
        is_tower=lambda name: "vision_model" in name or "connector" in name,
    )
    assert any("vision_model" in n for n in towers) and any("connector" in n for n in towers)


@pytest.mark.slow
def test_cli_training_gives_an_adapter_that_changes_the_vectors(smol_path, tmp_path):
    rows = [
        {"anchor": f"a {c} {s}", "positive": f"the {s} is {c}"}
        for c in ("red", "blue", "green")
        for s in ("circle", "square")
    ]
    adapter = train_via_cli(smol_path, tmp_path, rows)
    assert_adapter_changes_vectors(smol_path, adapter, ["a red circle", _images()[0]])
    assert_adapter_targets(adapter, "model.text_model.")


def test_generate_and_all_layer_states(smol_encoder):
    out = smol_encoder.generate(["hello", _images()[0]], "Describe:", max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)

    items = ["alpha beta", _images()[3]]
    layers = smol_encoder.backbone.num_layers
    pooled = smol_encoder.encode(items, normalize=False)
    for batch, states in smol_encoder.iter_hidden_states(items, all_layers=True):
        assert states.shape[0] == layers + 1
        np.testing.assert_allclose(states[-1].float().numpy(), pooled[batch], rtol=2e-2, atol=2e-2)
