"""How often a stage-1 model names the right colour and shape of the OOD scenes and clips.

``python naming.py MODEL [MODEL ...]`` asks each model to describe the 40 items of the OOD image
and video sets (``lcoemb.synthetic.OOD_SETS``: shape styles, backgrounds and sizes no training
sample has) and counts, per set, the items whose first colour word and first shape word (in the
training grammar's words) are among the item's own. Retrieval after text-only training can only
use what the base sees, so this is the ceiling the adapter works under."""

import re
import sys

import torch

from lcoemb import OmniEncoder
from lcoemb.synthetic import OOD_SETS, TASKS, as_input
from lcoemb.synthetic.wide import WIDE_COLOURS, WIDE_SHAPES

SYNONYMS = {"disc": "circle", "plus sign": "cross", "rhombus": "diamond"}


def first(words: list[str], vocabulary) -> str | None:
    for w in words:
        for form in (w, w[:-2] if w.endswith("es") else w, w[:-1] if w.endswith("s") else w):
            if form in vocabulary:
                return form
    return None


def naming(model: str) -> dict[str, dict[str, int]]:
    encoder = OmniEncoder.from_pretrained(model, device="cpu")
    out = {}
    for name, task in (("image", "scene_wide"), ("video", "clip_wide")):
        samples = OOD_SETS[name].samples(40)
        said = encoder.generate(
            [as_input(s, all_frames=True) for s in samples],
            "\n" + TASKS[task].instruction,
            max_new_tokens=24,
        )
        counts = {"colour": 0, "shape": 0, "both": 0, "n": len(samples)}
        for sample, text in zip(samples, said, strict=True):
            text = text.lower()
            for a, b in SYNONYMS.items():
                text = text.replace(a, b)
            words = re.findall(r"[a-z]+", text)
            colours = {sample.attrs.get("colour"), sample.attrs.get("colour_2")}
            shapes = {sample.attrs.get("shape"), sample.attrs.get("shape_2")}
            colour = first(words, WIDE_COLOURS) in colours
            shape = first(words, WIDE_SHAPES) in shapes
            counts["colour"] += colour
            counts["shape"] += shape
            counts["both"] += colour and shape
        out[name] = counts
    return out


if __name__ == "__main__":
    torch.manual_seed(0)
    for model in sys.argv[1:]:
        for name, c in naming(model).items():
            n = c["n"]
            print(
                f"{model}  OOD {name}: colour {c['colour']}/{n}, shape {c['shape']}/{n}, "
                f"both {c['both']}/{n}"
            )
