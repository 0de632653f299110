"""`lcoemb export --format sentence-transformers`: the folder loads with stock
sentence-transformers and gives OmniEncoder's vectors, with and without a merged LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from sentence_transformers import SentenceTransformer

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.cli import main
from lcoemb.export import (
    EXPORTABLE_FAMILIES,
    REFUSED_FAMILIES,
    ExportError,
    export_sentence_transformers,
    lco_chat_template,
)
from lcoemb.export import sentence_transformers as st_export
from lcoemb.inputs import load_item
from lcoemb.mini.model import MODEL_TYPE as MINI_MODEL_TYPE
from lcoemb.prompts import SUFFIXES

MIN_COSINE = 0.9999
SR = 16_000
TEXTS = ["a red square", "two dogs chase a ball across a wide green park at noon"]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _image(seed: int, size: tuple[int, int] = (60, 90)) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _frames(seed: int) -> np.ndarray:
    """Four already-sampled 56x56 frames, (T, H, W, C) uint8."""
    return np.random.default_rng(seed).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def vl_adapter(vl_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random, non-identity LoRA adapter for the tiny Qwen2.5-VL (q and v projections)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_path)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    )
    torch.manual_seed(1)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    out = tmp_path_factory.mktemp("tiny-vl-adapter") / "adapter"
    lora.save_pretrained(out)
    return out


class Exported:
    """One export: the reference encoder (adapter unmerged, float32), the folder, and the
    folder loaded with sentence-transformers."""

    def __init__(self, name: str, source: Path, adapter: Path | None, folder: Path):
        self.name, self.adapter, self.folder = name, adapter, folder
        self.encoder = OmniEncoder.from_pretrained(
            source, adapter=adapter, device="cpu", dtype="float32"
        )
        export_sentence_transformers(source, folder, adapter=adapter)
        self.st = SentenceTransformer(str(folder), device="cpu")

    @property
    def has_audio(self) -> bool:
        return "audio" in self.encoder.modalities


@pytest.fixture(scope="module", params=["omni", "omni+lora", "vl", "vl+lora"])
def exported(request, tmp_path_factory) -> Exported:
    family, _, lora = request.param.partition("+")
    source = request.getfixturevalue(f"{family}_path")
    adapter = request.getfixturevalue(f"{family}_adapter") if lora else None
    folder = tmp_path_factory.mktemp(f"st-{family}{'-lora' if lora else ''}") / "model"
    return Exported(request.param, source, adapter, folder)


# --------------------------------------------------------------------------- the vectors


def test_text_and_image_vectors_match(exported):
    enc, st = exported.encoder, exported.st
    # a batch of different lengths: sentence-transformers left-pads as lcoemb does
    assert _cos(enc.encode(TEXTS), st.encode(TEXTS)).min() >= MIN_COSINE
    images = [_image(0), _image(1, (84, 56))]
    assert _cos(enc.encode(images), st.encode(images)).min() >= MIN_COSINE


def test_instruction_composite_and_interleaved_match(exported):
    """sentence-transformers' prompt (a system message) becomes lcoemb's instruction; a
    composite dict is laid out in the reference order whatever its key order; an interleaved
    turn keeps its order and gets the generic suffix."""
    enc, st = exported.encoder, exported.st
    instruction = "Retrieve the image that matches the caption"
    cos = _cos(enc.encode(TEXTS, instruction=instruction), st.encode(TEXTS, prompt=instruction))
    assert cos.min() >= MIN_COSINE
    image = _image(2)
    composite = enc.encode([{"image": image, "text": "a caption"}])
    assert _cos(composite, st.encode([{"text": "a caption", "image": image}])).min() >= MIN_COSINE
    interleaved = enc.encode([["before", image, "after"]])
    content = [
        {"type": "text", "text": "before"},
        {"type": "image", "image": image},
        {"type": "text", "text": "after"},
    ]
    turn = [{"role": "user", "content": content, "interleaved": True}]
    assert _cos(interleaved, st.encode([turn])).min() >= MIN_COSINE


def test_audio_and_video_vectors_match(exported):
    """Audio (a {"array", "sampling_rate"} dict) for the Omni thinker; Qwen2.5-VL has no audio
    tower and its folder refuses audio. Video: already-sampled frames as a (T, C, H, W) tensor."""
    enc, st = exported.encoder, exported.st
    waves = [_tone(1.5, 440.0), _tone(0.6, 250.0)]
    if exported.has_audio:
        ours = enc.encode([Audio(w, sampling_rate=SR) for w in waves])
        theirs = st.encode([{"array": w, "sampling_rate": SR} for w in waves])
        assert _cos(ours, theirs).min() >= MIN_COSINE
    else:
        assert "audio" not in st.modalities
        with pytest.raises(ValueError, match="audio"):
            st.encode([{"array": waves[0], "sampling_rate": SR}])
    frames = _frames(3)
    ours = enc.encode([Video(frames)])
    theirs = st.encode([torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()])
    assert _cos(ours, theirs).min() >= MIN_COSINE


def test_merged_adapter_is_in_the_folder(exported, request):
    """The adapter changes the vectors, and the folder holds it merged: no adapter files, and
    its vectors are the adapted ones, not the base model's."""
    assert not (exported.folder / "adapter_config.json").exists()
    if exported.adapter is None:
        return
    family = exported.name.partition("+")[0]
    base = OmniEncoder.from_pretrained(
        request.getfixturevalue(f"{family}_path"), device="cpu", dtype="float32"
    )
    adapted, theirs = exported.encoder.encode(TEXTS), exported.st.encode(TEXTS)
    assert _cos(base.encode(TEXTS), adapted).max() < 0.99  # the adapter matters
    assert _cos(base.encode(TEXTS), theirs).max() < 0.99
    assert _cos(adapted, theirs).min() >= MIN_COSINE


def test_lcoemb_reads_the_folder_with_the_same_prompts(exported):
    """The exported template leaves a turn that already ends with its suffix alone, so lcoemb,
    which builds the turn itself, gets the same vectors from the folder (no doubled suffix)."""
    again = OmniEncoder.from_pretrained(exported.folder, device="cpu", dtype="float32")
    items = [TEXTS[0], _image(4)]
    assert _cos(exported.encoder.encode(items), again.encode(items)).min() >= MIN_COSINE


# --------------------------------------------------------------------------- the files


def test_folder_files(exported):
    folder = exported.folder
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "lasttoken"
    assert pooling["embedding_dimension"] == exported.encoder.embedding_dim
    assert (folder / "2_Normalize" / "config.json").is_file()
    bert = json.loads((folder / "sentence_bert_config.json").read_text())
    assert bert["transformer_task"] == "feature-extraction"
    assert bert["module_output_name"] == "token_embeddings"
    assert bert["processing_kwargs"]["chat_template"] == {"add_generation_prompt": True}
    expected = {"text", "image", "video", "message"} | ({"audio"} if exported.has_audio else set())
    assert set(bert["modality_config"]) == expected
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["model_type"] == "SentenceTransformer"
    assert config["similarity_fn_name"] == "cosine"
    # one chat template source, the LCO one; the config still names the full model
    assert not (folder / "chat_template.json").exists()
    assert not (folder / "additional_chat_templates").exists()
    template = (folder / "chat_template.jinja").read_text()
    assert all(json.dumps(s) in template for s in SUFFIXES.values())
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    assert json.loads((folder / "config.json").read_text())["architectures"][0].endswith(
        "ForConditionalGeneration"
    )
    # what sentence-transformers built from them
    assert [type(m).__name__ for m in exported.st] == ["Transformer", "Pooling", "Normalize"]
    assert exported.st[1].pooling_mode == "lasttoken"


def test_template_renders_lcoemb_prompts(omni_encoder):
    """What sentence-transformers sends, rendered by the exported template, is the prompt
    lcoemb builds, character for character."""
    backbone = omni_encoder.backbone
    template = lco_chat_template(backbone.processor.chat_template, backbone.suffixes)
    image, wave = _image(5), _tone(0.5, 300.0)
    audio = Audio(wave, sampling_rate=SR)

    def user(*parts, **extra):
        return {"role": "user", "content": list(parts), **extra}

    def text(value):
        return {"type": "text", "text": value}

    cases = [
        ("hello", None, [user(text("hello"))]),
        (
            "hello",
            "Find it",
            [{"role": "system", "content": [text("Find it")]}, user(text("hello"))],
        ),
        ("hello", None, [{"role": "user", "content": "hello"}]),
        (image, None, [user({"type": "image", "image": image})]),
        (audio, None, [user({"type": "audio", "audio": wave})]),
        (
            {"text": "cap", "audio": audio, "image": image},
            None,
            [
                user(
                    text("cap"), {"type": "image", "image": image}, {"type": "audio", "audio": wave}
                )
            ],
        ),
        (
            ["cap", image, "more"],
            None,
            [user(text("cap"), {"type": "image", "image": image}, text("more"), interleaved=True)],
        ),
    ]
    for item, instruction, messages in cases:
        expected = backbone.prompt(load_item(item, 0), instruction)
        rendered = backbone.processor.apply_chat_template(
            messages, chat_template=template, tokenize=False
        )
        assert rendered == expected, (item, rendered)
    # custom suffixes (a family's own wording) reach the template
    custom = {**SUFFIXES, "text": "\nIn one word:"}
    rendered = backbone.processor.apply_chat_template(
        [user(text("hi"))],
        chat_template=lco_chat_template(backbone.processor.chat_template, custom),
        tokenize=False,
    )
    assert rendered.endswith("hi\nIn one word:<|im_end|>\n<|im_start|>assistant\n")


def test_a_loaded_encoder_exports_with_its_image_cap(vl_path, tmp_path):
    """An OmniEncoder can be exported as it is; its max_image_pixels reaches the folder's
    processor kwargs, so a large image is downsized in both."""
    cap = 4 * 28 * 28
    capped = OmniEncoder.from_pretrained(
        vl_path, device="cpu", dtype="float32", max_image_pixels=cap
    )
    out = export_sentence_transformers(capped, tmp_path / "st")
    bert = json.loads((out / "sentence_bert_config.json").read_text())
    size = bert["processing_kwargs"]["image"]["size"]  # the processor's own lower bound kept
    assert size == {
        "shortest_edge": capped.backbone.processor.image_processor.size["shortest_edge"],
        "longest_edge": cap,
    }
    image = _image(7, (224, 224))
    theirs = SentenceTransformer(str(out), device="cpu").encode([image])
    assert _cos(capped.encode([image]), theirs).min() >= MIN_COSINE
    full = OmniEncoder.from_pretrained(vl_path, device="cpu", dtype="float32")
    assert _cos(full.encode([image]), theirs).max() < 0.999  # the cap matters


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def mini_folder(tmp_path: Path) -> Path:
    """Enough of an LCO-Mini folder for the family to be known: its config."""
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": MINI_MODEL_TYPE}))
    return folder


@pytest.mark.parametrize(
    ("model_type", "reason"),
    [
        (MINI_MODEL_TYPE, "LCO-Mini is not a transformers checkpoint"),
        ("llava_next", "joins every text part into one"),
    ],
)
def test_refused_families_fail_before_anything_is_written(model_type, reason, tmp_path):
    """Refused from the config alone: no weights are read, no folder is made."""
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": model_type}))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=reason):
        export_sentence_transformers(source, out)
    assert not out.exists()
    family = {MINI_MODEL_TYPE: "lco_mini"}.get(model_type, model_type)
    assert family in REFUSED_FAMILIES and family not in EXPORTABLE_FAMILIES


def test_a_backbone_with_its_own_prompt_is_refused(vl_path, tmp_path, monkeypatch):
    """A family whose backbone builds its prompt another way than the checkpoint's template
    over the user turn cannot be reproduced by the exported template."""
    from lcoemb.backbones import QwenVLBackbone

    monkeypatch.setattr(QwenVLBackbone, "template", lambda self, messages: "")
    with pytest.raises(ExportError, match=r"builds its prompt its own way \(template\)"):
        export_sentence_transformers(vl_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_family_and_non_empty_output_are_refused(vl_path, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_sentence_transformers(vl_path, taken)
    assert (taken / "notes.txt").read_text() == "keep me"
    known = {k: v for k, v in EXPORTABLE_FAMILIES.items() if k != "qwen2_5_vl"}
    monkeypatch.setattr(st_export, "EXPORTABLE_FAMILIES", known)
    with pytest.raises(ExportError, match="does not know whether sentence-transformers"):
        export_sentence_transformers(vl_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_wrong_export_is_caught_and_removed(vl_path, tmp_path, monkeypatch):
    """The check loads the folder back: a template without the LCO suffix gives other
    vectors, so the export fails and leaves nothing behind."""
    monkeypatch.setattr(st_export, "lco_chat_template", lambda base, suffixes: base)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="does not reproduce lcoemb's vectors"):
        export_sentence_transformers(vl_path, out)
    assert not out.exists()


# --------------------------------------------------------------------------- the CLI


def test_cli_export_end_to_end(vl_path, vl_adapter, mini_folder, tmp_path, capsys):
    out = tmp_path / "st"
    args = ["export", "--model", str(vl_path), "--adapter", str(vl_adapter)]
    assert main([*args, "--format", "sentence-transformers", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "checked against lcoemb" in printed
    encoder = OmniEncoder.from_pretrained(
        vl_path, adapter=vl_adapter, device="cpu", dtype="float32"
    )
    items = [TEXTS[1], _image(6)]
    theirs = SentenceTransformer(str(out), device="cpu").encode(items)
    assert _cos(encoder.encode(items), theirs).min() >= MIN_COSINE

    refused = tmp_path / "refused"
    args = ["export", "--model", str(mini_folder), "--format", "sentence-transformers"]
    assert main([*args, "--output", str(refused)]) == 2
    assert "lcoemb export: error:" in capsys.readouterr().err
    assert not refused.exists()
    with pytest.raises(SystemExit):
        main(["export", "--model", str(vl_path), "--format", "onnx", "--output", str(refused)])
