"""OmniEncoder: the recipe on Qwen2.5-VL, batching and order, adapters, save/load, generation."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from lcoemb import Audio, InputError, OmniEncoder, Video, devices
from lcoemb.backbones import ModalityError, QwenOmniBackbone, QwenVLBackbone, backbone_class
from lcoemb.inputs import load_item


def _images(seed: int, n: int) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (90, 120), (200, 40), (56, 56), (150, 100)]
    return [
        PIL.Image.fromarray(rng.integers(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def vl_encoder(vl_path):
    return OmniEncoder.from_pretrained(vl_path, device="cpu", dtype="bfloat16")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_backbone_is_chosen_from_config(omni_encoder, vl_encoder):
    assert isinstance(omni_encoder.backbone, QwenOmniBackbone)
    assert isinstance(vl_encoder.backbone, QwenVLBackbone)
    assert omni_encoder.modalities == {"text", "image", "audio", "video"}
    assert vl_encoder.modalities == {"text", "image", "video"}
    with pytest.raises(ValueError, match="no lcoemb backbone for model_type 'bert'"):
        backbone_class("bert")


def test_qwen_vl_matches_an_independent_transformers_forward(vl_path, vl_encoder):
    """The recipe written out by hand: one user turn (media, text, suffix), the checkpoint's
    template with a generation prompt, bf16, last layer's last token, L2 norm in bf16."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        vl_path, dtype=torch.bfloat16, attn_implementation="sdpa"
    ).eval()
    processor = AutoProcessor.from_pretrained(vl_path)
    images = _images(3, 3)
    texts = ["a red square on a table", "two dogs"]
    frames = [np.full((56, 56, 3), 20 * i, np.uint8) for i in range(4)]

    def direct(content, **media):
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], return_tensors="pt", **media)
        with torch.no_grad():
            h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
        return torch.nn.functional.normalize(h, dim=-1).float().numpy()[0]

    suffix = "\nSummarize the above {} in one word:"
    expected = [
        direct([{"type": "image"}, {"type": "text", "text": suffix.format("image")}], images=[im])
        for im in images
    ]
    expected += [
        direct([{"type": "text", "text": t}, {"type": "text", "text": suffix.format("text")}])
        for t in texts
    ]
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    expected.append(
        direct(
            [{"type": "video"}, {"type": "text", "text": suffix.format("video")}],
            videos=[video],
            videos_kwargs={"do_sample_frames": False},
        )
    )
    # one item per batch on both sides: this checks the recipe; batching is checked below
    ours = vl_encoder.encode([*images, *texts, Video(frames)], batch_size=1)
    assert _cos(ours, np.stack(expected)).min() >= 0.9999


def test_missing_modality_is_an_error_naming_the_item(vl_encoder, media):
    with pytest.raises(ModalityError, match=r"item 1: qwen2_5_vl backbone .* cannot encode audio"):
        vl_encoder.encode(["fine", Audio(media["wav16k"])])
    with pytest.raises(ModalityError, match=r"item 0: .*cannot encode audio"):
        vl_encoder.encode([["text", Audio(media["wav16k"])]])


def test_result_is_in_input_order_whatever_the_batching(omni_encoder, media):
    items = [
        "short",
        _images(5, 1)[0],
        "a much longer sentence about many things " * 5,
        Audio(media["wav16k"]),
        Video(media["mp4"]),
        ["caption", _images(6, 1)[0]],
        "mid length text here",
    ]
    together = omni_encoder.encode(items, batch_size=3)
    alone = np.concatenate([omni_encoder.encode([x]) for x in items])
    assert together.dtype == np.float32 and together.shape == (7, omni_encoder.embedding_dim)
    assert _cos(together, alone).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-2)


def test_plan_groups_by_modality_and_sorts_by_length(omni_encoder):
    items = ["aa", "a" * 50, _images(1, 1)[0], "a" * 10, "a" * 30]
    plan = omni_encoder.plan_batches(items, batch_size=2)
    assert plan == [[1, 4], [3, 0], [2]]


def test_batch_size_defaults_to_the_backbones_own(omni_encoder, monkeypatch):
    from lcoemb.backbones.mini import MiniBackbone

    assert omni_encoder.default_batch_size == 8  # the billion-parameter families' default
    assert MiniBackbone.default_batch_size == 32
    texts = [f"sentence number {i}" for i in range(7)]
    monkeypatch.setattr(omni_encoder.backbone, "default_batch_size", 3)
    assert [len(b) for b in omni_encoder.plan_batches(texts)] == [3, 3, 1]
    sizes = []
    forward = omni_encoder.backbone.forward
    monkeypatch.setattr(
        omni_encoder.backbone,
        "forward",
        lambda inputs, **kw: sizes.append(len(inputs["input_ids"])) or forward(inputs, **kw),
    )
    omni_encoder.encode(texts)
    assert sizes == [3, 3, 1]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        omni_encoder.encode(texts, batch_size=0)


@pytest.mark.parametrize("fast", [True, False])
def test_dtype_defaults_to_bf16_only_where_the_device_computes_it_fast(
    omni_path, monkeypatch, fast
):
    """A CPU without AMX or AVX-512 bf16 runs bf16 matmuls many times slower than float32, so
    there the default is float32; an explicit dtype always wins."""
    monkeypatch.setattr(devices, "fast_bf16", lambda device: fast)
    expected = torch.bfloat16 if fast else torch.float32
    assert devices.default_dtype("cpu") == expected
    assert devices.default_dtype("mps") == torch.bfloat16
    encoder = OmniEncoder.from_pretrained(omni_path, device="cpu")
    assert encoder.dtype == expected
    assert {p.dtype for p in encoder.backbone.language_model.parameters()} == {expected}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explicit = OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="bfloat16")
    assert explicit.dtype == torch.bfloat16
    # asking for bf16 where it is slow works, with a warning that says so
    slow = [w for w in caught if "runs several times slower" in str(w.message)]
    assert len(slow) == (0 if fast else 1)


def test_long_text_is_cut_at_300_tokens(omni_encoder):
    tok = omni_encoder.backbone.tokenizer
    long = " ".join(f"word{i}" for i in range(600))
    ids = tok(long).input_ids
    assert len(ids) > 300
    cut = tok.decode(ids[:300])
    a, b = omni_encoder.encode([long, cut])
    assert _cos(a, b) >= 0.9999


def test_instruction_and_unnormalized_output(omni_encoder):
    plain = omni_encoder.encode(["what is a cat?"])
    instructed = omni_encoder.encode(["what is a cat?"], instruction="Retrieve a passage.")
    assert _cos(plain, instructed)[0] < 0.9999
    raw = omni_encoder.encode(["what is a cat?"], normalize=False)
    assert np.linalg.norm(raw) > 1.5
    np.testing.assert_allclose(raw / np.linalg.norm(raw), plain, atol=1e-2)


def test_all_layers_final_entry_is_the_pooled_state(omni_encoder):
    items = ["alpha beta", _images(7, 1)[0]]
    (batch, states), *_ = list(omni_encoder.iter_hidden_states(items, all_layers=True))
    assert states.shape[0] == omni_encoder.backbone.num_layers + 1
    pooled = omni_encoder.encode(items, normalize=False)
    np.testing.assert_allclose(states[-1].float().numpy(), pooled[batch], rtol=1e-3, atol=1e-3)


def test_adapter_applies_and_old_save_folders_still_load(omni_path, omni_adapter, tmp_path):
    texts = ["one thing", "another thing entirely"]
    plain = OmniEncoder.from_pretrained(omni_path, device="cpu").encode(texts)
    adapted = OmniEncoder.from_pretrained(omni_path, adapter=omni_adapter, device="cpu")
    with_adapter = adapted.encode(texts)
    assert _cos(plain, with_adapter).max() < 0.999

    # the layout save_pretrained wrote before merging by default: base weights, the adapter in
    # a subfolder, and lcoemb.json naming it (saving itself is tested in test_reliability_models)
    old = tmp_path / "old"
    shutil.copytree(omni_path, old)
    shutil.copytree(omni_adapter, old / "adapter")
    (old / "lcoemb.json").write_text(json.dumps({"family": "qwen2_5_omni", "adapter": "adapter"}))
    reloaded = OmniEncoder.from_pretrained(old, device="cpu")
    assert _cos(reloaded.encode(texts), with_adapter).min() >= 0.9999

    with pytest.raises(FileNotFoundError, match="no peft adapter"):
        OmniEncoder.from_pretrained(omni_path, adapter=tmp_path, device="cpu")


def test_generate_returns_text_per_item(omni_encoder, media):
    out = omni_encoder.generate(
        ["hello", _images(8, 1)[0], Audio(media["wav16k"])], "Describe:", max_new_tokens=3
    )
    assert len(out) == 3 and all(isinstance(s, str) for s in out)


def test_pixel_caps_reach_the_processor(omni_path, omni_encoder):
    from lcoemb.inputs import load_item

    capped = OmniEncoder.from_pretrained(
        omni_path, device="cpu", max_image_pixels=4 * 28 * 28, max_video_pixels=4 * 28 * 28
    )
    image = load_item(_images(9, 3)[2], 0)  # 150 x 100 px
    frames = [np.zeros((224, 224, 3), np.uint8)] * 2
    video = load_item(Video(frames), 1)
    default = omni_encoder.backbone.prepare([image, video])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # as `size`, not the deprecated max_pixels
        small = capped.backbone.prepare([image, video])
    assert small["image_grid_thw"].prod() <= 2 * 2 * 4 < default["image_grid_thw"].prod()
    assert small["video_grid_thw"].prod() < default["video_grid_thw"].prod()


def test_on_error_reports_bad_items_and_encodes_the_rest(omni_encoder, media, monkeypatch):
    """One unreadable file must not cost a whole collection: with ``on_error`` each bad item is
    reported with its index, its row is NaN, and every other row is what it would be alone."""
    from lcoemb.inputs import ImageRef

    good = ["first text", Audio(media["wav16k"]), "a third text that is somewhat longer"]
    items = [good[0], ImageRef(media["png_corrupt"]), good[1], Audio(media["wav_empty"])]
    items += [good[2], "rejected by the model"]
    backbone = omni_encoder.backbone
    prepare = backbone.prepare

    def picky(loaded, instruction=None):  # the model refuses one item, failing its whole batch
        if any(
            v == "rejected by the model" for item in loaded for m, v in item.parts if m == "text"
        ):
            raise RuntimeError("processor says no")
        return prepare(loaded, instruction)

    monkeypatch.setattr(backbone, "prepare", picky)
    errors: dict[int, str] = {}
    vectors = omni_encoder.encode(
        items, batch_size=4, on_error=lambda i, e: errors.setdefault(i, str(e))
    )
    assert sorted(errors) == [1, 3, 5]
    assert errors[1].startswith("item 1: cannot open image")
    assert "zero-length" in errors[3] or "empty" in errors[3]
    assert errors[5] == "item 5: cannot encode: processor says no"
    assert np.isnan(vectors[[1, 3, 5]]).all()
    expected = omni_encoder.encode(good, batch_size=1)
    np.testing.assert_allclose(vectors[[0, 2, 4]], expected, atol=2e-3)
    with pytest.raises(InputError, match="item 1"):
        omni_encoder.encode(items)


def test_pooling_takes_each_rows_last_real_token():
    from lcoemb.pooling import HiddenStates, at_positions, last_token, last_token_positions

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])  # left, none, right padding
    positions = last_token_positions(mask)
    assert positions.tolist() == [3, 3, 1]
    states = torch.arange(3 * 4 * 2, dtype=torch.float32).view(3, 4, 2)
    expected = torch.stack([states[0, 3], states[1, 3], states[2, 1]])
    assert torch.equal(at_positions(states, positions), expected)
    assert torch.equal(last_token(HiddenStates(states, positions)), expected)
    layers = last_token(HiddenStates((states, 2 * states), positions))
    assert torch.equal(layers, torch.stack([expected, 2 * expected]))


def test_add_lora_attaches_a_seeded_trainable_adapter(omni_path):
    """A fresh LoRA on every target module, trainable alone, initialised by its seed only."""
    rng = torch.random.get_rng_state()
    weights = []
    for _ in range(2):
        encoder = OmniEncoder.from_pretrained(omni_path, device="cpu")
        model = encoder.add_lora(r=4, alpha=8, dropout=0.0, seed=3)
        assert encoder.peft_model is model
        adapted = {
            name.split(".lora_A")[0].removeprefix("base_model.model.")
            for name, _ in model.named_modules()
            if ".lora_A" in name
        }
        assert adapted == set(encoder.backbone.lora_target_modules())
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        weights.append(trainable)
        with pytest.raises(ValueError, match="already loaded"):
            encoder.add_lora(r=4, alpha=8)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global random state is left alone
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_add_lora_targets_narrow_the_adapter_and_unknown_names_are_refused(omni_path):
    """``targets`` keeps only the named Linears of the language model; a name that matches none
    is an error listing the names there are, not a smaller adapter than asked for."""
    encoder = OmniEncoder.from_pretrained(omni_path, device="cpu")
    everything = encoder.backbone.lora_target_modules()
    with pytest.raises(ValueError, match=r"\['qkv'\].*available: \[.*'q_proj'"):
        encoder.add_lora(r=2, alpha=4, targets=["q_proj", "qkv"])
    assert encoder.peft_model is None
    model = encoder.add_lora(r=2, alpha=4, targets=["q_proj", "v_proj"])
    adapted = {
        name.split(".lora_A")[0].removeprefix("base_model.model.")
        for name, _ in model.named_modules()
        if ".lora_A" in name
    }
    expected = {n for n in everything if n.endswith((".q_proj", ".v_proj"))}
    assert adapted == expected and 0 < len(expected) < len(everything)


def test_prompt_suffixes_override_the_family_default_and_survive_save(vl_path, tmp_path):
    """A suffix override changes the prompt (and so the vector), and a saved folder keeps it."""
    custom = {"text": "\nSummary above sentence in one word:"}
    plain = OmniEncoder.from_pretrained(vl_path, device="cpu")
    changed = OmniEncoder.from_pretrained(vl_path, device="cpu", prompt_suffixes=custom)
    text = load_item("a red square", 0)
    assert changed.backbone.prompt(text).count("Summary above sentence") == 1
    image = load_item(_images(0, 1)[0], 0)
    assert "Summarize the above image" in changed.backbone.prompt(image)
    a, b = plain.encode(["a red square"]), changed.encode(["a red square"])
    assert float(a[0] @ b[0]) < 0.9999
    changed.save_pretrained(tmp_path / "saved")
    again = OmniEncoder.from_pretrained(tmp_path / "saved", device="cpu")
    assert again.backbone.suffixes["text"] == custom["text"]
    with pytest.raises(ValueError, match=r"unknown key.*txt"):
        OmniEncoder.from_pretrained(vl_path, prompt_suffixes={"txt": "x"})
