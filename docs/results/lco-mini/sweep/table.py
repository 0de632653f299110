"""Print the sweep's Markdown table from the ``<run>.json`` files ``run.py`` wrote to the
folder given (default: this one): generation kept per task, in-distribution and OOD R@1."""

import json
import sys
from pathlib import Path

TASKS = ["scene", "ocr", "digit", "speech", "clip", "utterance", "words", "scene_wide", "clip_wide"]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    base = json.loads((folder / "base.json").read_text())
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*.json"))]
    head = ["run", *TASKS, "kept min / mean", "in-dist. R@1 mean", "OOD R@1 mean"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    ind = mean([v["R@1"] for v in base["retrieval"].values()])
    ood = mean([v["R@1"] for v in base["ood"].values()])
    print(f"| base | {' | '.join('–' for _ in TASKS)} | – | {ind:.3f} | {ood:.3f} |")
    for r in rows:
        s = r["settings"]
        name = f"{s['corpus']}, lr {s['lr']:.0e}".replace("e-0", "e-")
        if s.get("targets", "all") != "all":
            name += f", {'/'.join(s['targets'])}"
        kept = [r["generation_kept"][t]["kept"] for t in TASKS]
        cells = ["–" if k is None else f"{k:.0%}" for k in kept]
        ind = mean([v[1] for v in r["retrieval"].values()])
        ood = mean([v[1] for v in r["ood"].values()])
        summary = f"{r['min_kept']:.0%} / {r['mean_kept']:.0%}"
        print(f"| {name} | {' | '.join(cells)} | {summary} | {ind:.3f} | {ood:.3f} |")


if __name__ == "__main__":
    main()
