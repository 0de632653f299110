"""lcoemb's on-disk cache: what is slow to build and the same every time (the offline
benchmark's datasets, LCO-Mini's language model converted from its GGUF file).

The root is ``$LCOEMB_CACHE``, else ``~/.cache/lcoemb``. Every entry is a folder that appears
whole or not at all: it is built under a temporary name beside its final one and renamed into
place, so an interrupted build leaves no half-written entry, and two processes building the
same entry at once both end up reading one complete copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def cache_root() -> Path:
    """``$LCOEMB_CACHE``, else ``~/.cache/lcoemb``."""
    return Path(os.environ.get("LCOEMB_CACHE") or Path.home() / ".cache" / "lcoemb")


def staging_dir(path: Path) -> Path:
    """A fresh folder beside ``path`` to build its entry in (this process's own), for
    :func:`publish`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had this pid
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, path: Path) -> Path:
    """Rename the finished folder ``tmp`` to ``path``. Where another process published
    ``path`` first, keep its copy and delete ``tmp``."""
    try:
        tmp.rename(path)
    except OSError:
        if not path.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return path
