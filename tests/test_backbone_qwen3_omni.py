"""Qwen3-Omni-MoE thinker on a tiny random checkpoint (4 experts, top-2, hidden 64, 2 layers):
the recipe against a transformers forward pass written out here (text, image, audio, video and
a composite; bf16 and float32), why audio runs clip by clip, why the Qwen2.5 text fast path
stays off, a full thinker+talker+code2wav checkpoint loading as its thinker, parity with mteb's
Qwen-Omni wrapper, LoRA targets, training, generation and all-layer states.

Qwen3-Omni has all four towers, so no modality is refused (``test_fast_paths_and_lora_targets``
checks the modality set; the refusal path itself is the base class's).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import mteb
import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import torch
from conftest import write_video
from mteb._create_dataloaders import create_dataloader
from mteb.models.model_implementations.qwen_omni_lm import QwenOmniWrapper
from transformers import AutoProcessor, Qwen3OmniMoeThinkerForConditionalGeneration

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import Qwen3OmniBackbone, fastpath
from lcoemb.cli import main
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token
from lcoemb.testing.qwen3_omni import make_tiny_qwen3_omni, make_tiny_qwen3_omni_thinker

# at most 8x8 merged patches of 32 px per image or frame
TINY_MAX_PIXELS = 8 * 8 * 32 * 32
SR = 16_000
SUFFIX = "\nSummarize the above {} in one word:"
TEXTS = [
    "a red square",
    "the quick brown fox jumps over the lazy dog while a small cat sleeps on a warm chair",
    "hello",
    "one two three four five six seven",
]


def _images(seed: int, sizes=((64, 64), (90, 120), (40, 200), (150, 140))):
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _clips(seed: int = 1) -> list[np.ndarray]:
    """16 kHz clips: under one 100-frame chunk (0.5 s), a partial last hop (1.005 s), several
    chunks (3 s) and a tone; their lengths make every batch pad."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(2.2 * SR)) / SR
    return [
        (0.1 * rng.standard_normal(8_000)).astype(np.float32),
        (0.1 * rng.standard_normal(16_077)).astype(np.float32),
        (0.1 * rng.standard_normal(48_005)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
    ]


def _videos() -> list[list[np.ndarray]]:
    """Two already-sampled clips of different lengths and sizes (frames as HxWx3 uint8)."""
    rng = np.random.default_rng(7)
    return [
        [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(4)],
        [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(6)],
    ]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _distinct(vectors: np.ndarray) -> None:
    """A parity check has teeth only if different inputs give clearly different vectors."""
    sims = _cos(vectors[:, None], vectors[None])
    assert sims[~np.eye(len(vectors), dtype=bool)].max() < 0.99


@pytest.fixture(scope="module")
def omni3_path(tmp_path_factory) -> Path:
    return make_tiny_qwen3_omni_thinker(
        tmp_path_factory.mktemp("tiny-qwen3-omni"), max_pixels=TINY_MAX_PIXELS
    )


@pytest.fixture(scope="module")
def encoder(omni3_path):
    return OmniEncoder.from_pretrained(omni3_path, device="cpu")


@pytest.fixture(scope="module")
def encoder32(omni3_path):
    return OmniEncoder.from_pretrained(omni3_path, device="cpu", dtype="float32")


def test_fast_paths_and_lora_targets(encoder):
    backbone = encoder.backbone
    assert isinstance(backbone, Qwen3OmniBackbone)
    assert type(backbone.model) is Qwen3OmniMoeThinkerForConditionalGeneration
    assert encoder.modalities == {"text", "image", "audio", "video"}
    assert not backbone.fast_text_path  # see test_qwen2_5_text_fast_path_does_not_fit

    # the grid patch embedding is installed and bit-identical to the class's forward in bf16
    patch_embed = backbone.model.model.visual.patch_embed
    assert "patch_embed" in patch_embed.forward.__qualname__
    pixels = backbone.prepare([load_item(im, i) for i, im in enumerate(_images(0))])
    pixels = pixels["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(patch_embed(pixels), type(patch_embed).forward(patch_embed, pixels))

    # q, k, v, o per layer: the experts are stacked 3-D weights and the router a bare weight
    targets = backbone.lora_target_modules()
    assert len(targets) == 4 * backbone.num_layers
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    assert {t.rsplit(".", 1)[1] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    linears = [n for n, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear)]
    towers = [n for n in linears if n.startswith(("model.visual.", "model.audio_tower."))]
    assert any("merger_list" in n for n in towers) and any("audio_tower" in n for n in towers)
    assert not set(towers) & set(targets) and "lm_head" not in targets


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    from lcoemb.testing import make_tiny_qwen2_5_omni_thinker

    path = make_tiny_qwen2_5_omni_thinker(tmp_path / "qwen2_5_omni", max_pixels=4 * 28 * 28)
    with pytest.raises(ValueError, match="'qwen2_5_omni_thinker' checkpoint, not Qwen3-Omni"):
        Qwen3OmniBackbone.from_pretrained(path, device="cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(omni3_path, encoder, encoder32, dtype):
    """The recipe by hand: one user turn (media, text, suffix), the checkpoint's template (no
    system turn) with the generation prompt, the last layer's last token after the final norm.
    Texts, images and videos run as left-padded batches (their lengths differ); each audio clip
    and the composite run alone, which is the processor path a clip's vector must not depend on
    its batch-mates to match (see test_audio_is_batch_independent). Images and videos check
    DeepStack and the grid patch embedding, texts the q/k norms and the MoE routing."""
    model = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(
        omni3_path, dtype=dtype, attn_implementation="sdpa"
    ).eval()
    processor = AutoProcessor.from_pretrained(omni3_path)
    images, clips, videos = _images(0), _clips(), _videos()

    def direct(modality, parts, **media):
        suffix = {"type": "text", "text": SUFFIX.format(modality)}
        prompts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [*part, suffix]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for part in parts
        ]
        assert all(p.startswith("<|im_start|>user\n") for p in prompts)
        inputs = processor(text=prompts, padding=True, return_tensors="pt", **media)
        if len(parts) > 1:
            mask = inputs["attention_mask"]
            assert mask[:, -1].all() and not mask[:, 0].all()  # left padding, and some of it
        with torch.no_grad():
            h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
        return torch.nn.functional.normalize(h, dim=-1).float().numpy()

    frames = [torch.from_numpy(np.stack(f)).permute(0, 3, 1, 2) for f in videos]
    caption = "a caption for the picture and the sound"
    expected = {
        "text": direct("text", [[{"type": "text", "text": t}] for t in TEXTS]),
        "image": direct("image", [[{"type": "image"}]] * len(images), images=images),
        "video": direct(
            "video",
            [[{"type": "video"}]] * len(videos),
            videos=frames,
            videos_kwargs={"do_sample_frames": False},
        ),
        "audio": np.concatenate(
            [direct("audio", [[{"type": "audio"}]], audio=[clip]) for clip in clips]
        ),
        "composite": direct(
            "image",
            [[{"type": "audio"}, {"type": "image"}, {"type": "text", "text": caption}]],
            images=[images[1]],
            audio=[clips[2]],
        ),
    }
    items = {
        "text": TEXTS,
        "image": images,
        "video": [Video(f) for f in videos],
        "audio": [Audio(clip, SR) for clip in clips],
        "composite": [{"text": caption, "image": images[1], "audio": Audio(clips[2], SR)}],
    }
    chosen = encoder if dtype == torch.bfloat16 else encoder32
    ours = {m: chosen.encode(x, batch_size=len(x)) for m, x in items.items()}
    for modality in items:
        assert _cos(ours[modality], expected[modality]).min() >= 0.9999, modality
    _distinct(np.concatenate(list(ours.values())))


def test_audio_is_batch_independent(omni3_path, encoder32):
    """Why audio runs clip by clip. With transformers' own batching a clip's inputs and states
    depend on its batch-mates: the processor pads the clips to the longest, which turns a clip's
    partial last hop into one more frame (and audio token), and the audio tower pads every chunk
    to the longest, its convolution biases leaking into the last frames of a shorter chunk. The
    backbone gives every clip what it gets alone, whatever the batch."""
    short, partial, long_ = _clips()[:3]
    processor = AutoProcessor.from_pretrained(omni3_path)
    token = [processor.audio_token]
    alone = processor(text=token, audio=[partial], return_tensors="pt")
    together = processor(text=token * 2, audio=[partial, long_], return_tensors="pt", padding=True)
    assert together["feature_attention_mask"][0].sum() == alone["feature_attention_mask"].sum() + 1

    model = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(omni3_path).eval()
    one = processor(text=token, audio=[short], return_tensors="pt")
    both = processor(text=token * 2, audio=[short, long_], return_tensors="pt", padding=True)
    with torch.no_grad():
        by_itself = model.get_audio_features(one["input_features"], one["feature_attention_mask"])
        batched = model.get_audio_features(both["input_features"], both["feature_attention_mask"])
    n = by_itself.last_hidden_state.shape[0]
    assert not torch.allclose(batched.last_hidden_state[:n], by_itself.last_hidden_state, atol=1e-2)

    clips = [Audio(c, SR) for c in _clips()]
    batch = encoder32.encode(clips, batch_size=len(clips))
    each = np.concatenate([encoder32.encode([c]) for c in clips])
    assert _cos(batch, each).min() >= 0.99999


def test_qwen2_5_text_fast_path_does_not_fit(omni3_path):
    """Why the backbone leaves the text fast path off: forced on, it cannot run the MoE block
    (which takes ``(batch, seq, d)`` states, not packed tokens), and would skip the per-head q/k
    norms and the DeepStack features besides. If fastpath learns Qwen3-MoE, this test says to
    turn it on."""
    forced = OmniEncoder.from_pretrained(omni3_path, device="cpu", dtype="float32")
    fastpath.install_last_token_path(forced.backbone.language_model)
    forced.backbone.fast_text_path = True
    with pytest.raises(ValueError):
        forced.encode(TEXTS, batch_size=4)


def test_full_checkpoint_loads_only_the_thinker(omni3_path, encoder32, tmp_path):
    """A ``qwen3_omni_moe`` folder (thinker, talker and code2wav, as Qwen3-Omni-30B-A3B-Instruct
    ships) loads as its thinker alone, with the thinker folder's weights and vectors; saving it
    writes a thinker checkpoint."""
    full = make_tiny_qwen3_omni(tmp_path / "full", max_pixels=TINY_MAX_PIXELS)
    config = json.loads((full / "config.json").read_text())
    assert config["model_type"] == "qwen3_omni_moe" and config["enable_audio_output"]

    loaded = OmniEncoder.from_pretrained(full, device="cpu", dtype="float32")
    model = loaded.backbone.model
    assert type(model) is Qwen3OmniMoeThinkerForConditionalGeneration
    assert not [n for n, _ in model.named_modules() if "talker" in n or "code2wav" in n]
    reference = encoder32.backbone.model.state_dict()
    assert model.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())

    items = [TEXTS[1], _images(1)[0], Audio(_clips()[1], SR), Video(_videos()[0])]
    assert _cos(loaded.encode(items), encoder32.encode(items)).min() >= 0.99999

    loaded.backbone.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "qwen3_omni_moe_thinker"


# --------------------------------------------------------------------------- mteb


QWEN_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)


def _reference_vectors(model, column: str, values, feature=None) -> np.ndarray:
    features = datasets.Features({column: feature}) if feature is not None else None
    ds = datasets.Dataset.from_dict({column: values}, features=features)
    meta = mteb.get_tasks(modalities=[column], exclusive_modality_filter=True)[0].metadata
    loader = create_dataloader(ds, task_metadata=meta, batch_size=4)
    out = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    return np.asarray(out, dtype=np.float32)


@pytest.mark.slow
def test_mteb_qwen_omni_wrapper_parity(omni3_path, tmp_path):
    """mteb's ``QwenOmniWrapper`` (its Qwen3-Omni-30B-A3B Instruct/Thinking/Captioner entries)
    loads the thinker class and prompts differently from LCO: Qwen's default system turn, the
    media then the raw text with no suffix, no generation prompt, so it pools the newline after
    ``<|im_end|>``; audio and video run one clip per batch. Our encoder with that prompt (set on
    the backbone instance) gives its vectors through mteb's own input path, in padded batches.
    Audio files are 16 kHz: from other rates the two pipelines' resamplers differ slightly."""
    reference = QwenOmniWrapper(str(omni3_path), revision=None, device="cpu")
    assert type(reference.model) is Qwen3OmniMoeThinkerForConditionalGeneration
    assert reference.per_clip

    ours = OmniEncoder.from_pretrained(omni3_path, device="cpu")
    backbone = ours.backbone

    def wrapper_prompt(item, instruction=None, *, suffix=None):
        content = [{"type": m, m: "x"} for m in ("video", "audio", "image") if m in item.modalities]
        content.append({"type": "text", "text": "".join(item.of("text"))})
        messages = [
            {"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM}]},
            {"role": "user", "content": content},
        ]
        return backbone.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )

    backbone.prompt = wrapper_prompt
    assert backbone.prompt(load_item("hi", 0)).endswith("user\nhi<|im_end|>\n")

    rng = np.random.default_rng(3)
    wavs = []
    for i, seconds in enumerate([0.4, 2.3, 5.0]):
        wavs.append(str(tmp_path / f"noise{i}.wav"))
        sf.write(wavs[-1], 0.1 * rng.standard_normal(int(seconds * SR)), SR)
    mp4s = [
        str(write_video(tmp_path / "a.mp4", seconds=3, fps=10)),
        str(write_video(tmp_path / "b.mp4", seconds=5, fps=4, size=(32, 32))),
    ]
    images = _images(2)
    cases = [
        ("text", TEXTS, TEXTS, None),
        ("image", images, images, datasets.Image()),
        ("audio", [Audio(w) for w in wavs], wavs, datasets.Audio()),
        ("video", [Video(v) for v in mp4s], mp4s, datasets.Video()),
    ]
    for column, items, values, feature in cases:
        ref = _reference_vectors(reference, column, values, feature)
        _distinct(ref)
        assert _cos(ours.encode(items, batch_size=4), ref).min() >= 0.9999, column


# --------------------------------------------------------------------------- the rest


def test_generate_strips_the_prompt(omni3_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt alone
    gives, without the prompt."""
    clip = _clips()[1]
    items = [TEXTS[1], TEXTS[2], _images(4)[1], Audio(clip, SR)]
    out = encoder32.generate(items, "Describe:", max_new_tokens=4, batch_size=8)
    assert len(out) == 4 and all(isinstance(s, str) and s for s in out)

    model = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(omni3_path).eval()
    processor = AutoProcessor.from_pretrained(omni3_path)

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
    expected.append(alone([{"type": "audio"}, prompt], audio=[clip]))
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
    assert not torch.allclose(pooled[-2], pooled[-1], atol=1e-2)


def test_train_cli_adapter_changes_the_vectors(omni3_path, tmp_path):
    _images(6)[0].save(tmp_path / "im.png")
    sf.write(tmp_path / "tone.wav", _clips()[3], SR)
    rows = [
        {"anchor": f"a {colour} circle", "positive": f"the circle is {colour}"}
        for colour in ("red", "blue", "green", "yellow")
    ]
    rows += [{"anchor": {"image": str(tmp_path / "im.png")}, "positive": "a noisy picture"}]
    rows += [{"anchor": {"audio": str(tmp_path / "tone.wav")}, "positive": "a pure tone"}]
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", str(omni3_path), "--data", str(data), "--output", str(out)]
    args += ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--precision", "fp32"]
    args += ["--lr", "2e-3", "--warmup-steps", "1"]
    assert main(args) == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] and all(
        t.startswith("model.language_model.layers.") for t in config["target_modules"]
    )

    items = ["a red circle", _images(6)[0], Audio(_clips()[3], SR)]
    base = OmniEncoder.from_pretrained(omni3_path, device="cpu", dtype="float32")
    adapted = OmniEncoder.from_pretrained(
        omni3_path, adapter=out / "adapter", device="cpu", dtype="float32"
    )
    assert _cos(base.encode(items), adapted.encode(items)).max() < 0.9999
