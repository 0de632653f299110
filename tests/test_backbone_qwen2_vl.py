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

import datasets
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
from mteb.models.model_implementations.ops_mm_models import OpsMMEmbeddingWrapper
from transformers import Qwen2VLForConditionalGeneration

from lcoemb import OmniEncoder
from lcoemb.backbones import HFChatBackbone, Qwen2VLBackbone
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.qwen2_vl import make_tiny_qwen2_vl

# 8x8 merged patches of 28 px at most per image and frame: the tiny tower stays fast
MAX_PIXELS = 8 * 8 * 28 * 28


@pytest.fixture(scope="module")
def qwen2_vl_path(tmp_path_factory):
    return make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"), max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def encoder(qwen2_vl_path):
    return OmniEncoder.from_pretrained(qwen2_vl_path, device="cpu", dtype="bfloat16")


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
    # q, k, v, o and gate, up, down per decoder layer, nothing else
    assert_lora_targets(
        backbone, per_layer=7, is_tower=lambda name: name.startswith("model.visual.")
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(qwen2_vl_path, encoder, encoder32, dtype):
    """The recipe by hand: one user turn (medium, text, suffix), the checkpoint's template with
    its default system turn and the generation prompt, a left-padded batch per modality (the
    items' lengths differ), the last layer's last token. Ours runs the same batches through
    the fast paths. (Against each item alone, bf16 padding alone moves transformers' own
    vectors to cosine 0.9998 on this random model.)"""
    model, processor = load_reference(
        Qwen2VLForConditionalGeneration, qwen2_vl_path, dtype=dtype, attn_implementation="sdpa"
    )
    processor.tokenizer.padding_side = "left"
    items, expected = reference_batches(
        model,
        processor,
        prompt_start="<|im_start|>system\nYou are a helpful assistant.",
        images=random_images(0),
        clips=frame_clips(),
    )
    assert_matches(encoder if dtype == torch.bfloat16 else encoder32, items, expected)


# --------------------------------------------------------------------------- Ops-MM-embedding


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
    images = random_images(1)
    ref_text = mteb_vectors(reference, "text", TEXTS)
    ref_image = mteb_vectors(reference, "image", images, datasets.Image())
    assert_distinct(ref_text)
    assert_distinct(ref_image)
    no_suffix = dict.fromkeys(SUFFIXES, "")
    for dtype, floor in (("float32", 0.9999), (None, 0.999)):
        ours = _as_ops_mm(
            OmniEncoder.from_pretrained(
                qwen2_vl_path, device="cpu", dtype=dtype, prompt_suffixes=no_suffix
            ),
            reference,
        )
        assert cos(ours.encode(TEXTS, batch_size=4), ref_text).min() >= floor
        assert cos(ours.encode(images, batch_size=4), ref_image).min() >= floor
    # and the LCO prompt is another one
    assert (
        cos(
            OmniEncoder.from_pretrained(qwen2_vl_path, device="cpu", dtype="float32").encode(
                TEXTS, batch_size=4
            ),
            ref_text,
        ).max()
        < 0.99
    )


# --------------------------------------------------------------------------- the rest


def test_audio_is_refused_naming_the_item(encoder):
    assert_audio_refused(encoder, "qwen2_vl", random_images(2)[0])


def test_generate_strips_the_prompt(qwen2_vl_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt alone
    gives, without the prompt."""
    cases = describe_cases(random_images(3)[1])
    assert_generate_matches_greedy(
        encoder32, Qwen2VLForConditionalGeneration, qwen2_vl_path, cases, nonempty=True
    )


def test_all_layer_states(encoder32):
    """Every layer's states (embeddings first); the last, pooled, is the fast path's vector."""
    assert_all_layer_states(encoder32.backbone, [TEXTS[0], random_images(4)[0]])


def test_train_cli_adapter_changes_the_vectors(qwen2_vl_path, tmp_path):
    rows = colour_rows(("red", "blue", "green", "yellow", "black", "white"))
    adapter = train_via_cli(qwen2_vl_path, tmp_path, rows)
    assert_adapter_targets(adapter, "model.language_model.")
    items = ["a red circle", random_images(5)[0]]
    assert_adapter_changes_vectors(qwen2_vl_path, adapter, items)
