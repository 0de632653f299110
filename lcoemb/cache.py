"""lcoemb's on-disk cache: what is slow to build and the same every time (the offline
benchmark's datasets, LCO-Mini's language model converted from its GGUF file).

The root is ``$LCOEMB_CACHE``, else ``~/.cache/lcoemb``. Every entry is a folder that appears
whole or not at all (:func:`cache_entry`): it is built under a staging name beside its final
one and renamed into place, so a failed or interrupted build leaves no half-written entry, and
two processes building the same entry at once both end up reading one complete copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: a staging folder this old was left by a build that died (builds take seconds to minutes)
STALE_STAGING_S = 3600


def cache_root() -> Path:
    """``$LCOEMB_CACHE``, else ``~/.cache/lcoemb``."""
    return Path(os.environ.get("LCOEMB_CACHE") or Path.home() / ".cache" / "lcoemb")


@contextlib.contextmanager
def cache_entry(path: Path) -> Iterator[Path]:
    """Build the entry ``path``: the block writes into the fresh staging folder this yields.
    When the block ends, the folder is renamed to ``path``; where another process published
    ``path`` first, its copy stays and this one is deleted. When the block raises, the staging
    folder is deleted and nothing is published; staging folders of ``path`` older than
    :data:`STALE_STAGING_S` (a killed process's) are deleted first. Raises ``OSError`` where
    the cache cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    for old in path.parent.glob(f"{prefix}*"):  # left by builds that died
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        yield tmp
        try:
            tmp.rename(path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left to remove once renamed
