"""What the frozen image tower tells apart out of distribution: linear probes for colour and shape.

``python probe.py`` renders 3,000 styled training scenes (``scene_styled``: five training styles on
four kinds of background) and keeps the one-group ones; trains a logistic-regression probe per
feature for the group's colour (14 classes) and shape (9 classes); and scores it on held-out
styled scenes (the ``test`` split) and on the one-group OOD scenes (``ood_scene``: outlined,
striped, dotted or checked shapes on noise, checkerboards or stripes, sizes training never
shows). Features:

* EfficientNet-Lite0's head map, max-pooled over the 7×7 positions (1280);
* the 3×3 average-pooled head map that LCO-Mini's image tokens come from (9 × 1280);
* the 6-bin RGB colour histograms of ``ImageTower.colours``, pooled over the image (216).

Writes ``probe.txt`` next to this file. About 4 minutes on 2 cores.
"""

import collections
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lcoemb.mini.towers import load_image_tower, normalize_images
from lcoemb.synthetic.ood import ood_scene
from lcoemb.synthetic.wide import scene_styled

tower = load_image_tower()


def one_group(samples):
    return [s for s in samples if "shape_2" not in s.attrs]


def features(samples) -> dict[str, np.ndarray]:
    images = [s.image for s in samples]
    maps = []
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            pixels = normalize_images(tower.preprocess(images[start : start + 32]))
            maps.append(tower.model.forward_features(pixels))
    head = torch.cat(maps)
    colours = tower.colours(images, 6)
    return {
        "EfficientNet head, max-pooled": head.amax((2, 3)).numpy(),
        "EfficientNet 3x3 tokens": F.adaptive_avg_pool2d(head, 3).flatten(1).numpy(),
        "colour histogram (6 bins)": (colours**2).mean(1).sqrt().numpy(),
    }


def main() -> None:
    train = one_group(scene_styled(i) for i in range(3000))
    held_out = one_group(scene_styled(i, "test") for i in range(400))
    ood = one_group(ood_scene(i) for i in range(1500))
    feats = {
        name: features(samples)
        for name, samples in (("train", train), ("held-out", held_out), ("ood", ood))
    }
    lines = [f"train {len(train)}, held-out {len(held_out)}, OOD {len(ood)} one-group scenes", ""]
    lines.append(f"{'feature':32s} {'attribute':9s} {'held-out':>8s} {'OOD':>6s}  OOD by style")
    for name in feats["train"]:
        scaler = StandardScaler().fit(feats["train"][name])
        for attr in ("colour", "shape"):
            probe = LogisticRegression(max_iter=2000, C=0.1)
            probe.fit(scaler.transform(feats["train"][name]), [s.attrs[attr] for s in train])

            held, out = (
                probe.predict(scaler.transform(feats[split][name]))
                == np.array([s.attrs[attr] for s in samples])
                for split, samples in (("held-out", held_out), ("ood", ood))
            )
            by_style = collections.defaultdict(list)
            for sample, ok in zip(ood, out):
                by_style[sample.meta["style"]].append(ok)
            styles = " ".join(f"{k} {np.mean(v):.2f}" for k, v in sorted(by_style.items()))
            lines.append(f"{name:32s} {attr:9s} {held.mean():8.2f} {out.mean():6.2f}  {styles}")
            print(lines[-1], flush=True)
    lines += ["", "chance: colour 1/14 = 0.07, shape 1/9 = 0.11"]
    (Path(__file__).parent / "probe.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
