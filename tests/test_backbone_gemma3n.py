"""Gemma 3n on a tiny random checkpoint: the recipe against a transformers forward pass written
out here (text, image, audio; bf16 and float32), one ``<bos>``, the 300-token cut, LoRA targets,
training, generation and all-layer states.

mteb ships no wrapper for an embedder built on Gemma 3n, so there is no reference-wrapper parity
test for this family. Gemma 3n's vision tower is a timm MobileNetV5, so ``timm`` (the
``families`` extra) is needed to build any Gemma 3n model.
"""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from family_checks import (
    SR,
    TEXTS,
    assert_adapter_changes_vectors,
    assert_all_layer_states,
    assert_distinct,
    assert_generate_matches_greedy,
    assert_lora_targets,
    colour_rows,
    cos,
    image_row,
    noise,
    sine,
    train_via_cli,
)
from peft import PeftModel
from transformers import AutoProcessor, Gemma3nForConditionalGeneration

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import Gemma3nBackbone, ModalityError
from lcoemb.inputs import load_item
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.gemma3n import make_tiny_gemma3n

CAPTIONS = ["a photo", "music fills the room: a piano, a violin and a soft voice singing", "x"]


def _images() -> list[PIL.Image.Image]:
    """Clearly different pictures (a random tiny tower maps similar noise to similar vectors)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:90, 0:120]
    stripes = np.stack([(x // 8 % 2) * 255, (y // 8 % 2) * 255, x * 2], -1).astype(np.uint8)
    return [
        PIL.Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        PIL.Image.fromarray(stripes),
        PIL.Image.new("RGB", (200, 40), (250, 30, 20)),
        PIL.Image.fromarray(np.full((70, 70, 3), (20, 60, 240), np.uint8)),
    ]


def _clips() -> list[np.ndarray]:
    """16 kHz mono clips of different lengths and content, long enough that their audio tokens
    are not swamped by the padding embeddings that fill each clip's 188 soft tokens."""
    t = np.arange(6 * SR) / SR
    square = (0.3 * np.sign(np.sin(2 * np.pi * 120 * t))).astype(np.float32)
    return [sine(12), noise(np.random.default_rng(1), 9 * SR), square]


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    # three layers (full, sliding-window, full): with two, a random model's last-token state
    # hardly depends on the media, and the distinctness checks below would lose their point
    return make_tiny_gemma3n(
        tmp_path_factory.mktemp("tiny-gemma3n"), num_hidden_layers=3, max_pixels=64 * 64
    )


@pytest.fixture(scope="module")
def encoder(gemma_path):
    return OmniEncoder.from_pretrained(gemma_path, device="cpu", dtype="bfloat16")


@pytest.fixture(scope="module")
def encoder32(gemma_path):
    return OmniEncoder.from_pretrained(gemma_path, device="cpu", dtype="float32")


def test_backbone_and_lora_targets(encoder):
    backbone = encoder.backbone
    assert isinstance(backbone, Gemma3nBackbone)
    assert encoder.modalities == {"text", "image", "audio"}
    assert not backbone.fast_text_path  # the Qwen2.5 last-token path does not fit Gemma 3n
    # the stock check would already refuse it (sliding-window layers); ours does not even look
    assert "sliding_attention" in backbone.text_config.layer_types
    targets, _ = assert_lora_targets(
        backbone,
        per_layer=None,
        prefix="model.language_model.",
        is_tower=lambda name: name.startswith(("model.audio_tower", "model.embed_")),
    )
    per_layer = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    per_layer += ["linear_left", "linear_right", "per_layer_input_gate", "per_layer_projection"]
    for i in range(backbone.num_layers):
        layer = [t for t in targets if t.startswith(f"model.language_model.layers.{i}.")]
        assert sorted(t.rsplit(".", 1)[1] for t in layer) == sorted(per_layer)
    assert all(".altup." not in t for t in targets)
    assert not [t for t in targets if "vision_tower" in t]


def _reference(model, processor, contents: list[list[dict]]) -> np.ndarray:
    """The recipe by hand, one padded batch: each content list as one user turn with inline
    media, transformers' own chat templating and tokenisation, then the state the LM head reads
    (Gemma 3n's ``hidden_states[-1]`` holds the four AltUp streams before they are merged and
    normed) at the last position, L2-normalised in the model's dtype."""
    batch = processor.apply_chat_template(
        [[{"role": "user", "content": c}] for c in contents],
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    # left-padded: every row ends with the generation prompt
    assert batch["input_ids"][:, -1].tolist() == [batch["input_ids"][0, -1]] * len(contents)
    with torch.no_grad():
        h = model.model(**batch.to(model.dtype), use_cache=False).last_hidden_state[:, -1]
    return torch.nn.functional.normalize(h, dim=-1).float().numpy()


def _content(kind: str, media, caption: str | None = None) -> list[dict]:
    """One user turn's content as the recipe builds it: the medium, the caption, the suffix."""
    parts = [{"type": "text", "text": media}] if kind == "text" else [{"type": kind, kind: media}]
    parts += [{"type": "text", "text": caption}] if caption else []
    return [*parts, {"type": "text", "text": SUFFIXES[kind]}]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(gemma_path, encoder, encoder32, dtype):
    """Texts, images and audio clips, alone and with captions of different lengths, so rows are
    left-padded. Ours plans its own batches; the reference takes the same groups (plain media,
    captioned media), since in bf16 the vision tower's convolutions round differently with the
    batch size (cosine ~0.99994 between an image alone and in a batch)."""
    model = Gemma3nForConditionalGeneration.from_pretrained(
        gemma_path, dtype=dtype, attn_implementation="sdpa"
    ).eval()
    processor = AutoProcessor.from_pretrained(gemma_path)
    images, clips = _images(), _clips()
    groups = {
        "text": (TEXTS, [_content("text", t) for t in TEXTS]),
        "image": (images[:2], [_content("image", im) for im in images[:2]]),
        "captioned image": (
            [{"text": c, "image": im} for c, im in zip(CAPTIONS, images[1:])],
            [_content("image", im, c) for c, im in zip(CAPTIONS, images[1:])],
        ),
        "audio": ([Audio(a, SR) for a in clips[:2]], [_content("audio", a) for a in clips[:2]]),
        "captioned audio": (
            [{"text": c, "audio": Audio(a, SR)} for c, a in zip(CAPTIONS, clips)],
            [_content("audio", a, c) for c, a in zip(CAPTIONS, clips)],
        ),
    }
    ours = encoder if dtype == torch.bfloat16 else encoder32
    for kind, (items, contents) in groups.items():
        vectors = ours.encode(items, batch_size=8)
        cosine = cos(vectors, _reference(model, processor, contents))
        assert cosine.min() >= 0.9999, (kind, cosine)
        assert_distinct(vectors)


def test_prompt_has_one_bos_and_the_checkpoint_template(encoder):
    """Gemma's template writes ``<bos>`` and its tokenizer adds one: the model must read one.
    The template trims text items, so the suffix follows the text directly. A text cut at 300
    tokens is cut on its own tokens and keeps a single ``<bos>``."""
    backbone = encoder.backbone
    prompt = backbone.prompt(load_item(TEXTS[0], 0))
    suffix = SUFFIXES["text"].strip()
    assert prompt == (
        f"<bos><start_of_turn>user\n{TEXTS[0]}{suffix}<end_of_turn>\n<start_of_turn>model\n"
    )
    long = " ".join(f"word{i}" for i in range(600))
    inputs = backbone.prepare([load_item(long, 0), load_item(TEXTS[2], 1)])
    bos, turn = backbone.tokenizer.convert_tokens_to_ids(["<bos>", "<start_of_turn>"])
    for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
        real = [i for i, m in zip(ids, mask) if m]
        assert real[:2] == [bos, turn] and real.count(bos) == 1
    cut = backbone.truncate_text(long)
    assert len(backbone.tokenizer(cut, add_special_tokens=False).input_ids) == 300
    assert long.startswith(cut)


def test_missing_video_and_the_pixel_cap(gemma_path, encoder):
    frames = [np.zeros((56, 56, 3), np.uint8)] * 2
    with pytest.raises(ModalityError, match=r"item 1: gemma3n backbone .* cannot encode video"):
        encoder.encode(["fine", Video(frames)])
    with pytest.raises(ModalityError, match=r"item 0: .*cannot encode video"):
        encoder.encode([["text", Video(frames)]])
    capped = OmniEncoder.from_pretrained(gemma_path, device="cpu", max_image_pixels=40 * 40)
    image = load_item(_images()[1], 0)
    assert encoder.backbone.prepare([image])["pixel_values"].shape == (1, 3, 64, 64)
    assert capped.backbone.prepare([image])["pixel_values"].shape == (1, 3, 32, 32)
    assert capped.encode([_images()[1]]).shape == (1, encoder.embedding_dim)


def test_generate_matches_greedy_decoding_alone(gemma_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt
    alone gives, without the prompt."""
    image, clip = _images()[1], _clips()[0]
    prompt = [{"type": "text", "text": "Describe:"}]
    cases = [(t, [{"type": "text", "text": t}, *prompt], {}) for t in TEXTS[1:3]]
    cases.append((image, [{"type": "image", "image": image}, *prompt], {}))
    cases.append((Audio(clip, SR), [{"type": "audio", "audio": clip}, *prompt], {}))
    assert_generate_matches_greedy(
        encoder32,
        Gemma3nForConditionalGeneration,
        gemma_path,
        cases,
        nonempty=False,
        in_template=True,
    )


def test_all_layer_states(encoder32):
    """Input embeddings, each layer's active AltUp stream, and last the final-norm state that
    is pooled; the configuration survives loading (timm consumes ``block_args`` in place)."""
    backbone = encoder32.backbone
    inputs, layers, pooled = assert_all_layer_states(backbone, TEXTS[:2], tol=1e-5)
    with torch.no_grad():
        embedded = backbone.language_model.embed_tokens(inputs["input_ids"])
    assert all(h.shape == (2, inputs["input_ids"].shape[1], 64) for h in layers.states)
    torch.testing.assert_close(layers.states[0], embedded)
    assert not torch.allclose(pooled[-2], pooled[-1], atol=1e-2)  # the final norm is applied
    assert json.loads(backbone.model.config.to_json_string())["vision_config"]["model_args"]


def test_train_cli_adapter_changes_the_vectors(gemma_path, tmp_path):
    image = _images()[1]
    rows = colour_rows(["red", "blue"])
    rows += [{"anchor": "one two three", "positive": "four five six"}]
    rows += [image_row(tmp_path / "im.png", image, "striped picture")]
    adapter = train_via_cli(gemma_path, tmp_path, rows)
    # peft saves the targets as the shortest suffixes that match them: check what they match
    model = Gemma3nForConditionalGeneration.from_pretrained(gemma_path)
    adapted_names = [
        name.removeprefix("base_model.model.").removesuffix(".lora_A")
        for name, _ in PeftModel.from_pretrained(model, adapter).named_modules()
        if name.endswith(".lora_A")
    ]
    backbone = OmniEncoder.from_pretrained(gemma_path, device="cpu").backbone
    assert sorted(adapted_names) == sorted(backbone.lora_target_modules())
    items = ["a red circle", image, Audio(_clips()[0], SR)]
    assert_adapter_changes_vectors(gemma_path, adapter, items)
