"""Would training the image tower help? Fine-tune EfficientNet-Lite0's last blocks on the styles.

``python finetune.py [CUT [EPOCHS]]`` (default 11, 30) keeps blocks ``[:CUT]`` frozen (their
outputs computed once), and trains blocks ``[CUT:]``, the head convolution and two linear heads
(colour, shape; max-pooled head map) with cross-entropy on the one-group styled training scenes
of ``probe.py``, printing per epoch the accuracy on 500 training scenes and on 400 one-group
OOD scenes. Writes ``finetune-CUT.txt`` next to this file. About 4 minutes for CUT 11 (14×14
inputs), 7 for CUT 4 (28×28), on 2 cores.
"""

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lcoemb.mini.towers import load_image_tower, normalize_images
from lcoemb.synthetic.ood import ood_scene
from lcoemb.synthetic.wide import scene_styled

CUT = int(sys.argv[1]) if len(sys.argv) > 1 else 11
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
tower = load_image_tower()
blocks = tower.model._blocks


def frozen_part(samples) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in range(0, len(samples), 32):
            x = normalize_images(tower.preprocess([s.image for s in samples[start : start + 32]]))
            x = F.relu6(tower.model._bn0(tower.model._conv_stem(x)))
            for block in blocks[:CUT]:
                x = block(x)
            out.append(x.clone())
    return torch.cat(out)


class Tail(nn.Module):
    def __init__(self, colours: int, shapes: int):
        super().__init__()
        self.blocks = copy.deepcopy(blocks[CUT:])
        self.conv_head = copy.deepcopy(tower.model._conv_head)
        self.bn = copy.deepcopy(tower.model._bn1)
        self.colour, self.shape = nn.Linear(1280, colours), nn.Linear(1280, shapes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x = block(x)
        pooled = F.relu6(self.bn(self.conv_head(x))).amax((2, 3))
        return self.colour(pooled), self.shape(pooled)


def main() -> None:
    torch.manual_seed(0)
    train = [s for s in (scene_styled(i) for i in range(3000)) if "shape_2" not in s.attrs]
    ood = [s for s in (ood_scene(i) for i in range(900)) if "shape_2" not in s.attrs][:400]
    colours = sorted({s.attrs["colour"] for s in train})
    shapes = sorted({s.attrs["shape"] for s in train})

    def labels(samples):
        return (
            torch.tensor([colours.index(s.attrs["colour"]) for s in samples]),
            torch.tensor([shapes.index(s.attrs["shape"]) for s in samples]),
        )

    x_train, y_train = frozen_part(train), labels(train)
    x_ood, y_ood = frozen_part(ood), labels(ood)
    net = Tail(len(colours), len(shapes))
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.01)

    @torch.no_grad()
    def accuracy(x, y) -> str:
        net.eval()
        colour, shape = zip(*(net(x[s : s + 64]) for s in range(0, len(x), 64)))
        net.train()
        c = (torch.cat(colour).argmax(1) == y[0]).float().mean()
        s = (torch.cat(shape).argmax(1) == y[1]).float().mean()
        return f"colour {c:.2f} shape {s:.2f}"

    lines = [f"blocks [{CUT}:] trained; {len(train)} training scenes, {len(ood)} OOD scenes"]
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 32):
            i = order[start : start + 32]
            colour, shape = net(x_train[i])
            loss = F.cross_entropy(colour, y_train[0][i]) + F.cross_entropy(shape, y_train[1][i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_acc = accuracy(x_train[:500], (y_train[0][:500], y_train[1][:500]))
        lines.append(f"epoch {epoch + 1}: train {train_acc}; OOD {accuracy(x_ood, y_ood)}")
        print(lines[-1], flush=True)
    (Path(__file__).parent / f"finetune-{CUT}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
