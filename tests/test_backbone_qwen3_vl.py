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
import numpy as np
import pytest
import torch
from family_checks import (
    TEXTS,
    assert_adapter_changes_vectors,
    assert_adapter_targets,
    assert_all_layer_states,
    assert_audio_refused,
    assert_distinct,
    assert_generate_matches_greedy,
    assert_lora_targets,
    assert_matches,
    colour_rows,
    cos,
    describe_cases,
    frame_clips,
    load_reference,
    mteb_vectors,
    random_images,
    reference_batches,
    train_via_cli,
)
from mteb.models.model_implementations.qwen3_vl_embedding_models import (
    DEFAULT_INSTRUCTION,
    IMAGE_FACTOR,
    MAX_PIXELS,
    MIN_PIXELS,
    Qwen3VLEmbeddingWrapper,
)
from transformers import Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration

from lcoemb import OmniEncoder, Video
from lcoemb.backbones import Qwen3VLBackbone, fastpath
from lcoemb.inputs import load_item
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.qwen3_vl import make_tiny_qwen3_vl

# 64 to 144 merged patches of 32 px per image (the floor is Qwen3-VL's shipped 64)
TINY_MAX_PIXELS = 12 * 12 * 32 * 32
MODEL_CLASSES = {
    "dense": Qwen3VLForConditionalGeneration,
    "moe": Qwen3VLMoeForConditionalGeneration,
}


def _metadata(clip: list[np.ndarray]) -> dict:
    """The frame rate lcoemb samples clips at (2 fps), for the processor's timestamps."""
    return {"total_num_frames": len(clip), "fps": 2.0, "frames_indices": list(range(len(clip)))}


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
    return OmniEncoder.from_pretrained(qwen3_vl_path, device="cpu", dtype="bfloat16")


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
    # q, k, v, o per layer, and gate, up, down where the MLP is dense; experts are 3-D weights
    _, tower = assert_lora_targets(
        backbone,
        per_layer=4 if variant == "moe" else 7,
        is_tower=lambda name: name.startswith("model.visual."),
    )
    assert any("deepstack_merger_list" in n for n in tower)


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
    model, processor = load_reference(
        MODEL_CLASSES[variant], qwen3_vl_path, dtype=dtype, attn_implementation="sdpa"
    )
    processor.tokenizer.padding_side = "left"
    clips = frame_clips()
    items, expected = reference_batches(
        model,
        processor,
        prompt_start="<|im_start|>user\n",
        images=random_images(0),
        clips=clips,
        video_metadata=[_metadata(c) for c in clips],
    )
    assert_matches(encoder if dtype == torch.bfloat16 else encoder32, items, expected)


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
    images = random_images(1)
    right = [encoder32.encode(x, batch_size=4) for x in (TEXTS, images)]
    wrong = [forced.encode(x, batch_size=4) for x in (TEXTS, images)]
    assert cos(wrong[0], right[0]).max() < 0.99
    assert cos(wrong[1], right[1]).max() < 0.9


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
    assert np.isfinite(capped.encode([Video(frame_clips()[1])])).all()


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


def test_qwen3_vl_embedding_wrapper_parity(variant, embedding_path):
    """Our pipeline configured as Qwen3-VL-Embedding (its instruction as the system turn, no
    suffix, the wrapper's image pixel bounds) gives mteb's wrapper's vectors (through
    sentence-transformers) for text and images in padded batches. Its videos need qwen-vl-utils,
    which is not installed. The wrapper runs in float32; our bf16 vectors are compared with
    them only for the dense model: in bf16 a MoE router picks other experts for some tokens
    (cosine 0.997 here), which is precision, not the pipeline (bf16 parity is checked against
    a bf16 transformers forward above)."""
    reference = Qwen3VLEmbeddingWrapper(str(embedding_path), device="cpu")  # float32
    images = random_images(2)
    instruction = DEFAULT_INSTRUCTION  # the wrapper's for every task (none has a prompt)
    ref_text = mteb_vectors(reference, "text", TEXTS, instruction=instruction)
    ref_image = mteb_vectors(reference, "image", images, datasets.Image(), instruction=instruction)
    assert_distinct(ref_text)
    assert_distinct(ref_image)
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
        assert cos(ours.encode(TEXTS, batch_size=4), ref_text).min() >= floor
        assert cos(ours.encode(images, batch_size=4), ref_image).min() >= floor
    assert IMAGE_FACTOR == 32  # the wrapper's pixel bounds are in Qwen3-VL's merged patches


# --------------------------------------------------------------------------- the rest


def test_audio_is_refused_naming_the_item(encoder):
    assert_audio_refused(encoder, "qwen3_vl", random_images(3)[0])


def test_generate_strips_the_prompt(variant, qwen3_vl_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt alone
    gives, without the prompt."""
    cases = describe_cases(random_images(4)[1])
    assert_generate_matches_greedy(
        encoder32, MODEL_CLASSES[variant], qwen3_vl_path, cases, nonempty=True
    )


def test_all_layer_states(encoder32):
    """Every layer's states (embeddings first, DeepStack in play); the last, pooled, is the
    embedding."""
    assert_all_layer_states(encoder32.backbone, [TEXTS[0], random_images(5)[0]])


def test_train_cli_adapter_changes_the_vectors(qwen3_vl_path, tmp_path):
    rows = colour_rows(("red", "blue", "green", "yellow", "black", "white"))
    adapter = train_via_cli(qwen3_vl_path, tmp_path, rows)
    assert_adapter_targets(adapter, "model.language_model.")
    items = ["a red circle", random_images(6)[0]]
    assert_adapter_changes_vectors(qwen3_vl_path, adapter, items)
