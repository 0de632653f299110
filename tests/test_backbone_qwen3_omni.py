"""Qwen3-Omni-MoE thinker on a tiny random checkpoint (4 experts, top-2, hidden 64, 2 layers):
the recipe against a transformers forward pass written out here (text, image, audio, video and
a composite; bf16 and float32), why audio runs clip by clip, why the Qwen2.5 text fast path
stays off, a full thinker+talker+code2wav checkpoint loading as its thinker, parity with mteb's
Qwen-Omni wrapper, LoRA targets, training, generation and all-layer states.

Qwen3-Omni has all four towers, so no modality is refused (``test_fast_paths_and_lora_targets``
checks the modality set; the refusal path itself is the base class's).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import assert_within_one_bf16_step, write_video
from family_checks import (
    SR,
    TEXTS,
    assert_adapter_changes_vectors,
    assert_adapter_targets,
    assert_all_layer_states,
    assert_distinct,
    assert_generate_matches_greedy,
    assert_lora_targets,
    assert_matches,
    colour_rows,
    cos,
    describe_cases,
    frame_clips,
    image_row,
    load_reference,
    mteb_vectors,
    noise,
    random_images,
    reference_batch,
    reference_batches,
    sine,
    train_via_cli,
)
from mteb.models.model_implementations.qwen_omni_lm import QwenOmniWrapper
from transformers import AutoProcessor, Qwen3OmniMoeThinkerForConditionalGeneration

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import Qwen3OmniBackbone, fastpath
from lcoemb.inputs import load_item
from lcoemb.testing.qwen3_omni import make_tiny_qwen3_omni, make_tiny_qwen3_omni_thinker

# at most 8x8 merged patches of 32 px per image or frame
TINY_MAX_PIXELS = 8 * 8 * 32 * 32


def _images(seed: int) -> list:
    return random_images(seed, sizes=((64, 64), (90, 120), (40, 200), (150, 140)))


def _clips() -> list[np.ndarray]:
    """16 kHz clips: under one 100-frame chunk (0.5 s), a partial last hop (1.005 s), several
    chunks (3 s) and a tone; their lengths make every batch pad."""
    rng = np.random.default_rng(1)
    return [noise(rng, 8_000), noise(rng, 16_077), noise(rng, 48_005), sine(2.2)]


def _videos() -> list[list[np.ndarray]]:
    """Two already-sampled clips of different lengths and sizes (frames as HxWx3 uint8)."""
    return frame_clips((64, 64), (64, 96))


@pytest.fixture(scope="module")
def omni3_path(tmp_path_factory) -> Path:
    return make_tiny_qwen3_omni_thinker(
        tmp_path_factory.mktemp("tiny-qwen3-omni"), max_pixels=TINY_MAX_PIXELS
    )


@pytest.fixture(scope="module")
def encoder(omni3_path):
    return OmniEncoder.from_pretrained(omni3_path, device="cpu", dtype="bfloat16")


@pytest.fixture(scope="module")
def encoder32(omni3_path):
    return OmniEncoder.from_pretrained(omni3_path, device="cpu", dtype="float32")


def test_fast_paths_and_lora_targets(encoder):
    backbone = encoder.backbone
    assert isinstance(backbone, Qwen3OmniBackbone)
    assert type(backbone.model) is Qwen3OmniMoeThinkerForConditionalGeneration
    assert encoder.modalities == {"text", "image", "audio", "video"}
    assert not backbone.fast_text_path  # see test_qwen2_5_text_fast_path_does_not_fit

    # the grid patch embedding is installed and gives the class's forward in bf16 (bit-identical
    # on the AMD EPYC; on an Intel Xeon one value in ~10,000 moved by one bf16 step)
    patch_embed = backbone.model.model.visual.patch_embed
    assert "patch_embed" in patch_embed.forward.__qualname__
    pixels = backbone.prepare([load_item(im, i) for i, im in enumerate(_images(0))])
    pixels = pixels["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        grid = patch_embed(pixels)
        assert_within_one_bf16_step(grid, type(patch_embed).forward(patch_embed, pixels))

    # q, k, v, o per layer: the experts are stacked 3-D weights and the router a bare weight
    targets, towers = assert_lora_targets(
        backbone,
        per_layer=4,
        is_tower=lambda name: name.startswith(("model.visual.", "model.audio_tower.")),
    )
    assert {t.rsplit(".", 1)[1] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert any("merger_list" in n for n in towers) and any("audio_tower" in n for n in towers)


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
    model, processor = load_reference(
        Qwen3OmniMoeThinkerForConditionalGeneration,
        omni3_path,
        dtype=dtype,
        attn_implementation="sdpa",
    )
    images, clips = _images(0), _clips()
    start = "<|im_start|>user\n"
    items, expected = reference_batches(
        model, processor, prompt_start=start, images=images, clips=_videos()
    )
    # each clip and the composite alone
    direct = functools.partial(reference_batch, model, processor, prompt_start=start)
    caption = "a caption for the picture and the sound"
    expected["audio"] = np.concatenate(
        [direct("audio", [[{"type": "audio"}]], audio=[clip]) for clip in clips]
    )
    items["audio"] = [Audio(clip, SR) for clip in clips]
    expected["composite"] = direct(
        "image",
        [[{"type": "audio"}, {"type": "image"}, {"type": "text", "text": caption}]],
        images=[images[1]],
        audio=[clips[2]],
    )
    items["composite"] = [{"text": caption, "image": images[1], "audio": Audio(clips[2], SR)}]
    assert_matches(encoder if dtype == torch.bfloat16 else encoder32, items, expected)


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
    assert cos(batch, each).min() >= 0.99999


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
    assert cos(loaded.encode(items), encoder32.encode(items)).min() >= 0.99999

    loaded.backbone.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "qwen3_omni_moe_thinker"


# --------------------------------------------------------------------------- mteb


QWEN_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)


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

    ours = OmniEncoder.from_pretrained(omni3_path, device="cpu", dtype="bfloat16")
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
        ref = mteb_vectors(reference, column, values, feature)
        assert_distinct(ref)
        assert cos(ours.encode(items, batch_size=4), ref).min() >= 0.9999, column


# --------------------------------------------------------------------------- the rest


def test_generate_strips_the_prompt(omni3_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt alone
    gives, without the prompt."""
    cases = describe_cases(_images(4)[1], _clips()[1])
    assert_generate_matches_greedy(
        encoder32, Qwen3OmniMoeThinkerForConditionalGeneration, omni3_path, cases, nonempty=True
    )


def test_all_layer_states(encoder32):
    """Every layer's states (embeddings first, DeepStack in play); the last, pooled, is the
    embedding."""
    _, _, pooled = assert_all_layer_states(encoder32.backbone, [TEXTS[0], _images(5)[0]])
    assert not torch.allclose(pooled[-2], pooled[-1], atol=1e-2)


def test_train_cli_adapter_changes_the_vectors(omni3_path, tmp_path):
    sf.write(tmp_path / "tone.wav", _clips()[3], SR)
    rows = colour_rows(("red", "blue", "green", "yellow"))
    rows += [image_row(tmp_path / "im.png", _images(6)[0], "a noisy picture")]
    rows += [{"anchor": {"audio": str(tmp_path / "tone.wav")}, "positive": "a pure tone"}]
    adapter = train_via_cli(omni3_path, tmp_path, rows)
    assert_adapter_targets(adapter, "model.language_model.layers.")
    items = ["a red circle", _images(6)[0], Audio(_clips()[3], SR)]
    assert_adapter_changes_vectors(omni3_path, adapter, items)
