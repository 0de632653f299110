"""LLaVA-NeXT (E5-V's backbone) on a tiny random checkpoint: the recipe against a transformers
forward pass written out here, parity with mteb's E5-V wrapper, E5-V's suffixes as the family
default, LoRA targets, training, generation and all-layer states."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from family_checks import (
    TEXTS,
    assert_adapter_changes_vectors,
    assert_adapter_targets,
    assert_all_layer_states,
    assert_distinct,
    assert_generate_matches_greedy,
    assert_lora_targets,
    beep,
    colour_rows,
    cos,
    image_row,
    load_reference,
    mteb_vectors,
    random_images,
    reference_alone,
    train_via_cli,
)
from mteb.models.model_implementations.e5_v import E5VModel
from transformers import LlavaNextForConditionalGeneration

from lcoemb import OmniEncoder, Video
from lcoemb.backbones import LlavaNextBackbone, ModalityError
from lcoemb.backbones.llava_next import E5V_CHAT_TEMPLATE
from lcoemb.inputs import load_item
from lcoemb.prompts import SUFFIXES
from lcoemb.testing.llava_next import make_tiny_llava_next

TEXT_SUFFIX = "\nSummary above sentence in one word: "
IMAGE_SUFFIX = "\nSummary above image in one word: "


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
    return OmniEncoder.from_pretrained(llava_path, device="cpu", dtype="bfloat16")


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
    # 4 attention and 3 MLP projections per Llama layer, nothing else
    assert_lora_targets(
        backbone,
        per_layer=7,
        is_tower=lambda name: "vision_tower" in name or "multi_modal_projector" in name,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_matches_an_independent_transformers_forward(llava_path, encoder, encoder32, dtype):
    """The recipe by hand: one user turn (image, then the text and suffix), the checkpoint's
    template with a generation prompt, each item alone (no padding), the last layer's last
    token. Ours encodes the items in padded batches (lengths differ)."""
    model, processor = load_reference(
        LlavaNextForConditionalGeneration, llava_path, dtype=dtype, attn_implementation="sdpa"
    )
    images = random_images(0)

    def direct(content, **media):
        return reference_alone(model, processor, content, **media)

    expected = [direct([{"type": "text", "text": t + TEXT_SUFFIX}]) for t in TEXTS]
    expected += [
        direct([{"type": "image"}, {"type": "text", "text": IMAGE_SUFFIX}], images=[im])
        for im in images
    ]
    ours = (encoder if dtype == torch.bfloat16 else encoder32).encode(
        [*TEXTS, *images], batch_size=4
    )
    assert cos(ours, np.stack(expected)).min() >= 0.9999
    assert_distinct(ours)


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


def test_e5v_wrapper_parity(e5v_path, e5v_reference):
    """With E5-V's prompt as the chat template and the family's default (E5-V) suffixes, our
    vectors are mteb's E5-V wrapper's, text and image, in padded batches."""
    images = random_images(1)
    ref_text = mteb_vectors(e5v_reference, "text", TEXTS)
    ref_image = mteb_vectors(e5v_reference, "image", images, datasets.Image())
    for dtype, floor in (("float32", 0.9999), (None, 0.999)):  # the wrapper runs in float32
        ours = OmniEncoder.from_pretrained(e5v_path, device="cpu", dtype=dtype)
        assert cos(ours.encode(TEXTS, batch_size=4), ref_text).min() >= floor
        assert cos(ours.encode(images, batch_size=4), ref_image).min() >= floor
    assert_distinct(ref_text)
    assert_distinct(ref_image)


def test_prompts_against_e5v(llava_path, encoder, e5v_path, e5v_reference):
    """E5-V's template gives E5-V's string; the llava-hf template differs from it exactly where
    the module docstring says (a newline before the text, no " \\n" after the header)."""
    text = load_item(TEXTS[0], 0)
    e5v = OmniEncoder.from_pretrained(e5v_path, device="cpu").backbone
    assert e5v.prompt(text) == e5v_reference.text_prompt.replace("<sent>", TEXTS[0])
    assert e5v.prompt(load_item(random_images(2)[0], 0)) == e5v_reference.img_prompt
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
    image = random_images(3)[0]
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
    assert cos(lco.encode(TEXTS), encoder.encode(TEXTS)).max() < 0.999
    assert LlavaNextBackbone.suffixes["text"] == TEXT_SUFFIX  # the class is untouched


def test_missing_modalities_and_pixel_cap_are_refused(llava_path, encoder):
    with pytest.raises(ModalityError, match=r"item 1: llava_next backbone .* cannot encode audio"):
        encoder.encode(["fine", beep()])
    frames = [np.zeros((56, 56, 3), np.uint8)] * 2
    with pytest.raises(ModalityError, match=r"item 2: .*cannot encode video"):
        encoder.encode(["fine", random_images(4)[0], Video(frames)])
    with pytest.raises(ValueError, match="image_grid_pinpoints"):
        OmniEncoder.from_pretrained(llava_path, device="cpu", max_image_pixels=56 * 56)


def test_generate_strips_the_prompt(llava_path, encoder32):
    """Batched, left-padded generation gives each item what greedy decoding of its prompt
    alone gives, without the prompt."""
    image = random_images(5)[1]
    cases = [(t, [{"type": "text", "text": t + "Describe:"}], {}) for t in TEXTS[1:3]]
    cases.append(
        (image, [{"type": "image"}, {"type": "text", "text": "Describe:"}], {"images": [image]})
    )
    assert_generate_matches_greedy(
        encoder32, LlavaNextForConditionalGeneration, llava_path, cases, nonempty=False
    )


def test_all_layer_states(encoder32):
    assert_all_layer_states(encoder32.backbone, [TEXTS[0], TEXTS[1]])


def test_train_cli_adapter_changes_the_vectors(llava_path, tmp_path):
    images = random_images(6, sizes=((56, 56), (60, 90)))
    rows = colour_rows(["red", "blue", "green", "yellow"])
    for i, image in enumerate(images):
        rows.append(image_row(tmp_path / f"im{i}.png", image, f"picture {i}"))
    adapter = train_via_cli(llava_path, tmp_path, rows)
    assert_adapter_targets(adapter, "model.language_model.")
    assert_adapter_changes_vectors(llava_path, adapter, ["a red circle", images[0]])
