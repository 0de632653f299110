"""Qwen2-VL (GME's and Ops-MM-embedding's backbone) on a tiny random checkpoint: the recipe
against a transformers forward pass written out here, parity with mteb's Ops-MM-embedding
wrapper, the fast paths, LoRA targets, training, generation and all-layer states.

mteb's GME wrapper (``gme_v_models.GmeQwen2VL``) cannot run with transformers 5: it imports
``AutoModelForVision2Seq`` (removed) and reads ``model.embed_tokens``/``base.visual``, which moved
under ``model.language_model``/``model.visual``. Its prompt is Ops-MM-embedding's (a system
instruction, the input, ``<|endoftext|>`` after the generation prompt, last token, right padding
where Ops-MM pads left), so the Ops-MM parity covers that recipe too.
"""

from __future__ import annotations

import json

import datasets
import mteb
import numpy as np
import PIL.Image
import pytest
import torch
from mteb._create_dataloaders import create_dataloader
from mteb.models.model_implementations.ops_mm_models import OpsMMEmbeddingWrapper
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import HFChatBackbone, ModalityError, Qwen2VLBackbone
from lcoemb.cli import main
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.qwen2_vl import make_tiny_qwen2_vl

# 8x8 merged patches of 28 px at most per image and frame: the tiny tower stays fast
MAX_PIXELS = 8 * 8 * 28 * 28
SUFFIX = "\nSummarize the above {} in one word:"
TEXTS = [
    "a red square",
    "the quick brown fox jumps over the lazy dog while a small cat sleeps on a warm chair",
    "hello",
    "one two three four five six seven",
]


def _images(seed: int, sizes=((56, 56), (90, 120), (40, 200), (300, 280))):
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _clips() -> list[list[np.ndarray]]:
    """Two already-sampled clips of different lengths and sizes (frames as HxWx3 uint8)."""
    rng = np.random.default_rng(7)
    return [
        [np.full((56, 56, 3), 40 * i, np.uint8) for i in range(4)],
        [rng.integers(0, 255, (64, 90, 3), dtype=np.uint8) for _ in range(6)],
    ]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _distinct(vectors: np.ndarray) -> None:
    """A parity check has teeth only if different inputs give clearly different vectors."""
    sims = _cos(vectors[:, None], vectors[None])
    assert sims[~np.eye(len(vectors), dtype=bool)].max() < 0.99


@pytest.fixture(scope="module")
def qwen2_vl_path(tmp_path_factory):
    return make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"), max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def encoder(qwen2_vl_path):
    return OmniEncoder.from_pretrained(qwen2_vl_path, device="cpu")


@pytest.fixture(scope="module")
def encoder32(qwen2_vl_path):
    return OmniEncoder.from_pretrained(qwen2_vl_path, device="cpu", dtype="float32")


def test_backbone_fast_paths_and_lora_targets(encoder):
    backbone = encoder.backbone
    assert isinstance(backbone, Qwen2VLBackbone)
    assert type(backbone.model) is Qwen2VLForConditionalGeneration
    assert encoder.modalities == {"text", "image", "video"}
    assert backbone.fast_text_path  # both fast paths are installed (parity checks them below)
    assert backbone.model.model.visual.patch_embed.forward.__qualname__.startswith(
        "patch_embed_as_grid"
    )
    targets = backbone.lora_target_modules()
    # q, k, v, o and gate, up, down per decoder layer, nothing else
    assert len(targets) == 7 * backbone.num_layers
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    linears = [n for n, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear)]
    tower = [n for n in linears if n.startswith("model.visual.")]
    assert tower and not set(tower) & set(targets)
    assert "lm_head" not in targets


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(qwen2_vl_path, encoder, encoder32, dtype):
    """The recipe by hand: one user turn (medium, text, suffix), the checkpoint's template with
    its default system turn and the generation prompt, a left-padded batch per modality (the
    items' lengths differ), the last layer's last token. Ours runs the same batches through
    the fast paths. (Against each item alone, bf16 padding alone moves transformers' own
    vectors to cosine 0.9998 on this random model.)"""
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        qwen2_vl_path, dtype=dtype, attn_implementation="sdpa"
    ).eval()
    processor = AutoProcessor.from_pretrained(qwen2_vl_path)
    processor.tokenizer.padding_side = "left"
    images, clips = _images(0), _clips()

    def direct(modality, parts, **media):
        suffix = {"type": "text", "text": SUFFIX.format(modality)}
        prompts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [part, suffix]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for part in parts
        ]
        assert all(
            p.startswith("<|im_start|>system\nYou are a helpful assistant.") for p in prompts
        )
        inputs = processor(text=prompts, padding=True, return_tensors="pt", **media)
        mask = inputs["attention_mask"]
        assert mask[:, -1].all() and not mask[:, 0].all()  # left padding, and some of it
        with torch.no_grad():
            h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
        return torch.nn.functional.normalize(h, dim=-1).float().numpy()

    videos = [torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2) for frames in clips]
    expected = {
        "text": direct("text", [{"type": "text", "text": t} for t in TEXTS]),
        "image": direct("image", [{"type": "image"}] * len(images), images=images),
        "video": direct(
            "video",
            [{"type": "video"}] * len(videos),
            videos=videos,
            videos_kwargs={"do_sample_frames": False},
        ),
    }
    items = {"text": TEXTS, "image": images, "video": [Video(frames) for frames in clips]}
    chosen = encoder if dtype == torch.bfloat16 else encoder32
    ours = {m: chosen.encode(x, batch_size=len(x)) for m, x in items.items()}
    for modality in items:
        assert _cos(ours[modality], expected[modality]).min() >= 0.9999, modality
    _distinct(np.concatenate(list(ours.values())))


# --------------------------------------------------------------------------- Ops-MM-embedding


def _reference_vectors(model, column: str, values, feature=None) -> np.ndarray:
    features = datasets.Features({column: feature}) if feature is not None else None
    ds = datasets.Dataset.from_dict({column: values}, features=features)
    meta = mteb.get_tasks(modalities=[column], exclusive_modality_filter=True)[0].metadata
    loader = create_dataloader(ds, task_metadata=meta, batch_size=4)
    out = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    return np.asarray(out, dtype=np.float32)


def _as_ops_mm(encoder: OmniEncoder, reference: OpsMMEmbeddingWrapper) -> OmniEncoder:
    """Configure our encoder with Ops-MM-embedding's prompt and pixel bounds: no suffix (the
    checkpoint's default system turn is the wrapper's instruction for a task without one),
    ``<|endoftext|>`` after the generation prompt, and the wrapper's image processor bounds."""
    backbone = encoder.backbone
    backbone.template = lambda messages: (
        HFChatBackbone.template(backbone, messages) + "<|endoftext|>"
    )
    backbone.processor.image_processor.size = dict(reference.processor.image_processor.size)
    return encoder


def test_ops_mm_embedding_wrapper_parity(qwen2_vl_path):
    """Our pipeline (processor, left padding, forward, last token) configured as
    Ops-MM-embedding gives mteb's wrapper's vectors for text and images in padded batches."""
    reference = OpsMMEmbeddingWrapper(str(qwen2_vl_path), device="cpu")  # float32 on CPU
    images = _images(1)
    ref_text = _reference_vectors(reference, "text", TEXTS)
    ref_image = _reference_vectors(reference, "image", images, datasets.Image())
    _distinct(ref_text)
    _distinct(ref_image)
    no_suffix = dict.fromkeys(SUFFIXES, "")
    for dtype, floor in (("float32", 0.9999), (None, 0.999)):
        ours = _as_ops_mm(
            OmniEncoder.from_pretrained(
                qwen2_vl_path, device="cpu", dtype=dtype, prompt_suffixes=no_suffix
            ),
            reference,
        )
        assert _cos(ours.encode(TEXTS, batch_size=4), ref_text).min() >= floor
        assert _cos(ours.encode(images, batch_size=4), ref_image).min() >= floor
    # and the LCO prompt is another one
    assert (
        _cos(
            OmniEncoder.from_pretrained(qwen2_vl_path, device="cpu", dtype="float32").encode(
                TEXTS, batch_size=4
            ),
            ref_text,
        ).max()
        < 0.99
    )


# --------------------------------------------------------------------------- the rest


def test_audio_is_refused_naming_the_item(encoder):
    tone = np.sin(np.arange(8000) / 10).astype(np.float32)
    with pytest.raises(ModalityError, match=r"item 2: qwen2_vl backbone .* cannot encode audio"):
        encoder.encode(["fine", _images(2)[0], Audio(tone, sampling_rate=16_000)])
    with pytest.raises(ModalityError, match=r"item 0: .*cannot encode audio"):
        encoder.encode([["a caption", Audio(tone, sampling_rate=16_000)]])


def test_generate_strips_the_prompt(qwen2_vl_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt alone
    gives, without the prompt."""
    items = [TEXTS[1], TEXTS[2], _images(3)[1]]
    out = encoder32.generate(items, "Describe:", max_new_tokens=4, batch_size=8)
    assert len(out) == 3 and all(isinstance(s, str) and s for s in out)

    model = Qwen2VLForConditionalGeneration.from_pretrained(qwen2_vl_path).eval()
    processor = AutoProcessor.from_pretrained(qwen2_vl_path)

    def alone(content, **media):
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], return_tensors="pt", **media)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        return processor.tokenizer.decode(
            ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )

    prompt = {"type": "text", "text": "Describe:"}
    expected = [alone([{"type": "text", "text": t}, prompt]) for t in items[:2]]
    expected.append(alone([{"type": "image"}, prompt], images=[items[2]]))
    assert out == expected


def test_all_layer_states(encoder32):
    """Every layer's states (embeddings first); the last, pooled, is the fast path's vector."""
    backbone = encoder32.backbone
    inputs = backbone.prepare([load_item(TEXTS[0], 0), load_item(_images(4)[0], 1)])
    with torch.no_grad():
        layers = backbone.forward(inputs, all_layers=True)
        fast = last_token(backbone.forward(inputs))
    assert len(layers.states) == backbone.num_layers + 1
    pooled = last_token(layers)
    assert pooled.shape == (backbone.num_layers + 1, 2, backbone.hidden_size)
    torch.testing.assert_close(pooled[-1], fast, rtol=1e-4, atol=1e-4)


def test_train_cli_adapter_changes_the_vectors(qwen2_vl_path, tmp_path):
    rows = [
        {"anchor": f"a {colour} circle", "positive": f"the circle is {colour}"}
        for colour in ("red", "blue", "green", "yellow", "black", "white")
    ]
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", str(qwen2_vl_path), "--data", str(data), "--output", str(out)]
    args += ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--precision", "fp32"]
    args += ["--lr", "2e-3", "--warmup-steps", "1"]
    assert main(args) == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] and all(
        t.startswith("model.language_model.") for t in config["target_modules"]
    )

    items = ["a red circle", _images(5)[0]]
    base = OmniEncoder.from_pretrained(qwen2_vl_path, device="cpu", dtype="float32")
    adapted = OmniEncoder.from_pretrained(
        qwen2_vl_path, adapter=out / "adapter", device="cpu", dtype="float32"
    )
    assert _cos(base.encode(items), adapted.encode(items)).max() < 0.9999
