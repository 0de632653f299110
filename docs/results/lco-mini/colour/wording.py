"""Perception or wording? OOD retrieval against captions in the training grammar's words.

``python wording.py MODEL [ADAPTER]`` encodes the 40 items of the OOD image and video sets
(``lcoemb.synthetic.OOD_SETS``) with three texts each: the set's own caption (held-out
wording: "a lone heart-shaped figure in a brown hue lower down than 2 pink-coloured
diamond-shaped tiles"), and the same attributes in the wide grammar's first template and words
("one brown heart below two pink diamonds"), then prints R@1 over the 40 candidates for
media→OOD caption (what the quickstart reports), media→training-words caption (perception and
alignment, without the held-out wording) and OOD caption→training-words caption (the wording
alone, text to text).
"""

import sys

import numpy as np

from lcoemb import OmniEncoder
from lcoemb.synthetic import OOD_SETS, as_input
from lcoemb.synthetic.wide import (
    _POSITION_WORDS,
    _RELATION_WORDS,
    _group_words,
    _motion_words,
    clip_objects,
    fix_articles,
)


class First:
    """Stands in for the generators' random choices: always the first option."""

    def choice(self, options, *args, **kwargs):
        return 0 if isinstance(options, int) else options[0]

    def integers(self, low, high=None, *args, **kwargs):
        return 0 if high is None else low


def plain_words(kind: str, attrs: dict) -> str:
    rng = First()
    if kind == "video":
        parts = []
        for colour, shape, motion in clip_objects(attrs):
            group = _group_words(rng, 1, colour, shape)
            parts.append(f"{group} {_motion_words(rng, motion)[0]}")
        return fix_articles(" and ".join(parts))
    group = _group_words(rng, attrs["count"], attrs["colour"], attrs["shape"])
    if "relation" in attrs:
        other = _group_words(rng, attrs["count_2"], attrs["colour_2"], attrs["shape_2"])
        return fix_articles(f"{group} {_RELATION_WORDS[attrs['relation']][0]} {other}")
    return fix_articles(f"{group} {_POSITION_WORDS[attrs['position']][0]}")


def r_at_1(queries: np.ndarray, keys: np.ndarray) -> float:
    return float(((queries @ keys.T).argmax(1) == np.arange(len(queries))).mean())


def main() -> None:
    model = sys.argv[1]
    adapter = sys.argv[2] if len(sys.argv) > 2 else None
    encoder = OmniEncoder.from_pretrained(model, adapter=adapter, device="cpu")
    print(f"{model} {adapter or ''}")
    for name in ("image", "video"):
        samples = OOD_SETS[name].samples(40)
        media = encoder.encode([as_input(s) for s in samples])
        ood_text = encoder.encode([s.text for s in samples])
        plain = [plain_words(name, s.attrs) for s in samples]
        plain_text = encoder.encode(plain)
        print(
            f"  {name}: e.g. {plain[0]!r}\n"
            f"    media->OOD caption {r_at_1(media, ood_text):.3f}"
            f"  media->training words {r_at_1(media, plain_text):.3f}"
            f"  OOD caption->training words {r_at_1(ood_text, plain_text):.3f}"
        )


if __name__ == "__main__":
    main()
