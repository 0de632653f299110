"""Text-only LoRA contrastive training on a tiny Qwen2.5-Omni thinker: what is trained, GradCache
on the real model, outputs, exact resume after SIGKILL, merge, soup, generation preserved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from lcoemb import OmniEncoder
from lcoemb.backbones.attention import FLOAT32_SDPA
from lcoemb.config import TrainConfig
from lcoemb.training.checkpoints import latest_checkpoint
from lcoemb.training.trainer import Trainer, train

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]


def write_triplets(path: Path) -> Path:
    """Anchor: a scene; positive: a paraphrase; negative: the same scene in another colour."""
    rows = []
    for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        other = COLOURS[(COLOURS.index(c) + 1) % len(COLOURS)]
        rows.append(
            {"anchor": f"a {c} {s}", "positive": f"the {s} is {c}", "negative": f"a {other} {s}"}
        )
        if i % 3 == 0:
            rows[-1].pop("negative")  # negatives are optional
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> Path:
    return write_triplets(tmp_path_factory.mktemp("data") / "triplets.jsonl")


def _config(omni_path, triplets, output, **kw) -> TrainConfig:
    base = dict(
        model=str(omni_path),
        data=[str(triplets)],
        output=str(output),
        max_steps=4,
        batch_size=8,
        mini_batch_size=3,
        lr=2e-3,
        warmup_steps=1,
        lora_r=4,
        lora_alpha=8,
        save_steps=2,
        precision="fp32",
        seed=0,
        device="cpu",
        temperature=0.05,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_lora_sits_on_every_language_model_linear_and_only_it_learns(omni_path, triplets, tmp_path):
    trainer = Trainer(_config(omni_path, triplets, tmp_path))
    encoder = trainer.build_model()
    model = encoder.peft_model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    adapted = {n.split(".lora_")[0] for n in trainable}
    targets = encoder.backbone.lora_target_modules()
    assert len(adapted) == len(targets) == 7 * encoder.backbone.num_layers  # q k v o gate up down
    assert not any("audio_tower" in n or "visual" in n or "lm_head" in n for n in adapted)
    reps = encoder.embed(["a red circle", "a blue star"])
    reps.sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= trainable


def test_grad_cache_matches_unchunked_loss_and_lora_gradients(omni_path, triplets, tmp_path):
    from lcoemb.training.gradcache import grad_cache_step

    # dropout off: chunking changes how many random numbers a forward draws, so masks differ
    trainer = Trainer(_config(omni_path, triplets, tmp_path, lora_dropout=0.0))
    encoder = trainer.build_model()
    loss_fn = trainer.build_loss()
    groups = {
        "anchor": ["a red circle", "a blue star", "a green square", "a red star", "one more"],
        "positive": ["the circle is red", "the star is blue", "green square", "red star", "x"],
        "negative": ["a blue circle", "a red star", "a yellow square"],
    }
    params = [p for p in encoder.peft_model.parameters() if p.requires_grad]
    for p in params:  # make LoRA B non-zero so every LoRA weight has a gradient
        p.data.normal_(0, 0.05)

    def run(chunk: int) -> tuple[float, list[torch.Tensor]]:
        torch.manual_seed(123)
        loss = grad_cache_step(
            encoder.embed,
            groups,
            lambda r: loss_fn(r["anchor"], r["positive"], r.get("negative")),
            chunk_size=chunk,
        )
        grads = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        return loss, grads

    torch.manual_seed(123)
    plain = loss_fn(*(encoder.embed(groups[k]) for k in ("anchor", "positive", "negative")))
    plain.backward()
    plain_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    for chunk in (2, 5):
        loss, grads = run(chunk)
        assert loss == pytest.approx(plain.item(), abs=1e-5)
        for g, ref in zip(grads, plain_grads):
            torch.testing.assert_close(g, ref, atol=1e-5, rtol=1e-4)


def test_training_outputs_and_adapter_loading(omni_path, triplets, tmp_path):
    result = train(_config(omni_path, triplets, tmp_path / "run", max_steps=6, save_steps=3))
    out = tmp_path / "run"
    assert result.steps == 6 and np.isfinite(result.final_loss)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr"} <= r.keys() for r in records)
    assert records[-1]["loss"] < records[0]["loss"]  # it learns
    assert list((out / "tensorboard").iterdir())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-6"]

    texts = ["a red circle", "the circle is red", "a blue square"]
    base = OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="float32").encode(texts)
    ours = OmniEncoder.from_pretrained(
        omni_path, adapter=out / "adapter", device="cpu", dtype="float32"
    ).encode(texts)
    assert np.abs(base - ours).max() > 1e-3  # the adapter changes the vectors
    # ... and plain peft loads the same folder
    from peft import PeftModel
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    plain = PeftModel.from_pretrained(
        Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni_path), out / "adapter"
    )
    assert any("lora_A" in n for n, _ in plain.named_parameters())


def _cli_train(omni_path, triplets, output, *extra, launcher=()) -> subprocess.Popen:
    settings = (
        f"--model {omni_path} --data {triplets} --output {output} --batch-size 8 "
        "--mini-batch-size 4 --lr 2e-3 --warmup-steps 2 --lora-r 4 --lora-alpha 8 "
        "--save-steps 2 --seed 0 --device cpu --max-steps 12 --precision fp32"
    ).split()
    cmd = [*(launcher or [sys.executable]), "-m", "lcoemb.cli", "train", *settings, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(omni_path, triplets, tmp_path):
    reference = _cli_train(omni_path, triplets, tmp_path / "ref")
    assert reference.wait(timeout=600) == 0, reference.stdout.read().decode()

    victim = _cli_train(omni_path, triplets, tmp_path / "cut")
    checkpoints = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (checkpoints / "step-4").exists():
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "cut" / "adapter").exists(), "the run finished before the kill"
    killed_at = latest_checkpoint(checkpoints)
    assert killed_at is not None and killed_at.name != "step-12"

    resumed = _cli_train(omni_path, triplets, tmp_path / "cut", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()

    a = load_file(str(tmp_path / "ref" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    log = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))  # no duplicated or missing steps


def test_partial_checkpoint_is_never_trusted(omni_path, triplets, tmp_path):
    out = tmp_path / "run"
    train(_config(omni_path, triplets, out, max_steps=2, save_steps=2))
    # a save killed half-way: a temp folder with some files but no state
    partial = out / "checkpoints" / ".tmp-step-4-999"
    partial.mkdir()
    (partial / "optimizer.pt").write_bytes(b"half")
    assert latest_checkpoint(out / "checkpoints").name == "step-2"
    result = train(_config(omni_path, triplets, out, max_steps=4, save_steps=2, resume=True))
    assert result.steps == 4 and not partial.exists()
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]


def test_resume_refuses_changed_settings(omni_path, triplets, tmp_path):
    out = tmp_path / "run"
    train(_config(omni_path, triplets, out, max_steps=2, save_steps=2))
    with pytest.raises(ValueError, match=r"settings changed.*batch_size"):
        train(_config(omni_path, triplets, out, max_steps=4, batch_size=4, resume=True))


def test_merge_soup_and_generation(omni_path, triplets, tmp_path):
    from mteb.models.model_implementations.lco_embedding_models import LCOEmbedding
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2_5OmniThinkerForConditionalGeneration

    from lcoemb.training.merge import merge_adapter, soup_adapters

    a = train(_config(omni_path, triplets, tmp_path / "a", max_steps=2)).adapter
    b = train(_config(omni_path, triplets, tmp_path / "b", max_steps=2, seed=1)).adapter

    merged = merge_adapter(omni_path, a, tmp_path / "merged")
    texts = ["a red circle", "a green star"]
    via_adapter = OmniEncoder.from_pretrained(omni_path, adapter=a, device="cpu").encode(texts)
    via_merge = OmniEncoder.from_pretrained(merged, device="cpu").encode(texts)
    cos = (via_adapter * via_merge).sum(1)
    assert cos.min() > 0.999
    assert LCOEmbedding(str(merged), device="cpu").model is not None  # the reference loads it

    soup = soup_adapters([a, b], tmp_path / "soup", weights=[3, 1])
    sa, sb, ss = (load_file(str(p / "adapter_model.safetensors")) for p in (a, b, soup))
    for k in ss:
        torch.testing.assert_close(ss[k], 0.75 * sa[k] + 0.25 * sb[k])
    with pytest.raises(ValueError, match="at least two"):
        soup_adapters([a], tmp_path / "x")

    # generation is preserved: disabling the adapter gives the base model's output exactly,
    # and the merged checkpoint still generates
    processor = AutoProcessor.from_pretrained(omni_path)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Describe a red circle."}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], return_tensors="pt")
    gen = dict(max_new_tokens=6, do_sample=False)
    base = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni_path)
    expected = base.generate(**inputs, **gen)
    peft_model = PeftModel.from_pretrained(base, a)
    with peft_model.disable_adapter():
        assert torch.equal(peft_model.generate(**inputs, **gen), expected)
    merged_model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(merged)
    out = merged_model.generate(**inputs, **gen)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    """A 2-process CPU torchrun launcher on a free port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
    ]


@pytest.mark.slow
def test_lora_targets_train_only_those_linears_and_are_part_of_the_run(
    omni_path, triplets, tmp_path
):
    """``lora_targets`` reaches the saved adapter, and a resume with other targets is refused."""
    out = tmp_path / "run"
    train(_config(omni_path, triplets, out, max_steps=2, lora_targets=["q_proj", "o_proj"]))
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert {name.rsplit(".", 1)[-1] for name in saved["target_modules"]} == {"q_proj", "o_proj"}
    with pytest.raises(ValueError, match="lora_targets"):
        train(_config(omni_path, triplets, out, max_steps=4, resume=True, overwrite=False))
    # a run written before lora_targets existed used every Linear: it resumes with the default
    plain = tmp_path / "older"
    train(_config(omni_path, triplets, plain, max_steps=2))
    run = json.loads((plain / "run.json").read_text())
    del run["lora_targets"]
    (plain / "run.json").write_text(json.dumps(run))
    assert train(_config(omni_path, triplets, plain, max_steps=3, resume=True)).steps == 3


def test_two_processes_train_like_one(omni_path, triplets, tmp_path):
    """2 CPU processes (gloo) on the same global batch give the same adapter as one process:
    embeddings are gathered for the loss and LoRA gradients averaged across processes."""
    torchrun = _torchrun()
    extra = ("--max-steps", "3", "--lora-dropout", "0", "--no-gradient-checkpointing")
    one = _cli_train(omni_path, triplets, tmp_path / "one", *extra)
    assert one.wait(timeout=600) == 0, one.stdout.read().decode()
    two = _cli_train(omni_path, triplets, tmp_path / "two", *extra, launcher=torchrun)
    assert two.wait(timeout=600) == 0, two.stdout.read().decode()
    state = json.loads((tmp_path / "two/checkpoints/step-3/trainer_state.json").read_text())
    assert state["world_size"] == 2  # really two processes, each with half the batch
    logs = [
        [json.loads(x)["loss"] for x in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    ]
    np.testing.assert_allclose(logs[0], logs[1], rtol=1e-5)
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4


def test_cli_yaml_config_mix_and_skip_bad(omni_path, triplets, tmp_path, capsys):
    from lcoemb.cli import main

    bad = tmp_path / "calib.jsonl"
    bad.write_text(
        '{"anchor": "a red circle", "positive": "red round shape"}\n'
        "not json\n"
        '{"anchor": "a blue star", "positive": "blue pointed shape"}\n'
        '{"anchor": "a green square", "positive": "green box", "negative": "a red box"}\n'
    )
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: {omni_path}\noutput: {tmp_path / 'run'}\nbatch-size: 4\nmini_batch_size: 2\n"
        "lora_r: 4\nlora_alpha: 8\nmax_steps: 5\nsave_steps: 10\nwarmup_steps: 1\n"
        "device: cpu\nlr: 1.0e-3\n"
    )
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--mix",
            f"{triplets}:0.8",
            f"{bad}:0.2",
            "--skip-bad",
            "--max-steps",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["max_steps"] == 2 and saved["batch_size"] == 4  # flag beats YAML
    assert "skipped 1 bad lines" in out and "calib.jsonl:2" in out

    code = main(["train", "--config", str(config), "--data", str(bad)])
    assert code == 2
    assert "calib.jsonl:2" in capsys.readouterr().err

    config.write_text("model: x\nbatchsize: 3\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown settings ['batchsize']" in capsys.readouterr().err


def test_multimodal_calibration_fields_train(omni_path, tmp_path):
    """A field that is text plus an image file (calibration data) is opened and embedded."""
    for i, colour in enumerate(("red", "green", "blue", "white")):
        PIL.Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
    lines = [
        {
            "anchor": f"a {colour} square",
            "positive": {"text": f"colour {colour}", "image": f"{i}.png"},
            "negative": f"not {colour}",
        }
        for i, colour in enumerate(("red", "green", "blue", "white"))
    ]
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = train(
        _config(omni_path, data, tmp_path / "run", max_steps=1, batch_size=4, save_steps=1)
    )
    assert result.steps == 1 and np.isfinite(result.final_loss)
    assert (result.adapter / "adapter_config.json").is_file()


def test_bf16_precision_embeds_under_autocast(omni_path, triplets, tmp_path, monkeypatch):
    """precision=bf16: the frozen base is stored in bf16 (no per-op weight casts), LoRA and so
    the optimiser state stay float32, every embedding runs under bf16 autocast, and so the LoRA
    matmuls run in bf16, their inputs not upcast (on a GPU, float32 LoRA GEMMs were a large
    share of a step). The same code runs on every device; only the attention is CPU-specific."""
    seen: list[bool] = []
    dtypes: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    original = OmniEncoder.embed

    attention: set[str] = set()
    casting: set[bool] = set()
    lora_io: set[torch.dtype] = set()

    def spy(self, items, instruction=None):
        seen.append(torch.is_autocast_enabled("cpu"))
        for p in self.peft_model.parameters():
            dtypes[p.requires_grad].add(p.dtype)
        attention.add(self.backbone.language_model.config._attn_implementation)
        casting.update(
            m.cast_input_dtype_enabled
            for m in self.peft_model.modules()
            if hasattr(m, "cast_input_dtype_enabled")
        )
        hooks = [
            m.register_forward_hook(
                lambda _m, args, out: lora_io.update((args[0].dtype, out.dtype))
            )
            for name, m in self.peft_model.named_modules()
            if name.endswith(("lora_A.default", "lora_B.default"))
        ]
        try:
            return original(self, items, instruction)
        finally:
            for hook in hooks:
                hook.remove()

    monkeypatch.setattr(OmniEncoder, "embed", spy)
    train(_config(omni_path, triplets, tmp_path, max_steps=1, precision="bf16", save_steps=1))
    assert seen and all(seen)
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}
    # float32 attention (the fast CPU backward) and no LoRA input upcasts under autocast
    assert attention == {FLOAT32_SDPA} and casting == {False}
    assert lora_io == {torch.bfloat16}


def test_float32_sdpa_matches_float32_attention_and_keeps_dtype():
    """The CPU-training attention computes SDPA in float32 (even under bf16 autocast) and
    returns the caller's dtype, in transformers' (B, L, H, D) layout."""
    from lcoemb.backbones.attention import _sdpa_float32, register_float32_sdpa

    assert register_float32_sdpa() == FLOAT32_SDPA
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8, generator=g).to(torch.bfloat16) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = _sdpa_float32(module, q, k, v, None, scaling=0.125)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True, scale=0.125
    ).transpose(1, 2)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 7, 4, 8)
    torch.testing.assert_close(out, expected.to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.slow
def test_deepspeed_zero2_on_two_processes_trains_like_one_and_resumes(
    omni_path, triplets, tmp_path
):
    """ZeRO-2 (gloo, 2 CPU processes) gives the adapter of a plain one-process run, and a run
    resumed from its sharded checkpoint ends where the uninterrupted one did."""
    torchrun = _torchrun()
    extra = ("--max-steps", "4", "--lora-dropout", "0", "--no-gradient-checkpointing")
    one = _cli_train(omni_path, triplets, tmp_path / "one", *extra)
    assert one.wait(timeout=600) == 0, one.stdout.read().decode()
    ds = ("--deepspeed", "zero2", *extra)
    two = _cli_train(omni_path, triplets, tmp_path / "ds", *ds, launcher=torchrun)
    assert two.wait(timeout=600) == 0, two.stdout.read().decode()
    state = json.loads((tmp_path / "ds/checkpoints/step-4/trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert (tmp_path / "ds/checkpoints/step-2/deepspeed").is_dir()

    def adapter(run: str) -> dict:
        return load_file(str(tmp_path / run / "adapter" / "adapter_model.safetensors"))

    a, b = adapter("one"), adapter("ds")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4

    # lose the last checkpoint and the result, then resume from step 2's ZeRO shards
    import shutil

    shutil.rmtree(tmp_path / "ds" / "checkpoints" / "step-4")
    shutil.rmtree(tmp_path / "ds" / "adapter")
    resumed = _cli_train(
        omni_path, triplets, tmp_path / "ds", *ds, "--resume", launcher=_torchrun()
    )
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()
    c = adapter("ds")
    assert max((b[k] - c[k]).abs().max().item() for k in b) <= 1e-6


def test_deepspeed_config_is_checked(tmp_path):
    from lcoemb.training.zero import deepspeed_config

    kw = {"micro_batch": 4, "world": 2, "max_grad_norm": 1.0, "bf16": False}
    config = deepspeed_config("zero2", **kw)
    assert config["zero_optimization"]["stage"] == 2 and config["train_batch_size"] == 8
    assert config["managed_gradient_accumulation"] is False
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 64, "zero_optimization": {"stage": 2}}))
    with pytest.raises(ValueError, match="train_batch_size=64 conflicts"):
        deepspeed_config(str(path), **kw)
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ValueError, match="stage 3 is not supported"):
        deepspeed_config(str(path), **kw)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        deepspeed_config(str(path), **kw)
    with pytest.raises(FileNotFoundError, match="or use 'zero2'"):
        deepspeed_config(str(tmp_path / "missing.json"), **kw)


def test_a_recipe_derives_its_settings_from_train_config():
    """A subclass with other defaults and fields of its own is checked like TrainConfig and
    turns back into the plain settings of a run; dataclasses.replace works too."""
    import dataclasses

    @dataclasses.dataclass
    class Recipe(TrainConfig):
        lr: float = 1e-3
        lora_r: int = 16
        n_eval: int = 50

    recipe = Recipe(output="out")
    assert (recipe.lr, recipe.lora_r, recipe.batch_size, recipe.n_eval) == (1e-3, 16, 1056, 50)
    plain = recipe.train_config(max_steps=60)
    assert type(plain) is TrainConfig and "n_eval" not in plain.to_dict()
    assert (plain.lr, plain.lora_r, plain.max_steps, plain.output) == (1e-3, 16, 60, "out")
    with pytest.raises(ValueError, match="lora_r must be >= 1"):
        Recipe(lora_r=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        dataclasses.replace(recipe, temperature=0)
