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
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor, Idefics3Processor, SmolVLMProcessor

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import ModalityError, backbone_class
from lcoemb.backbones.smolvlm import Idefics3Backbone, SmolVLMBackbone
from lcoemb.cli import main
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token
from lcoemb.testing.smolvlm import make_tiny_smolvlm

# 2 x 2 tiles of 32 px at most (plus the global view), 4 image tokens each
TINY_MAX_PIXELS = 64 * 64
SUFFIX = "\nSummarize the above {} in one word:"
TEXTS = [
    "a red square",
    "the quick brown fox jumps over the lazy dog " * 6,
    "two",
    "hello world, good morning and good night",
]


def _images() -> list[PIL.Image.Image]:
    rng = np.random.default_rng(3)
    sizes = [(56, 56), (90, 112), (30, 100), (112, 64)]  # 1 x 1 to 2 x 2 tiles
    return [PIL.Image.fromarray(rng.integers(0, 255, (*s, 3), dtype=np.uint8)) for s in sizes]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module", params=["smolvlm", "idefics3"])
def smol_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return make_tiny_smolvlm(
        folder, idefics3=request.param == "idefics3", max_pixels=TINY_MAX_PIXELS
    )


@pytest.fixture(scope="module")
def smol_encoder(smol_path: Path) -> OmniEncoder:
    return OmniEncoder.from_pretrained(smol_path, device="cpu")


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
    model = model_class.from_pretrained(
        smol_path, dtype=torch_dtype, attn_implementation="sdpa"
    ).eval()
    processor = AutoProcessor.from_pretrained(smol_path)

    def direct(content: list[dict], **media) -> np.ndarray:
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], return_tensors="pt", **media)
        with torch.no_grad():
            h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
        return torch.nn.functional.normalize(h, dim=-1).float().numpy()[0]

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
    cos = _cos(ours, np.stack(expected))
    assert cos.min() >= 0.9999, cos
    # the check has teeth only if different inputs give clearly different vectors
    sims = ours @ ours.T
    assert sims[~np.eye(len(ours), dtype=bool)].max() < 0.99


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
    assert _cos(together, alone).min() >= 0.999


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
    backbone = smol_encoder.backbone
    targets = backbone.lora_target_modules()
    assert targets and all(name.startswith("model.text_model.layers.") for name in targets)
    # q, k, v, o and the three MLP projections of every decoder layer
    assert len(targets) == 7 * backbone.num_layers
    linears = [n for n, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert any("vision_model" in n for n in linears) and any("connector" in n for n in linears)


@pytest.mark.slow
def test_cli_training_gives_an_adapter_that_changes_the_vectors(smol_path, tmp_path):
    rows = [
        {"anchor": f"a {c} {s}", "positive": f"the {s} is {c}"}
        for c in ("red", "blue", "green")
        for s in ("circle", "square")
    ]
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", str(smol_path), "--data", str(data), "--output", str(out)]
    args += ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--precision", "fp32"]
    args += ["--lr", "2e-3", "--warmup-steps", "1"]
    assert main(args) == 0
    items = ["a red circle", _images()[0]]
    plain = OmniEncoder.from_pretrained(smol_path, device="cpu", dtype="float32").encode(items)
    adapted = OmniEncoder.from_pretrained(
        smol_path, adapter=out / "adapter", device="cpu", dtype="float32"
    )
    assert _cos(plain, adapted.encode(items)).max() < 0.9999
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert all(name.startswith("model.text_model.") for name in saved["target_modules"])


def test_generate_and_all_layer_states(smol_encoder):
    out = smol_encoder.generate(["hello", _images()[0]], "Describe:", max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)

    items = ["alpha beta", _images()[3]]
    layers = smol_encoder.backbone.num_layers
    pooled = smol_encoder.encode(items, normalize=False)
    for batch, states in smol_encoder.iter_hidden_states(items, all_layers=True):
        assert states.shape[0] == layers + 1
        np.testing.assert_allclose(states[-1].float().numpy(), pooled[batch], rtol=2e-2, atol=2e-2)
