"""Atomic training checkpoints: a checkpoint folder exists only once it is complete.

Each checkpoint is written into a temporary sibling folder, flushed to disk, then renamed to
``step-N`` in one ``os.rename``. A run killed mid-save leaves only a ``.tmp-*`` folder, which
:func:`latest_checkpoint` ignores and :func:`clean_partial` removes, so resume never trusts half
a checkpoint.

A folder that was renamed complete can still be damaged later (a disk filling up, a file
copied half-way), and a run folder may hold files this program did not write. Every reader here
therefore treats files as untrusted: :func:`load_torch` unpickles tensors and plain containers
only (anything else could run code), and a file that cannot be used raises
:class:`RunFolderError` naming it, so a caller can fall back to an older checkpoint or refuse.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class RunFolderError(ValueError):
    """A run folder (or a file in it) that cannot be used: damaged, or not this run's."""


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
    """The checkpoint's JSON state; :class:`RunFolderError` when it is unreadable."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path}: cannot be read: {error}") from error
    if not isinstance(state, dict):
        raise RunFolderError(f"{path}: expected a JSON object, got {type(state).__name__}")
    return state


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file and a rename, so a crash never leaves a
    torn file that a later run would have to reject."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def load_torch(path: Path) -> Any:
    """``torch.load`` of tensors and plain containers only (``weights_only``): unpickling any
    other object can run arbitrary code, and a checkpoint folder may come from anywhere.

    Raises :class:`RunFolderError` for a file that is missing, truncated or refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message opens with advice to pass weights_only=False: keep only its reason
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((x for x in lines[1:] if not x.startswith("Check the doc")), str(error))
        raise RunFolderError(
            f"{path}: refused: not a plain tensor file ({reason}); only tensors and plain "
            "containers are loaded, since unpickling anything else can run code"
        ) from error
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... on bad bytes
        raise RunFolderError(f"{path}: cannot be read (truncated?): {error!r}") from error


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """``safetensors`` weights; :class:`RunFolderError` for a missing or truncated file."""
    try:
        return load_file(str(path))
    except Exception as error:  # SafetensorError (not exported as a stable name), OSError
        raise RunFolderError(f"{path}: cannot be read (truncated?): {error}") from error


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
    uninterrupted one's.

    A crash can cut the last write short: an unparsable *last* line is dropped (and said so on
    stderr). Any other unparsable line, or a line that is not a JSON object with an integer
    ``step``, means the file is not such a log, and rewriting it would destroy someone's data:
    that raises :class:`RunFolderError` before anything is written.
    """
    if path.exists():
        # decoded leniently: a foreign binary file is then refused below, by its line number
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
        numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        kept = []
        for n, line in numbered:
            try:
                record = json.loads(line)
            except ValueError:
                if n == numbered[-1][0]:
                    print(f"{path}:{n}: dropped a torn last line: {line[:80]!r}", file=sys.stderr)
                    continue
                record = None
            step = record.get("step") if isinstance(record, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                raise RunFolderError(
                    f"{path}:{n}: not a step log line (a JSON object with an integer 'step'): "
                    f"{line[:80]!r}; the file is not this program's log: move it away or use "
                    "another output folder"
                )
            if step <= resumed_step:
                kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def prune(checkpoints_dir: Path, keep: int | None) -> None:
    """Keep only the newest ``keep`` checkpoints (all if ``keep`` is None)."""
    if keep is None:
        return
    for _, path in list_checkpoints(checkpoints_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
