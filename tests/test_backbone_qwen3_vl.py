"""Qwen3-VL, dense and MoE (Qwen3-VL-Embedding's backbone), on tiny random checkpoints: the
recipe against a transformers forward pass written out here, parity with mteb's
Qwen3-VL-Embedding wrapper, why the Qwen2.5 text fast path stays off, video timestamps and the
per-frame pixel cap, LoRA targets, training, generation and all-layer states. Every test that
takes ``variant`` runs on both checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import mteb
import numpy as np
import PIL.Image
import pytest
import torch
from mteb._create_dataloaders import create_dataloader
from mteb.models.model_implementations.qwen3_vl_embedding_models import (
    DEFAULT_INSTRUCTION,
    IMAGE_FACTOR,
    MAX_PIXELS,
    MIN_PIXELS,
    Qwen3VLEmbeddingWrapper,
)
from transformers import (
    AutoProcessor,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeForConditionalGeneration,
)

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import ModalityError, Qwen3VLBackbone, fastpath
from lcoemb.cli import main
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.qwen3_vl import make_tiny_qwen3_vl

# 64 to 144 merged patches of 32 px per image (the floor is Qwen3-VL's shipped 64)
TINY_MAX_PIXELS = 12 * 12 * 32 * 32
MODEL_CLASSES = {
    "dense": Qwen3VLForConditionalGeneration,
    "moe": Qwen3VLMoeForConditionalGeneration,
}
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


def _metadata(clip: list[np.ndarray]) -> dict:
    """The frame rate lcoemb samples clips at (2 fps), for the processor's timestamps."""
    return {"total_num_frames": len(clip), "fps": 2.0, "frames_indices": list(range(len(clip)))}


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _distinct(vectors: np.ndarray) -> None:
    """A parity check has teeth only if different inputs give clearly different vectors."""
    sims = _cos(vectors[:, None], vectors[None])
    assert sims[~np.eye(len(vectors), dtype=bool)].max() < 0.99


@pytest.fixture(scope="module", params=["dense", "moe"])
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def qwen3_vl_path(variant, tmp_path_factory) -> Path:
    return make_tiny_qwen3_vl(
        tmp_path_factory.mktemp(f"tiny-qwen3-vl-{variant}"),
        max_pixels=TINY_MAX_PIXELS,
        moe=variant == "moe",
    )


@pytest.fixture(scope="module")
def encoder(qwen3_vl_path):
    return OmniEncoder.from_pretrained(qwen3_vl_path, device="cpu")


@pytest.fixture(scope="module")
def encoder32(qwen3_vl_path):
    return OmniEncoder.from_pretrained(qwen3_vl_path, device="cpu", dtype="float32")


def test_model_class_fast_paths_and_lora_targets(variant, encoder):
    backbone = encoder.backbone
    assert isinstance(backbone, Qwen3VLBackbone)
    assert type(backbone.model) is MODEL_CLASSES[variant]
    assert encoder.modalities == {"text", "image", "video"}
    assert not backbone.fast_text_path  # see test_qwen2_5_text_fast_path_does_not_fit
    assert backbone.model.model.visual.patch_embed.forward.__qualname__.startswith(
        "patch_embed_as_grid"
    )
    targets = backbone.lora_target_modules()
    # q, k, v, o per layer, and gate, up, down where the MLP is dense; experts are 3-D weights
    assert len(targets) == (4 if variant == "moe" else 7) * backbone.num_layers
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    linears = [n for n, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear)]
    tower = [n for n in linears if n.startswith("model.visual.")]
    assert any("deepstack_merger_list" in n for n in tower)
    assert tower and not set(tower) & set(targets)
    assert "lm_head" not in targets


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    from lcoemb.testing import make_tiny_qwen2_5_vl

    path = make_tiny_qwen2_5_vl(tmp_path / "qwen2_5_vl", max_pixels=4 * 28 * 28)
    with pytest.raises(ValueError, match="'qwen2_5_vl' checkpoint, not Qwen3-VL"):
        Qwen3VLBackbone.from_pretrained(path, device="cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(
    variant, qwen3_vl_path, encoder, encoder32, dtype
):
    """The recipe by hand: one user turn (medium, text, suffix), the checkpoint's template (no
    system turn) with the generation prompt, a left-padded batch per modality (the items'
    lengths differ), the last layer's last token after the final norm; videos with 2 fps
    timestamps. Images check DeepStack and the grid patch embedding, texts the q/k norms."""
    model = (
        MODEL_CLASSES[variant]
        .from_pretrained(qwen3_vl_path, dtype=dtype, attn_implementation="sdpa")
        .eval()
    )
    processor = AutoProcessor.from_pretrained(qwen3_vl_path)
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
        assert all(p.startswith("<|im_start|>user\n") for p in prompts)
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
            videos_kwargs={
                "do_sample_frames": False,
                "video_metadata": [_metadata(c) for c in clips],
            },
        ),
    }
    items = {"text": TEXTS, "image": images, "video": [Video(frames) for frames in clips]}
    chosen = encoder if dtype == torch.bfloat16 else encoder32
    ours = {m: chosen.encode(x, batch_size=len(x)) for m, x in items.items()}
    for modality in items:
        assert _cos(ours[modality], expected[modality]).min() >= 0.9999, modality
    _distinct(np.concatenate(list(ours.values())))


def test_qwen2_5_text_fast_path_does_not_fit(qwen3_vl_path, variant, encoder32):
    """Why the backbone leaves the text fast path off: forced on, it skips the per-head q/k
    norms (texts) and drops the DeepStack features (images, further off), and it cannot run a
    MoE block at all. If fastpath learns Qwen3, this test says to turn it on."""
    forced = OmniEncoder.from_pretrained(qwen3_vl_path, device="cpu", dtype="float32")
    fastpath.install_last_token_path(forced.backbone.language_model)
    forced.backbone.fast_text_path = True
    if variant == "moe":
        with pytest.raises(ValueError):
            forced.encode(TEXTS, batch_size=4)
        return
    images = _images(1)
    right = [encoder32.encode(x, batch_size=4) for x in (TEXTS, images)]
    wrong = [forced.encode(x, batch_size=4) for x in (TEXTS, images)]
    assert _cos(wrong[0], right[0]).max() < 0.99
    assert _cos(wrong[1], right[1]).max() < 0.9


def test_video_timestamps_and_per_frame_pixel_cap(qwen3_vl_path, encoder):
    """A clip's prompt carries a timestamp per frame pair at lcoemb's 2 fps (not the processor's
    24 fps guess); ``max_video_pixels`` caps each frame, whatever the clip's length."""
    backbone = encoder.backbone
    clip = load_item(Video([np.zeros((160, 224, 3), np.uint8)] * 6), 0)
    inputs = backbone.prepare([clip])
    prompt = backbone.tokenizer.decode(inputs["input_ids"][0])
    assert [f"<{t} seconds>" in prompt for t in ("0.2", "1.2", "2.2")] == [True] * 3
    assert "<3.2 seconds>" not in prompt
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert (t, h * w) == (3, 5 * 7 * 4)  # the processor's own size: 160x224 is 5x7 merged

    cap = 4 * 32 * 32
    capped = OmniEncoder.from_pretrained(qwen3_vl_path, device="cpu", max_video_pixels=cap)
    for frames in (2, 6, 12):
        clip = load_item(Video([np.zeros((160, 224, 3), np.uint8)] * frames), 0)
        t, h, w = capped.backbone.prepare([clip])["video_grid_thw"][0].tolist()
        assert t == frames // 2 and h * w * 16 * 16 <= cap
    assert np.isfinite(capped.encode([Video(_clips()[1])])).all()


def test_a_one_frame_clip_is_one_tubelet_at_its_own_time(encoder):
    """Under half a second at 2 fps is one frame, which Qwen3-VL's processor refuses alone:
    the frame is repeated into one tubelet (as the processor pads odd clips) at time 0."""
    backbone = encoder.backbone
    still = np.random.default_rng(8).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    one = backbone.prepare([load_item(Video([still]), 0)])
    two = backbone.prepare([load_item(Video([still, still]), 0)])
    assert one["video_grid_thw"].tolist() == two["video_grid_thw"].tolist() == [[1, 4, 6]]
    torch.testing.assert_close(one["pixel_values_videos"], two["pixel_values_videos"])
    prompts = [backbone.tokenizer.decode(x["input_ids"][0]) for x in (one, two)]
    assert "<0.0 seconds>" in prompts[0]
    assert prompts[0].replace("<0.0 seconds>", "<0.2 seconds>") == prompts[1]
    assert np.isfinite(encoder.encode([Video([still])])).all()


# --------------------------------------------------------------------------- Qwen3-VL-Embedding


def _write_sentence_transformers_files(folder: Path, dimension: int) -> None:
    """The module files of a Qwen3-VL-Embedding folder as sentence-transformers 6 reads them:
    the Transformer (every input a chat message), last-token pooling, normalisation."""

    def write(name: str, value) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(value, indent=2))

    entry = {"method": "forward", "method_output_name": "last_hidden_state"}
    write(
        "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    write(
        "sentence_bert_config.json",
        {
            "transformer_task": "feature-extraction",
            "modality_config": {
                "text": entry,
                "image": entry,
                "video": entry,
                "message": {**entry, "format": "structured"},
            },
            "module_output_name": "token_embeddings",
            "processing_kwargs": {"chat_template": {"add_generation_prompt": True}},
        },
    )
    write(
        "1_Pooling/config.json",
        {"embedding_dimension": dimension, "pooling_mode": "lasttoken", "include_prompt": True},
    )
    write("2_Normalize/config.json", {})


@pytest.fixture(scope="module")
def embedding_path(variant, tmp_path_factory) -> Path:
    """The same weights as ``qwen3_vl_path``, as a Qwen3-VL-Embedding folder: a template whose
    default system turn is the embedder's default instruction, and sentence-transformers files."""
    path = make_tiny_qwen3_vl(
        tmp_path_factory.mktemp(f"tiny-qwen3-vl-embedding-{variant}"),
        max_pixels=TINY_MAX_PIXELS,
        moe=variant == "moe",
        default_system_prompt=DEFAULT_INSTRUCTION,
    )
    _write_sentence_transformers_files(path, dimension=64)
    return path


def _reference_vectors(model, column: str, values, feature=None) -> np.ndarray:
    features = datasets.Features({column: feature}) if feature is not None else None
    ds = datasets.Dataset.from_dict({column: values}, features=features)
    meta = mteb.get_tasks(modalities=[column], exclusive_modality_filter=True)[0].metadata
    assert model.get_task_instruction(meta, None) == DEFAULT_INSTRUCTION  # no task prompt
    loader = create_dataloader(ds, task_metadata=meta, batch_size=4)
    out = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    return np.asarray(out, dtype=np.float32)


def test_qwen3_vl_embedding_wrapper_parity(variant, embedding_path):
    """Our pipeline configured as Qwen3-VL-Embedding (its instruction as the system turn, no
    suffix, the wrapper's image pixel bounds) gives mteb's wrapper's vectors (through
    sentence-transformers) for text and images in padded batches. Its videos need qwen-vl-utils,
    which is not installed. The wrapper runs in float32; our bf16 vectors are compared with
    them only for the dense model: in bf16 a MoE router picks other experts for some tokens
    (cosine 0.997 here), which is precision, not the pipeline (bf16 parity is checked against
    a bf16 transformers forward above)."""
    reference = Qwen3VLEmbeddingWrapper(str(embedding_path), device="cpu")  # float32
    images = _images(2)
    ref_text = _reference_vectors(reference, "text", TEXTS)
    ref_image = _reference_vectors(reference, "image", images, datasets.Image())
    _distinct(ref_text)
    _distinct(ref_image)
    no_suffix = dict.fromkeys(SUFFIXES, "")
    checks = [("float32", 0.9999)] + ([(None, 0.999)] if variant == "dense" else [])
    for dtype, floor in checks:
        ours = OmniEncoder.from_pretrained(
            embedding_path, device="cpu", dtype=dtype, prompt_suffixes=no_suffix
        )
        ours.backbone.processor.image_processor.size = {
            "shortest_edge": MIN_PIXELS,
            "longest_edge": MAX_PIXELS,
        }
        prompt = ours.backbone.prompt(load_item(TEXTS[0], 0))
        assert prompt.startswith(f"<|im_start|>system\n{DEFAULT_INSTRUCTION}<|im_end|>")
        assert _cos(ours.encode(TEXTS, batch_size=4), ref_text).min() >= floor
        assert _cos(ours.encode(images, batch_size=4), ref_image).min() >= floor
    assert IMAGE_FACTOR == 32  # the wrapper's pixel bounds are in Qwen3-VL's merged patches


# --------------------------------------------------------------------------- the rest


def test_audio_is_refused_naming_the_item(encoder):
    tone = np.sin(np.arange(8000) / 10).astype(np.float32)
    with pytest.raises(ModalityError, match=r"item 2: qwen3_vl backbone .* cannot encode audio"):
        encoder.encode(["fine", _images(3)[0], Audio(tone, sampling_rate=16_000)])
    with pytest.raises(ModalityError, match=r"item 0: .*cannot encode audio"):
        encoder.encode([["a caption", Audio(tone, sampling_rate=16_000)]])


def test_generate_strips_the_prompt(variant, qwen3_vl_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt alone
    gives, without the prompt."""
    items = [TEXTS[1], TEXTS[2], _images(4)[1]]
    out = encoder32.generate(items, "Describe:", max_new_tokens=4, batch_size=8)
    assert len(out) == 3 and all(isinstance(s, str) and s for s in out)

    model = MODEL_CLASSES[variant].from_pretrained(qwen3_vl_path).eval()
    processor = AutoProcessor.from_pretrained(qwen3_vl_path)

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
    """Every layer's states (embeddings first, DeepStack in play); the last, pooled, is the
    embedding."""
    backbone = encoder32.backbone
    inputs = backbone.prepare([load_item(TEXTS[0], 0), load_item(_images(5)[0], 1)])
    with torch.no_grad():
        layers = backbone.forward(inputs, all_layers=True)
        final = last_token(backbone.forward(inputs))
    assert len(layers.states) == backbone.num_layers + 1
    pooled = last_token(layers)
    assert pooled.shape == (backbone.num_layers + 1, 2, backbone.hidden_size)
    torch.testing.assert_close(pooled[-1], final, rtol=1e-4, atol=1e-4)


def test_train_cli_adapter_changes_the_vectors(qwen3_vl_path, tmp_path):
    rows = [
        {"anchor": f"a {colour} circle", "positive": f"the circle is {colour}"}
        for colour in ("red", "blue", "green", "yellow", "black", "white")
    ]
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", str(qwen3_vl_path), "--data", str(data), "--output", str(out)]
    args += ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--precision", "fp32"]
    args += ["--lr", "2e-3", "--warmup-steps", "1"]
    assert main(args) == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] and all(
        t.startswith("model.language_model.") for t in config["target_modules"]
    )

    items = ["a red circle", _images(6)[0]]
    base = OmniEncoder.from_pretrained(qwen3_vl_path, device="cpu", dtype="float32")
    adapted = OmniEncoder.from_pretrained(
        qwen3_vl_path, adapter=out / "adapter", device="cpu", dtype="float32"
    )
    assert _cos(base.encode(items), adapted.encode(items)).max() < 0.9999
