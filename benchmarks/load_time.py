"""How long a user waits for LCO-Mini to start: ``lcoemb encode`` of one caption, timed as a
whole command (interpreter start, imports, model load, one encode, the .npy written), with
SmolLM2 read from its GGUF file on every load (what every load did before the converted copy
in lcoemb's cache), on a first load that converts it into an empty cache, and from that cache.

Each case runs ``--repeats`` times in fresh processes, interleaved; the best run counts. "From
the GGUF" points ``LCOEMB_CACHE`` at a file, so the cache cannot be written and every load
takes the GGUF path (the command prints lcoemb's warning about it once per run).

    python benchmarks/load_time.py              # 3 repeats, about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OtherLoad, print_table


def run_encode(work: Path, cache: Path, threads: int) -> tuple[float, float | None]:
    """One ``lcoemb encode`` in a fresh process: (wall seconds, other processes' CPU share)."""
    env = dict(os.environ, LCOEMB_CACHE=str(cache), OMP_NUM_THREADS=str(threads))
    command = [
        sys.executable,
        "-m",
        "lcoemb.cli",
        "encode",
        "--model",
        "lco-mini",
        "--input",
        str(work / "items.jsonl"),
        "--output",
        str(work / "out.npy"),
        "--quiet",
    ]
    with OtherLoad() as load:
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
    return wall, load.share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "items.jsonl").write_text(json.dumps({"text": "a red circle at the top"}) + "\n")
        blocker = work / "no-cache"
        blocker.write_text("")
        warm = work / "warm-cache"
        run_encode(work, warm, args.threads)  # fills the cache the "cached" case reads
        times: dict[str, list[tuple[float, float | None]]] = {}
        for repeat in range(args.repeats):
            cold = work / f"cold-{repeat}"
            for case, cache in (
                ("SmolLM2 from the GGUF (before)", blocker),
                ("first load: converts into an empty cache", cold),
                ("from the cache", warm),
            ):
                times.setdefault(case, []).append(run_encode(work, cache, args.threads))
            shutil.rmtree(cold)

    before = min(wall for wall, _ in times["SmolLM2 from the GGUF (before)"])
    rows = []
    for case, runs in times.items():
        wall, share = min(runs)
        rows.append(
            {
                "lcoemb encode, 1 caption, lco-mini": case,
                "best wall s": f"{wall:.2f}",
                "runs": " ".join(f"{w:.1f}" for w, _ in runs),
                "vs before": f"{before / wall:.2f}x",
                "other CPU": "-" if share is None else f"{share:.0%}",
            }
        )
    print(f"{args.threads} threads, best of {args.repeats}")
    print_table(rows)


if __name__ == "__main__":
    main()
