"""Atomic training checkpoints: a checkpoint folder exists only once it is complete.

Each checkpoint is written into a temporary sibling folder, flushed to disk, then renamed to
``step-N`` in one ``os.rename``. A run killed mid-save leaves only a ``.tmp-*`` folder, which
:func:`latest_checkpoint` ignores and :func:`clean_partial` removes, so resume never trusts half
a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    checkpoints_dir: Path, step: int, state: dict[str, Any], write: Callable[[Path], None]
) -> Path:
    """Write ``state`` (JSON) plus whatever ``write(folder)`` adds, atomically, as ``step-N``."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"step-{step}"
    tmp = checkpoints_dir / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    _fsync_tree(tmp)
    if final.exists():  # a re-run of the same step after resume: replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_tree(checkpoints_dir)
    return final


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and (path / STATE_FILE).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1][1] if found else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def clean_partial(checkpoints_dir: Path) -> list[Path]:
    """Remove folders left by saves that never finished; return what was removed."""
    removed = []
    if checkpoints_dir.is_dir():
        for path in checkpoints_dir.glob(".tmp-step-*"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def open_log(path: Path, resumed_step: int) -> Any:
    """Open a JSONL step log for appending, first dropping the lines of steps after
    ``resumed_step`` (all of them for a fresh run), so a resumed run's log reads like an
    uninterrupted one's."""
    if path.exists():
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= resumed_step
        ]
        path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def prune(checkpoints_dir: Path, keep: int | None) -> None:
    """Keep only the newest ``keep`` checkpoints (all if ``keep`` is None)."""
    if keep is None:
        return
    for _, path in list_checkpoints(checkpoints_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
