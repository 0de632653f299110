"""LCO-Mini: the assembled model behind the backbone interface, and stage-1 pretraining."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lcoemb import Audio, OmniEncoder, Video, synthetic
from lcoemb.backbones import MiniBackbone
from lcoemb.inputs import LoadedItem
from lcoemb.mini.model import LCOMini, LCOMiniConfig, load_smollm2
from lcoemb.mini.silhouettes import SHAPE_FEATURES


@pytest.fixture(scope="session")
def mini_dir(tmp_path_factory):
    """Random projectors on the real SmolLM2 (a fresh, untrained LCO-Mini)."""
    path = tmp_path_factory.mktemp("mini-random")
    lm, _ = load_smollm2()
    torch.manual_seed(0)
    LCOMini(LCOMiniConfig(), lm).save_projectors(path)
    return path


@pytest.fixture(scope="session")
def mini(mini_dir):
    # float32: these tests check the logic exactly; bf16 adds ~1e-4 of padding noise
    return OmniEncoder.from_pretrained(mini_dir, device="cpu", dtype="float32")


def test_folder_is_small_and_reloads_identically(mini, mini_dir, tmp_path):
    assert isinstance(mini.backbone, MiniBackbone)
    assert (mini_dir / "projectors.safetensors").stat().st_size < 20e6
    mini.save_pretrained(tmp_path / "copy")
    again = OmniEncoder.from_pretrained(tmp_path / "copy", device="cpu", dtype="float32")
    texts = ["a red circle", "hello"]
    np.testing.assert_allclose(again.encode(texts), mini.encode(texts), atol=1e-5)


def test_every_modality_encodes_and_padding_does_not_move_positions(mini):
    scene = synthetic.scene(0)
    speech = synthetic.speech(0)
    clip = synthetic.clip(0)
    items = [
        "a red circle",
        scene.image,
        Audio(speech.wave, sampling_rate=speech.sampling_rate),
        Video(clip.frames),
        ["the caption", scene.image],
        "a much longer text that forces the short ones to be padded on the left " * 3,
    ]
    together = mini.encode(items, batch_size=6)
    alone = np.concatenate([mini.encode([x]) for x in items])
    assert together.shape == (6, 576)
    cos = (
        (together * alone).sum(1) / np.linalg.norm(together, axis=1) / np.linalg.norm(alone, axis=1)
    )
    assert cos.min() > 0.9999


def test_a_clip_with_speech_is_its_transcript(tmp_path):
    """In a transcribing model, a clip with a transcript is the LM's own embeddings of its first
    ``transcript_tokens`` ids, and a clip without one is its audio tokens; a model that does not
    transcribe ignores transcripts, and a config written before the field existed loads as one
    that does not."""
    lm, _ = load_smollm2()
    features, ids = torch.randn(40, 384), torch.tensor([5, 6, 7, 8])
    plain = LCOMini(LCOMiniConfig(), lm)
    audio = plain.embed_audio_features(features)
    assert audio.shape == (10, 576)  # 40 frames stacked 4 at a time
    assert not plain.transcribes and torch.equal(plain.embed_audio(features, ids), audio)
    config = LCOMiniConfig(transcript_tokens=3)
    config.save(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["transcript_tokens"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert LCOMiniConfig.load(tmp_path).transcript_tokens == 0
    heard = LCOMini(config, lm)
    heard.load_state_dict(plain.state_dict())
    assert torch.equal(heard.embed_audio(features, ids), heard.input_embeddings(ids[:3]))
    assert torch.equal(heard.embed_audio(features, ids[:0]), audio)  # no speech heard
    assert torch.equal(heard.embed_audio(features, None), audio)


def test_a_transcribing_model_encodes_what_it_heard(mini, mini_dir, tmp_path):
    folder = tmp_path / "heard"
    shutil.copytree(mini_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "transcript_tokens": 300}))
    heard = OmniEncoder.from_pretrained(folder, device="cpu", dtype="float32")
    speech = [synthetic.speech(i) for i in range(2)]
    clips = [Audio(s.wave, sampling_rate=s.sampling_rate) for s in speech]
    waves = [s.wave for s in speech]
    ids = heard.backbone._listen(waves)[1]
    assert mini.backbone._listen(waves)[1] == [None, None]  # never transcribes
    words = heard.backbone.tokenizer.decode(ids[0]).lower()
    assert sum(w in words for w in speech[0].text.lower().split()) >= 2, (words, speech[0].text)
    together = heard.encode([*clips, "a red circle"], batch_size=3)
    alone = np.concatenate([heard.encode([c]) for c in clips])
    np.testing.assert_allclose(together[:2], alone, atol=1e-4)
    cos = (together[:2] * mini.encode(clips)).sum(1)
    assert cos.max() < 0.999  # the transcript changes the vector
    # silence has no transcript, so it stays its audio tokens: the same vector in both models
    silence = Audio(np.zeros(16_000, np.float32), sampling_rate=16_000)
    assert heard.backbone._listen([silence.source])[1][0].numel() == 0
    np.testing.assert_allclose(heard.encode([silence]), mini.encode([silence]), atol=1e-6)


@pytest.mark.parametrize("part", ["colour", "shape"])
def test_cell_extras_start_silent_and_then_move_image_and_video_vectors(
    mini, mini_dir, tmp_path, part
):
    """A colour or shape projector added to a model starts at zero (the same vectors), is
    refused cells of the wrong width, saves and reloads with the folder, and once trained moves
    images and videos alone, batch-invariantly; a config written before the field existed loads
    without it."""
    config = LCOMiniConfig.load(mini_dir)
    assert config.image_colour_bins == 0 and config.image_shape_features == 0
    scene, clip = synthetic.scene(0), synthetic.clip(0)
    items = [scene.image, Video(clip.frames), "a red circle"]
    before = mini.encode(items, batch_size=3)
    backbone = MiniBackbone.from_pretrained(mini_dir, device="cpu", dtype="float32")
    model = backbone.model
    model.add_colour(4) if part == "colour" else model.add_shape()
    width = 64 if part == "colour" else SHAPE_FEATURES
    assert model.cell_features == width
    with pytest.raises(ValueError, match=f"{width} per cell"):
        model.embed_image(torch.randn(9, 1280), None)
    with pytest.raises(ValueError, match=f"got \\(1, 9, {width + 1}\\)"):
        model.embed_image(torch.randn(9, 1280), None, torch.zeros(9, width + 1))
    silent = OmniEncoder(backbone)
    np.testing.assert_allclose(silent.encode(items, batch_size=3), before, atol=1e-6)
    torch.manual_seed(1)
    torch.nn.init.normal_(getattr(model, f"{part}_projector")[3].weight, std=0.05)
    silent.save_pretrained(tmp_path / part)
    seen = OmniEncoder.from_pretrained(tmp_path / part, device="cpu", dtype="float32")
    assert seen.backbone.model.cell_features == width
    together = seen.encode(items, batch_size=3)
    alone = np.concatenate([seen.encode([x]) for x in items])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    cos = (together * before).sum(1)
    assert cos[:2].max() < 0.999 and cos[2] > 0.99999  # media move, text does not


def test_lora_targets_and_generation(mini):
    targets = mini.backbone.lora_target_modules()
    assert len(targets) == 7 * mini.backbone.num_layers
    assert all(t.startswith("lm.model.layers.") for t in targets)
    out = mini.generate(["What is two plus two?"], "Answer:", max_new_tokens=5)
    assert len(out) == 1 and out[0]


def test_prefix_cache_gives_the_uncached_loss(mini):
    from lcoemb.recipes.pretrain import Example, PrefixCache, batch_loss, media_embedding
    from lcoemb.synthetic import TASKS

    backbone = mini.backbone
    torch.manual_seed(0)
    examples = [
        Example("scene", torch.randn(9, 1280).bfloat16(), t)
        for t in ["two red circles on the left", "a star", "three blue squares at the top"]
    ]
    tok, model = backbone.tokenizer, backbone.model
    with torch.no_grad():
        cached = batch_loss(backbone, examples, PrefixCache(backbone))
        seqs, labels = [], []
        for ex in examples:
            modality, instruction = TASKS[ex.task].modality, TASKS[ex.task].instruction
            text = backbone.prompt(LoadedItem([(modality, None)]), suffix="\n" + instruction)
            prompt = backbone.embed_prompt(text, [media_embedding(model, modality, ex)])
            target = torch.tensor(
                tok(ex.target + tok.eos_token, add_special_tokens=False).input_ids
            )
            seqs.append(torch.cat([prompt, model.input_embeddings(target)]))
            labels.append(torch.cat([torch.full((len(prompt),), -100), target]))
        n = max(len(s) for s in seqs)
        x = torch.zeros(3, n, 576)
        m = torch.zeros(3, n, dtype=torch.long)
        y = torch.full((3, n), -100)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            x[i, : len(s)], m[i, : len(s)], y[i, : len(lab)] = s, 1, lab
        plain = model.lm(inputs_embeds=x, attention_mask=m, labels=y).loss
    assert cached.item() == pytest.approx(plain.item(), abs=1e-4)


@pytest.mark.slow
def test_pretrain_writes_weights_log_and_report(tmp_path):
    from lcoemb.config import PretrainConfig
    from lcoemb.recipes.pretrain import pretrain

    config = PretrainConfig(
        output=str(tmp_path / "stage1"),
        steps=3,
        batch_size=4,
        log_steps=1,
        eval_size=1,
        train_size={"scene": 8, "ocr": 8, "digit": 4, "speech": 4, "clip": 4},
        cache_dir=str(tmp_path / "features"),
        transcript_tokens=300,
        colour_bins=4,
        shapes=True,
        image_feature_dropout=0.5,
    )
    report = pretrain(config)
    cached = sorted(p.name for p in (tmp_path / "features").iterdir())
    # images get reading tokens, colours and shapes, video frames colours and shapes, clips
    # transcripts
    image_sizes = {"scene": 8, "ocr": 8, "digit": 4, "clip": 4}
    extras = {f"{t}-{part}": n for t, n in image_sizes.items() for part in ("colour4", "shape22")}
    sizes = {**config.train_size, "scene-read": 8, "ocr-read": 8, "digit-read": 4, **extras}
    sizes["speech-transcript"] = 4
    kinds = list(sizes)
    assert cached == sorted(f"{k}-v1-n{sizes[k]}.safetensors" for k in kinds)
    # a second run reads the features back instead of recomputing them (no towers run)
    from lcoemb.recipes.pretrain import build_examples

    class Reads:  # stands in for the backbone: only what its model says it needs is asked
        model = type(
            "M",
            (),
            {
                "reads": True,
                "transcribes": True,
                "sees_colour": True,
                "sees_shape": True,
                "mini_config": LCOMiniConfig(image_colour_bins=4, image_shape_features=22),
            },
        )

    again = build_examples(Reads, config)
    assert len(again) == 28 and again[0].features.dtype == torch.bfloat16
    clips = [ex for ex in again if ex.task == "clip"]
    assert all(ex.cells.shape == (len(ex.features), 9, 64 + 22) for ex in clips)
    assert all(ex.cells[..., 64:].any() for ex in clips)  # every clip has a shape to describe
    ocr = [ex for ex in again if ex.task == "ocr"]
    assert all(ex.reading is not None and ex.reading.shape[1] == 256 for ex in ocr)
    assert sum(len(ex.reading) for ex in ocr) > 0  # rendered words are read
    speech = [ex for ex in again if ex.task == "speech"]
    assert all(ex.transcript.dtype == torch.long and len(ex.transcript) for ex in speech)
    out = tmp_path / "stage1"
    assert (out / "projectors.safetensors").is_file() and (out / "config.json").is_file()
    assert len((out / "pretrain_log.jsonl").read_text().splitlines()) == 3
    saved = json.loads((out / "pretrain_report.json").read_text())
    keys = {"scene_exact_match", "ocr_char_accuracy", "digit_exact_match", "speech_wer"}
    assert keys <= saved["scores"].keys() and report["seconds"]["training"] > 0
    assert saved["base"] is None  # from scratch; a continuation names what it continued
    saved_config = json.loads((out / "config.json").read_text())
    assert saved_config["transcript_tokens"] == 300 and saved_config["image_colour_bins"] == 4
    assert saved_config["image_shape_features"] == 22
    OmniEncoder.from_pretrained(out, device="cpu")  # loads as a backbone


def test_feature_dropout_blinds_only_pictures_with_extras():
    """Modality dropout zeroes EfficientNet's features of image and video examples that have
    colour or shape extras, at about the asked share, and leaves every other example as is."""
    import random

    from lcoemb.recipes.pretrain import Example, _blinded

    features, cells = torch.ones(9, 1280), torch.ones(9, 22)
    rng = random.Random(0)
    scenes = [_blinded(Example("scene", features, "a", cells=cells), rng, 0.5) for _ in range(400)]
    blind = [not ex.features.any() for ex in scenes]
    assert 0.4 < np.mean(blind) < 0.6
    assert all(ex.cells is cells and ex.target == "a" for ex in scenes)
    for example in (
        Example("scene", features, "a"),  # no extras: nothing else to describe it from
        Example("speech", torch.ones(50, 384), "a", cells=cells),
    ):
        assert all(_blinded(example, rng, 0.99) is example for _ in range(20))


@pytest.mark.slow
def test_pretrain_resumes_exactly(tmp_path):
    """An interrupted stage 1 (here: its last checkpoint and outputs lost) continues from the
    newest complete checkpoint and ends with the same projectors and LM LoRA as an
    uninterrupted run; the LoRA is merged into the LM when the folder loads."""
    from safetensors.torch import load_file

    from lcoemb.config import PretrainConfig
    from lcoemb.recipes.pretrain import pretrain

    def config(name: str, resume: bool = False) -> PretrainConfig:
        return PretrainConfig(
            output=str(tmp_path / name),
            steps=4,
            batch_size=2,
            save_steps=2,
            keep_checkpoints=5,
            eval_size=0,  # what is compared is the weights: no generation scores
            log_steps=1,
            resume=resume,
            lm_lora_r=2,
            train_size={"scene": 4, "ocr": 2, "digit": 2, "speech": 2, "clip": 2},
            cache_dir=str(tmp_path / "features"),
        )

    pretrain(config("straight"))
    pretrain(config("resumed"))
    out = tmp_path / "resumed"
    shutil.rmtree(out / "checkpoints" / "step-4")
    (out / "projectors.safetensors").unlink()
    (out / "checkpoints" / ".tmp-step-4-1").mkdir()  # a save that never finished
    pretrain(config("resumed", resume=True))
    assert not (out / "checkpoints" / ".tmp-step-4-1").exists()
    for name in ("projectors.safetensors", "language_model_lora.safetensors"):
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(out / name))
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    b = load_file(str(out / "projectors.safetensors"))
    steps = [json.loads(line)["step"] for line in (out / "pretrain_log.jsonl").open()]
    assert steps == [1, 2, 3, 4]
    report = json.loads((out / "pretrain_report.json").read_text())
    assert report["scores"] == {}  # eval_size=0: nothing generated

    # an intermediate checkpoint exports as a model folder with its own projectors
    from lcoemb.recipes.pretrain import export_checkpoint

    variant = export_checkpoint(out / "checkpoints" / "step-2", tmp_path / "variant")
    early = load_file(str(variant / "projectors.safetensors"))
    assert any((early[k] != b[k]).any() for k in b)
    assert (variant / "language_model_lora.safetensors").is_file()
    # the LoRA is merged at load: the LM's weights differ from the GGUF's, and saving the
    # loaded model writes the same factors again
    gguf, _ = load_smollm2(torch.bfloat16)
    loaded = OmniEncoder.from_pretrained(out, device="cpu")
    lm = loaded.backbone.model.lm
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(lm.state_dict()[q], gguf.state_dict()[q])
    assert not any("lora_" in k for k in lm.state_dict())
    loaded.save_pretrained(tmp_path / "copy")
    again = OmniEncoder.from_pretrained(tmp_path / "copy", device="cpu")
    np.testing.assert_array_equal(again.encode(["a red circle"]), loaded.encode(["a red circle"]))


def test_export_checkpoint_errors_name_the_folder(tmp_path):
    from lcoemb.recipes.pretrain import export_checkpoint

    with pytest.raises(FileNotFoundError, match="is not a stage-1 checkpoint"):
        export_checkpoint(tmp_path, tmp_path / "out")


def test_generation_retained_compares_the_adapter_with_its_base(mini_dir, capsys, tmp_path):
    """A fresh LoRA (B = 0) changes nothing: 100 % retained; a perturbed one changes what is
    generated, and the CLI prints the table and writes generation.json."""
    from lcoemb.cli import main
    from lcoemb.evaluation.generation import generation_retained

    encoder = OmniEncoder.from_pretrained(mini_dir, device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="no adapter"):
        generation_retained(encoder, 2, ["digit"])
    encoder.add_lora(r=2, alpha=4)
    same = generation_retained(encoder, 3, ["digit", "scene"])
    for row in same["tasks"].values():
        assert row["base"] == row["adapter"]
        assert all(x["generated"] == x["with adapter"] for x in row["examples"])
    with torch.no_grad():
        for name, p in encoder.peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    changed = generation_retained(encoder, 3, ["digit"])
    assert (
        changed["tasks"]["digit"]["examples"][0]["with adapter"]
        != (changed["tasks"]["digit"]["examples"][0]["generated"])
    )
    encoder.save_pretrained(tmp_path / "adapter", merge=False)
    code = main(
        ["grsl", "generation", "--model", str(mini_dir), "--adapter", str(tmp_path / "adapter"),
         "--n", "2", "--tasks", "digit", "--output", str(tmp_path / "out"), "--dtype", "float32"]
    )  # fmt: skip
    assert code == 0
    assert "retained" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert list(saved["tasks"]) == ["digit"] and saved["n"] == 2
