"""The GPU benchmarks run whole on the CPU with tiny models (`gpu_all.sh --tiny`).

A GPU is lent to this project rarely and for minutes; a script that broke since its last run
would waste one. These runs check every step of both modes end to end: the wheel and stand-in
set-up, the import check, each script under its timeout, and the files each writes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_all.sh"


def _gpu_all(tmp_path: Path, *args: str) -> tuple[Path, str]:
    out = tmp_path / "out"
    env = os.environ | {
        "PYTHON": sys.executable,
        "OUT": str(out),
        "WHEELS": str(tmp_path / "no-wheels"),  # the environment's own packages, none carried
        "SITE": str(tmp_path / "site"),
        "STUBS": str(tmp_path / "stubs"),
        "MODEL_DIR": str(tmp_path / "model"),
    }
    run = subprocess.run(
        ["bash", str(SCRIPT), "--tiny", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "lcoemb imports" in (out / "env.txt").read_text()
    return out, log


def _step_time(log: str) -> float:
    match = re.search(r"^step time ([0-9.]+) s", log, re.MULTILINE)
    assert match, log[-2000:]
    return float(match.group(1))


@pytest.mark.slow
def test_gpu_all_tiny_trains_and_compares_encoders(tmp_path):
    out, _ = _gpu_all(tmp_path)
    assert _step_time((out / "gpu_train_step.log").read_text()) > 0
    rows = json.loads((out / "gpu_encode.json").read_text())["rows"]
    assert {r["set"] for r in rows} == {"short", "long", "image"}
    for row in rows:  # both paths measured, and they give the same vectors
        assert float(row["lcoemb items/s"]) > 0 and float(row["wrapper items/s"]) > 0, row
        assert float(row["min cos"]) >= 0.9999, row


@pytest.mark.slow
def test_gpu_all_tiny_mfu_runs_each_step_setting_on_one_checkpoint(tmp_path):
    out, log = _gpu_all(tmp_path, "--mfu")
    profile = (out / "gpu_train_step.profile.txt").read_text()
    assert "self time" in profile and "aten::mm" in profile
    expected = {
        "b8": ("bf16 autocast", "checkpointing on", 8),
        "b8-lora-float32": ("float32, no autocast", "checkpointing on", 8),
        "b4-nockpt": ("bf16 autocast", "checkpointing off", 4),
        "b8-nockpt": ("bf16 autocast", "checkpointing off", 8),
        "profile": ("bf16 autocast", "checkpointing on", 8),
    }
    for name, (lora, checkpointing, batch) in expected.items():
        text = (out / f"gpu_train_step.{name}.log").read_text()
        assert lora in text and checkpointing in text and f"batch {batch} triplets" in text
        assert _step_time(text) > 0
    # the checkpoint is written by the first run only, then reused
    assert log.count("checkpoint written") == 1 and log.count("checkpoint reused") == 4
    assert (tmp_path / "model-tiny" / "config.json").is_file()  # --tiny: its own folder
    assert not (out / "gpu_encode.json").exists()  # --mfu runs the train steps only
