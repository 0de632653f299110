"""Training runs own their output folder: another run can neither write into it nor resume it,
resume gets past what a crash leaves behind (a torn log line, truncated checkpoint files), no
checkpoint file can run code when loaded, and a bad byte in a CSV costs only its row."""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from lcoemb.cli import main
from lcoemb.config import TrainConfig
from lcoemb.mini.model import CONFIG_NAME, WEIGHTS_NAME
from lcoemb.recipes import pretrain
from lcoemb.training import ImageRef, Triplet
from lcoemb.training import checkpoints as ckpt
from lcoemb.training.data import DataError, load_triplets
from lcoemb.training.trainer import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    LOG_FILE,
    OPTIMIZER_FILE,
    RUN_FILE,
    Trainer,
    data_fingerprint,
    train,
)
from tests.test_training import _config, write_triplets


class Payload:
    """Unpickles as a call that creates ``marker``: what a hostile checkpoint file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _live_payload(tmp_path: Path) -> Path:
    """A marker path, after proving that plain unpickling of a :class:`Payload` runs it."""
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()
    return tmp_path / "payload-ran"


def _no_model(self: Trainer) -> None:
    raise AssertionError("a model was loaded before the output folder was checked")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _log_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / LOG_FILE).read_text().splitlines()]


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / ADAPTER_DIR / ADAPTER_WEIGHTS))


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> Path:
    return write_triplets(tmp_path_factory.mktemp("data") / "triplets.jsonl")


@pytest.fixture(scope="module")
def other_triplets(tmp_path_factory) -> Path:
    """As many triplets as ``triplets``, with other anchors (a count check cannot tell)."""
    path = write_triplets(tmp_path_factory.mktemp("other") / "triplets.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["anchor"] = row["anchor"].replace("a ", "one ", 1)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_another_run_can_neither_write_into_nor_resume_a_run_folder(
    omni_path, triplets, other_triplets, tmp_path, capsys, monkeypatch
):
    """The issue's scenario: run A in F; run B on other data in F, then B with --resume."""
    out = tmp_path / "F"
    train(_config(omni_path, triplets, out, max_steps=4))
    before = _adapter(out)
    monkeypatch.setattr(Trainer, "build_model", _no_model)  # refused before any model loads
    same_settings = (
        f"train --model {omni_path} --data {other_triplets} --output {out} --batch-size 8 "
        "--mini-batch-size 3 --lr 2e-3 --warmup-steps 1 --lora-r 4 --lora-alpha 8 "
        "--save-steps 2 --precision fp32 --seed 0 --device cpu --temperature 0.05"
    ).split()

    assert main([*same_settings, "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err

    assert main([*same_settings, "--max-steps", "4", "--resume", "--lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "settings changed since it was written: data (24 triplets, fingerprint" in err
    assert "lr (0.002 -> 0.001)" in err and "batch_size" not in err
    after = _adapter(out)
    assert all(torch.equal(before[k], after[k]) for k in before)  # run A is intact


def test_overwrite_deletes_the_previous_runs_files_and_nothing_else(
    omni_path, triplets, other_triplets, tmp_path
):
    out = tmp_path / "F"
    train(_config(omni_path, triplets, out, max_steps=4, save_steps=1))
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    (out / "data" / "keep.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="give one"):
        TrainConfig(output=str(out), resume=True, overwrite=True)

    train(_config(omni_path, other_triplets, out, max_steps=2, save_steps=2, overwrite=True))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    assert _log_steps(out) == [1, 2]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "data" / "keep.jsonl").read_text() == "{}\n"
    run = json.loads((out / RUN_FILE).read_text())
    assert run["data"] == data_fingerprint(load_triplets(other_triplets).triplets)
    assert run["triplets"] == 24 and run["processes"] == 1 and run["lr"] == 2e-3


def test_resume_checks_folder_and_checkpoint_identity_before_loading_a_model(
    omni_path, triplets, other_triplets, tmp_path, monkeypatch
):
    out = tmp_path / "F"
    train(_config(omni_path, triplets, out, max_steps=2))
    monkeypatch.setattr(Trainer, "build_model", _no_model)
    resume = dict(max_steps=4, resume=True)

    # a checkpoint written by an older lcoemb: no fingerprint to check
    state_file = out / "checkpoints" / "step-2" / ckpt.STATE_FILE
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "identity"}))
    with pytest.raises(ValueError, match=r"step-2 has no run identity.*--overwrite"):
        train(_config(omni_path, triplets, out, **resume))

    # killed before its first checkpoint: a log and run.json, no checkpoint
    shutil.rmtree(out / "checkpoints")
    with pytest.raises(ValueError, match=r"settings changed since it was written: data \(24"):
        train(_config(omni_path, other_triplets, out, **resume))

    # a run's files without an identity (an older lcoemb's, or another program's)
    (out / RUN_FILE).unlink()
    with pytest.raises(ValueError, match=r"run\.json missing\) has no run identity.*--overwrite"):
        train(_config(omni_path, triplets, out, **resume))
    assert _log_steps(out) == [1, 2]  # refusals leave the folder as it was


def test_resume_falls_back_past_truncated_checkpoints_and_a_torn_log_line(
    omni_path, triplets, tmp_path, capsys
):
    out = tmp_path / "F"
    train(_config(omni_path, triplets, out, max_steps=4, save_steps=1))
    uninterrupted = _adapter(out)
    # what a crash or a full disk leaves: truncated files in the two newest checkpoints, no
    # final adapter, and the log's last write cut short
    _truncate(out / "checkpoints" / "step-4" / ADAPTER_DIR / ADAPTER_WEIGHTS)
    _truncate(out / "checkpoints" / "step-3" / OPTIMIZER_FILE)
    shutil.rmtree(out / ADAPTER_DIR)
    with (out / LOG_FILE).open("a") as log:
        log.write('{"step": 5, "lo')
    capsys.readouterr()

    result = train(_config(omni_path, triplets, out, max_steps=4, save_steps=1, resume=True))
    printed = capsys.readouterr()
    said = printed.out + printed.err
    assert f"skipping checkpoint step-4: {out / 'checkpoints' / 'step-4'}" in said
    assert f"{ADAPTER_WEIGHTS}: cannot be read" in said
    assert f"skipping checkpoint step-3: {out / 'checkpoints' / 'step-3' / OPTIMIZER_FILE}" in said
    assert "resuming from step-2" in said and "dropped a torn last line" in said
    assert result.steps == 4 and _log_steps(out) == [1, 2, 3, 4]
    resumed = _adapter(out)
    assert max((uninterrupted[k] - resumed[k]).abs().max().item() for k in resumed) <= 1e-5

    for step in (1, 2, 3, 4):
        _truncate(out / "checkpoints" / f"step-{step}" / OPTIMIZER_FILE)
    with pytest.raises(ValueError, match=r"no checkpoint in .* can be loaded \(step-4: "):
        train(_config(omni_path, triplets, out, max_steps=4, resume=True))


def test_an_optimizer_file_that_runs_code_is_refused_and_never_run(
    omni_path, triplets, tmp_path, capsys
):
    marker = _live_payload(tmp_path)
    out = tmp_path / "F"
    train(_config(omni_path, triplets, out, max_steps=2, save_steps=1))
    hostile = {"optimizer": Payload(marker), "scheduler": {}}
    torch.save(hostile, out / "checkpoints" / "step-2" / OPTIMIZER_FILE)
    capsys.readouterr()

    train(_config(omni_path, triplets, out, max_steps=2, save_steps=1, resume=True))
    said = capsys.readouterr().out
    assert "skipping checkpoint step-2" in said and "refused: not a plain tensor file" in said
    assert "resuming from step-1" in said
    assert not marker.exists()

    for step in (1, 2):
        torch.save(hostile, out / "checkpoints" / f"step-{step}" / OPTIMIZER_FILE)
    with pytest.raises(ValueError, match=r"can be loaded .*refused: not a plain tensor file"):
        train(_config(omni_path, triplets, out, max_steps=2, resume=True))
    assert not marker.exists()


class _Projectors(torch.nn.Module):
    """What stage 1's checkpoints need of LCO-Mini: projector weights, the LM LoRA's (none
    here) and a config to save."""

    def __init__(self):
        super().__init__()
        self.image_projector = torch.nn.Linear(3, 2)
        self.mini_config = SimpleNamespace(save=lambda d: (d / CONFIG_NAME).write_text("{}\n"))

    def projector_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def lm_lora_state_dict(self) -> dict[str, torch.Tensor]:
        return {}


def _stage1_training(model: torch.nn.Module) -> tuple:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def lr_at(step: int) -> float:  # a local function, as in pretrain()
        return 1.0 / (step + 1)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)


def test_stage1_checkpoints_load_as_plain_tensors_and_code_is_refused(tmp_path):
    marker = _live_payload(tmp_path)
    model = _Projectors()
    optimizer, scheduler = _stage1_training(model)
    model.image_projector(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    rng = random.Random(0)
    pretrain.save_state(tmp_path / "run", 1, model, optimizer, scheduler, rng, None)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-1"

    # everything stage 1 saves (projectors, optimiser, scheduler, the torch RNG as a ByteTensor)
    # loads back with weights_only
    restored = _Projectors()
    optimizer2, scheduler2 = _stage1_training(restored)
    rng2 = random.Random(1)
    assert pretrain.resume_state(tmp_path / "run", restored, optimizer2, scheduler2, rng2) == 1
    assert torch.equal(restored.image_projector.weight, model.image_projector.weight)
    assert scheduler2.last_epoch == 1 and rng2.getstate() == rng.getstate()
    assert torch.equal(
        optimizer2.state_dict()["state"][0]["exp_avg"],
        optimizer.state[model.image_projector.weight]["exp_avg"],
    )
    exported = pretrain.export_checkpoint(checkpoint, tmp_path / "exported")
    weights = load_file(str(exported / WEIGHTS_NAME))
    assert weights["image_projector.weight"].dtype == torch.bfloat16

    torch.save({"projectors": Payload(marker)}, checkpoint / pretrain.STATE_WEIGHTS)
    with pytest.raises(ValueError, match="refused: not a plain tensor file"):
        pretrain.export_checkpoint(checkpoint, tmp_path / "exported-again")
    with pytest.raises(ValueError, match="refused: not a plain tensor file"):
        pretrain.resume_state(tmp_path / "run", restored, optimizer2, scheduler2, rng2)
    assert not marker.exists()


def test_log_drops_a_torn_last_line_and_refuses_a_foreign_file(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    ckpt.open_log(log, 2).close()
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    assert "log.jsonl:3: dropped a torn last line" in capsys.readouterr().err

    foreign = {
        '{"step": 1}\nnot json\n{"step": 2}\n': 2,  # unparsable, but not the last line
        '{"step": 1}\n{"loss": 1.0}\n': 2,  # a complete last line without a step
        '{"step": "1"}\n': 1,
        "[1, 2]\n": 1,
        b'{"step": 1}\n\xff\xfe binary\n{"step": 2}\n': 2,
    }
    for text, line in foreign.items():
        (log.write_bytes if isinstance(text, bytes) else log.write_text)(text)
        with pytest.raises(ValueError, match=rf"log\.jsonl:{line}: not a step log line"):
            ckpt.open_log(log, 5)
        assert (log.read_bytes() if isinstance(text, bytes) else log.read_text()) == text


def test_data_fingerprint_covers_texts_media_paths_and_order(tmp_path):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    data = [
        Triplet("a red circle", "the circle is red", None, "d:1"),
        Triplet([ImageRef(one), "a photo"], "a blue star", "a green star", "d:2"),
    ]
    variants = [
        data[::-1],
        [data[0], Triplet([ImageRef(two), "a photo"], "a blue star", "a green star", "d:2")],
        [data[0], Triplet(ImageRef(one), "a blue star", "a green star", "d:2")],
        [Triplet("a red circle", "the circle is red", "", "d:1"), data[1]],
        [Triplet("a red circle the", "circle is red", None, "d:1"), data[1]],
        data[:1],
    ]
    fingerprints = {data_fingerprint(v) for v in variants}
    assert len(fingerprints) == len(variants)
    assert data_fingerprint(data) not in fingerprints
    relabelled = [Triplet(t.anchor, t.positive, t.negative, "elsewhere") for t in data]
    assert data_fingerprint(relabelled) == data_fingerprint(data)  # content, not line numbers


def test_csv_bad_byte_is_reported_at_its_line_and_skip_bad_skips_only_its_row(tmp_path):
    lines = [b"anchor,positive,negative\n"]
    lines += [f"anchor {i},positive {i},negative {i}\n".encode() for i in range(2, 1000)]
    lines[299] = b"anchor \xff 300,positive 300,negative 300\n"  # line 300
    # a row from line 600 to 601 whose second physical line holds the bad byte
    lines[599] = b'"anchor 600\nstill 600",positive \xfe 601,negative 601\n'
    path = tmp_path / "data.csv"
    path.write_bytes(b"".join(lines))
    name = str(path)
    where = re.escape(name)

    with pytest.raises(DataError, match=rf"^{where}:300: not valid UTF-8: .*0xff"):
        load_triplets(path)
    loaded = load_triplets(path, skip_bad=True)
    assert loaded.skipped == 2 and len(loaded) == 998 - 2
    assert loaded.skipped_examples[0].startswith(f"{name}:300: not valid UTF-8")
    assert loaded.skipped_examples[1].startswith(
        f"{name}:600: not valid UTF-8 on line 601 (the row spans 600-601)"
    )
    by_source = {t.source: t for t in loaded.triplets}
    assert by_source[f"{name}:299"].anchor == "anchor 299"
    assert by_source[f"{name}:301"].anchor == "anchor 301"
    assert by_source[f"{name}:602"].anchor == "anchor 601"  # rows after it keep their lines
