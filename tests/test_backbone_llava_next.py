"""LLaVA-NeXT (E5-V's backbone) on a tiny random checkpoint: the recipe against a transformers
forward pass written out here, parity with mteb's E5-V wrapper, E5-V's suffixes as the family
default, LoRA targets, training, generation and all-layer states."""

from __future__ import annotations

import json

import datasets
import mteb
import numpy as np
import PIL.Image
import pytest
import torch
from mteb._create_dataloaders import create_dataloader
from mteb.models.model_implementations.e5_v import E5VModel
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import LlavaNextBackbone, ModalityError
from lcoemb.backbones.llava_next import E5V_CHAT_TEMPLATE
from lcoemb.cli import main
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.llava_next import make_tiny_llava_next

TEXT_SUFFIX = "\nSummary above sentence in one word: "
IMAGE_SUFFIX = "\nSummary above image in one word: "
TEXTS = [
    "a red square",
    "the quick brown fox jumps over the lazy dog while a small cat sleeps on a warm chair",
    "hello",
    "one two three four five six seven",
]


def _images(seed: int, sizes=((56, 56), (90, 120), (40, 200), (300, 280))):
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _distinct(vectors: np.ndarray) -> None:
    """A parity check has teeth only if different inputs give clearly different vectors."""
    sims = _cos(vectors[:, None], vectors[None])
    assert sims[~np.eye(len(vectors), dtype=bool)].max() < 0.99


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    return make_tiny_llava_next(tmp_path_factory.mktemp("tiny-llava-next"))


@pytest.fixture(scope="module")
def e5v_path(tmp_path_factory):
    """The same weights, with E5-V's hand-built prompt as the chat template."""
    return make_tiny_llava_next(
        tmp_path_factory.mktemp("tiny-llava-next-e5v"), chat_template=E5V_CHAT_TEMPLATE
    )


@pytest.fixture(scope="module")
def encoder(llava_path):
    return OmniEncoder.from_pretrained(llava_path, device="cpu")


@pytest.fixture(scope="module")
def encoder32(llava_path):
    return OmniEncoder.from_pretrained(llava_path, device="cpu", dtype="float32")


def test_backbone_suffixes_and_lora_targets(encoder):
    backbone = encoder.backbone
    assert isinstance(backbone, LlavaNextBackbone)
    assert encoder.modalities == {"text", "image"}
    assert backbone.suffixes["text"] == TEXT_SUFFIX
    assert backbone.suffixes["image"] == IMAGE_SUFFIX
    assert set(backbone.suffixes) == set(SUFFIXES)
    assert backbone.fast_text_path
    targets = backbone.lora_target_modules()
    # 4 attention and 3 MLP projections per Llama layer, nothing else
    assert len(targets) == 7 * backbone.num_layers
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    linears = [n for n, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear)]
    towers = [n for n in linears if "vision_tower" in n or "multi_modal_projector" in n]
    assert towers and not set(towers) & set(targets)
    assert "lm_head" not in targets


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(llava_path, encoder, encoder32, dtype):
    """The recipe by hand: one user turn (image, then the text and suffix), the checkpoint's
    template with a generation prompt, each item alone (no padding), the last layer's last
    token. Ours encodes the items in padded batches (lengths differ)."""
    model = LlavaNextForConditionalGeneration.from_pretrained(
        llava_path, dtype=dtype, attn_implementation="sdpa"
    ).eval()
    processor = AutoProcessor.from_pretrained(llava_path)
    images = _images(0)

    def direct(content, **media):
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], return_tensors="pt", **media)
        with torch.no_grad():
            h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
        return torch.nn.functional.normalize(h, dim=-1).float().numpy()[0]

    expected = [direct([{"type": "text", "text": t + TEXT_SUFFIX}]) for t in TEXTS]
    expected += [
        direct([{"type": "image"}, {"type": "text", "text": IMAGE_SUFFIX}], images=[im])
        for im in images
    ]
    ours = (encoder if dtype == torch.bfloat16 else encoder32).encode(
        [*TEXTS, *images], batch_size=4
    )
    assert _cos(ours, np.stack(expected)).min() >= 0.9999
    _distinct(ours)


class _V4ArgumentOrder:
    """mteb's E5-V wrapper calls ``processor(prompts)`` and ``processor(prompts, images)``:
    positional text first, which transformers 4 recognised and swapped. Transformers 5 takes the
    first positional argument as images, so this restores that swap and nothing else."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, text, images=None, **kwargs):
        return self.processor(text=text, images=images, **kwargs)


@pytest.fixture(scope="module")
def e5v_reference(e5v_path):
    model = E5VModel(str(e5v_path), revision=None, device="cpu")
    model.processor = _V4ArgumentOrder(model.processor)
    return model


def _reference_vectors(model, column: str, values, feature=None) -> np.ndarray:
    features = datasets.Features({column: feature}) if feature is not None else None
    ds = datasets.Dataset.from_dict({column: values}, features=features)
    meta = mteb.get_tasks(modalities=[column], exclusive_modality_filter=True)[0].metadata
    loader = create_dataloader(ds, task_metadata=meta, batch_size=4)
    out = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    return np.asarray(out, dtype=np.float32)


def test_e5v_wrapper_parity(e5v_path, e5v_reference):
    """With E5-V's prompt as the chat template and the family's default (E5-V) suffixes, our
    vectors are mteb's E5-V wrapper's, text and image, in padded batches."""
    images = _images(1)
    ref_text = _reference_vectors(e5v_reference, "text", TEXTS)
    ref_image = _reference_vectors(e5v_reference, "image", images, datasets.Image())
    for dtype, floor in (("float32", 0.9999), (None, 0.999)):  # the wrapper runs in float32
        ours = OmniEncoder.from_pretrained(e5v_path, device="cpu", dtype=dtype)
        assert _cos(ours.encode(TEXTS, batch_size=4), ref_text).min() >= floor
        assert _cos(ours.encode(images, batch_size=4), ref_image).min() >= floor
    _distinct(ref_text)
    _distinct(ref_image)


def test_prompts_against_e5v(llava_path, encoder, e5v_path, e5v_reference):
    """E5-V's template gives E5-V's string; the llava-hf template differs from it exactly where
    the module docstring says (a newline before the text, no " \\n" after the header)."""
    text = load_item(TEXTS[0], 0)
    e5v = OmniEncoder.from_pretrained(e5v_path, device="cpu").backbone
    assert e5v.prompt(text) == e5v_reference.text_prompt.replace("<sent>", TEXTS[0])
    assert e5v.prompt(load_item(_images(2)[0], 0)) == e5v_reference.img_prompt
    header = "<|start_header_id|>user<|end_header_id|>\n\n"
    tail = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert encoder.backbone.prompt(text) == f"{header}\n{TEXTS[0]}{TEXT_SUFFIX}{tail}"
    # a checkpoint without a chat template is read with E5-V's
    bare = OmniEncoder.from_pretrained(llava_path, device="cpu").backbone
    bare.processor.chat_template = None
    assert bare.prompt(text) == e5v.prompt(text)


def test_one_text_part_per_turn_and_one_bos(encoder):
    """Media first, then instruction, text and suffix as one part closed by one <|eot_id|>;
    a text cut at 300 tokens keeps a single <|begin_of_text|> (the tokenizer's)."""
    backbone = encoder.backbone
    image = _images(3)[0]
    for item, suffix in [
        ({"text": "a caption", "image": image}, IMAGE_SUFFIX),
        (["a caption", image], "\nSummary above input in one word: "),  # interleaved
    ]:
        prompt = backbone.prompt(load_item(item, 0), "Find the match.")
        assert prompt.count("<|eot_id|>") == 1
        assert f"<image>\nFind the match.\na caption{suffix}<|eot_id|>" in prompt

    long = " ".join(f"word{i}" for i in range(600))
    inputs = backbone.prepare([load_item(long, 0)])
    ids = inputs["input_ids"][0].tolist()
    bos = backbone.tokenizer.bos_token_id
    assert ids.count(bos) == 1 and ids[0] == bos
    cut = backbone.truncate_text(long)
    assert len(backbone.tokenizer(cut, add_special_tokens=False).input_ids) == 300


def test_prompt_suffixes_override_the_e5v_default(llava_path, encoder):
    lco = OmniEncoder.from_pretrained(
        llava_path, device="cpu", prompt_suffixes={"text": SUFFIXES["text"]}
    )
    assert lco.backbone.suffixes["text"] == SUFFIXES["text"]
    assert lco.backbone.suffixes["image"] == IMAGE_SUFFIX  # the others keep the family's
    assert SUFFIXES["text"] + "<|eot_id|>" in lco.backbone.prompt(load_item(TEXTS[1], 0))
    assert _cos(lco.encode(TEXTS), encoder.encode(TEXTS)).max() < 0.999
    assert LlavaNextBackbone.suffixes["text"] == TEXT_SUFFIX  # the class is untouched


def test_missing_modalities_and_pixel_cap_are_refused(llava_path, encoder):
    tone = np.sin(np.arange(8000) / 10).astype(np.float32)
    with pytest.raises(ModalityError, match=r"item 1: llava_next backbone .* cannot encode audio"):
        encoder.encode(["fine", Audio(tone, sampling_rate=16_000)])
    frames = [np.zeros((56, 56, 3), np.uint8)] * 2
    with pytest.raises(ModalityError, match=r"item 2: .*cannot encode video"):
        encoder.encode(["fine", _images(4)[0], Video(frames)])
    with pytest.raises(ValueError, match="image_grid_pinpoints"):
        OmniEncoder.from_pretrained(llava_path, device="cpu", max_image_pixels=56 * 56)


def test_generate_strips_the_prompt(llava_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt
    alone gives, without the prompt."""
    items = [TEXTS[1], TEXTS[2], _images(5)[1]]
    out = encoder32.generate(items, "Describe:", max_new_tokens=4, batch_size=8)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)

    model = LlavaNextForConditionalGeneration.from_pretrained(llava_path).eval()
    processor = AutoProcessor.from_pretrained(llava_path)

    def alone(content, **media):
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], return_tensors="pt", **media)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        return processor.tokenizer.decode(
            ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )

    expected = [alone([{"type": "text", "text": t + "Describe:"}]) for t in items[:2]]
    expected.append(
        alone([{"type": "image"}, {"type": "text", "text": "Describe:"}], images=[items[2]])
    )
    assert out == expected


def test_all_layer_states(encoder32):
    backbone = encoder32.backbone
    inputs = backbone.prepare([load_item(TEXTS[0], 0), load_item(TEXTS[1], 1)])
    with torch.no_grad():
        layers = backbone.forward(inputs, all_layers=True)
        fast = last_token(backbone.forward(inputs))
    assert len(layers.states) == backbone.num_layers + 1
    pooled = last_token(layers)
    assert pooled.shape == (backbone.num_layers + 1, 2, backbone.hidden_size)
    torch.testing.assert_close(pooled[-1], fast, rtol=1e-4, atol=1e-4)


def test_train_cli_adapter_changes_the_vectors(llava_path, tmp_path):
    images = _images(6, sizes=((56, 56), (60, 90)))
    rows = []
    for colour in ["red", "blue", "green", "yellow"]:
        rows.append({"anchor": f"a {colour} circle", "positive": f"the circle is {colour}"})
    for i, image in enumerate(images):
        image.save(tmp_path / f"im{i}.png")
        rows.append({"anchor": {"image": str(tmp_path / f"im{i}.png")}, "positive": f"picture {i}"})
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", str(llava_path), "--data", str(data), "--output", str(out)]
    args += ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--precision", "fp32"]
    args += ["--lr", "2e-3", "--warmup-steps", "1"]
    assert main(args) == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert all("language_model" in t for t in config["target_modules"])

    items = ["a red circle", images[0]]
    base = OmniEncoder.from_pretrained(llava_path, device="cpu", dtype="float32")
    adapted = OmniEncoder.from_pretrained(
        llava_path, adapter=out / "adapter", device="cpu", dtype="float32"
    )
    assert _cos(base.encode(items), adapted.encode(items)).max() < 0.9999
