"""What the silhouette descriptors tell apart out of distribution: the colour probe's shape test
(``../colour/probe.py``) on :func:`lcoemb.mini.silhouettes.cell_shapes`.

``python probe.py`` renders the same scenes as the colour probe (3,000 styled training scenes,
400 held-out, 1,500 OOD, one-group ones kept), pools each image's cell descriptors (weighted by
the objects found in each cell), trains a logistic-regression probe for the group's shape (9
classes) and its count (1-5), and scores it on the held-out styled scenes and on the OOD
scenes, by OOD style. The descriptors are computed on the 224×224 resize the image tower sees.
Writes ``probe.txt`` next to this file. About 2 minutes on 2 cores.
"""

import collections
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lcoemb.mini.silhouettes import HARMONICS, cell_shapes
from lcoemb.mini.towers import IMAGE_GRID, load_image_tower
from lcoemb.synthetic.ood import ood_scene
from lcoemb.synthetic.wide import scene_styled


def one_group(samples):
    return [s for s in samples if "shape_2" not in s.attrs]


def pooled(sample) -> np.ndarray:
    """The image's cell descriptors averaged over its objects, and how many objects it has."""
    pixels = load_image_tower().preprocess([sample.image])[0].permute(1, 2, 0).numpy()
    cells = cell_shapes(pixels.astype(np.uint8), IMAGE_GRID)
    counts = cells[:, -2] * 4
    total = max(float(counts.sum()), 1.0)
    shape = (cells[:, : HARMONICS + 4] * counts[:, None]).sum(0) / total
    return np.concatenate([shape, [total]])


def main() -> None:
    train = one_group(scene_styled(i) for i in range(3000))
    held_out = one_group(scene_styled(i, "test") for i in range(400))
    ood = one_group(ood_scene(i) for i in range(1500))
    feats = {
        name: np.stack([pooled(s) for s in ss])
        for name, ss in (("train", train), ("held-out", held_out), ("ood", ood))
    }
    lines = [f"train {len(train)}, held-out {len(held_out)}, OOD {len(ood)} one-group scenes", ""]
    lines.append(f"{'feature':32s} {'attribute':9s} {'held-out':>8s} {'OOD':>6s}  OOD by style")
    scaler = StandardScaler().fit(feats["train"])
    for attr in ("shape", "count"):
        probe = LogisticRegression(max_iter=3000, C=1.0)
        probe.fit(scaler.transform(feats["train"]), [s.attrs[attr] for s in train])
        held, out = (
            probe.predict(scaler.transform(feats[split])) == np.array([s.attrs[attr] for s in ss])
            for split, ss in (("held-out", held_out), ("ood", ood))
        )
        by_style = collections.defaultdict(list)
        for sample, ok in zip(ood, out):
            by_style[sample.meta["style"]].append(ok)
        styles = " ".join(f"{k} {np.mean(v):.2f}" for k, v in sorted(by_style.items()))
        lines.append(
            f"{'silhouettes (cell_shapes)':32s} {attr:9s} {held.mean():8.2f} "
            f"{out.mean():6.2f}  {styles}"
        )
        print(lines[-1], flush=True)
    counted = {
        name: np.rint(feats[name][:, -1]) == np.array([s.attrs["count"] for s in ss])
        for name, ss in (("held-out", held_out), ("ood", ood))
    }
    lines.append(
        f"{'objects found = count':32s} {'count':9s} {counted['held-out'].mean():8.2f} "
        f"{counted['ood'].mean():6.2f}"
    )
    lines += [
        "",
        "chance: shape 1/9 = 0.11; EfficientNet's probes (../colour/probe.txt): shape "
        "0.67 held-out, 0.30 OOD",
    ]
    (Path(__file__).parent / "probe.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
