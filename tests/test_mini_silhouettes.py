"""The shape descriptors LCO-Mini adds to its image tokens: one solid silhouette per object in
every style, training and out-of-distribution alike, and descriptors that tell shapes apart
whatever their style, size and rotation."""

import numpy as np
import pytest

from lcoemb.mini.silhouettes import HARMONICS, SHAPE_FEATURES, cell_shapes, describe, silhouettes
from lcoemb.synthetic.styles import OOD_STYLES, TRAIN_STYLES, background, paint_shape
from lcoemb.synthetic.wide import WIDE_COLOURS, WIDE_SHAPES

SIZE = 224


def canvas(seed: int = 0, kind: str = "flat") -> np.ndarray:
    return background(np.random.default_rng(seed), kind, SIZE)


def painted(shape: str, style: str, r: float = 30, angle: float = 0.3, colour="red", kind="flat"):
    image = canvas(1, kind)
    paint_shape(
        image, shape, 112, 112, r, angle, WIDE_COLOURS[colour], style, np.random.default_rng(2)
    )
    return image


@pytest.mark.parametrize("style", TRAIN_STYLES + OOD_STYLES)
def test_every_style_gives_one_solid_silhouette(style: str) -> None:
    """An outline, dots, stripes or a ring become the same solid region as a fill."""
    solid = silhouettes(painted("hexagon", "solid"))
    ground = "checker" if style in OOD_STYLES else "flat"
    (found,) = silhouettes(painted("hexagon", style, kind=ground))
    overlap = (found & solid[0]).sum() / (found | solid[0]).sum()
    assert overlap > 0.85, (style, overlap)


@pytest.mark.parametrize("colour", ["white", "black", "navy", "lime"])
def test_light_dark_and_chromatic_objects_stand_out_from_grey(colour: str) -> None:
    assert len(silhouettes(painted("star", "outline", colour=colour, kind="noise"))) == 1


def test_grey_ground_alone_has_no_objects() -> None:
    for kind in ("flat", "gradient", "blotches", "texture", "noise", "checker", "stripes"):
        assert silhouettes(canvas(3, kind)) == [], kind
        assert not cell_shapes(canvas(3, kind), 3).any(), kind


def test_descriptors_tell_shapes_apart_across_style_size_and_rotation() -> None:
    """Nearest neighbour: each OOD-style shape, at another size and angle, is closest to the
    solid reference of its own shape among the nine."""
    reference = {s: describe(silhouettes(painted(s, "solid"))[0]) for s in WIDE_SHAPES}
    wrong = []
    for shape in WIDE_SHAPES:
        for style in OOD_STYLES:
            (found,) = silhouettes(painted(shape, style, r=45, angle=1.1, kind="stripes"))
            d = describe(found)
            nearest = min(WIDE_SHAPES, key=lambda s: np.abs(reference[s] - d).sum())
            if nearest != shape:
                wrong.append((shape, style, nearest))
    assert not wrong, wrong
    spectrum = {s: reference[s][:HARMONICS] for s in ("triangle", "square", "star")}
    assert spectrum["triangle"].argmax() == 2  # third harmonic
    assert spectrum["square"].argmax() == 3
    assert spectrum["star"].argmax() == 4


def test_cells_count_and_place_objects() -> None:
    image = canvas()
    for cx in (30, 60):  # two blue circles in the top-left cell
        paint_shape(image, "circle", cx, 30, 10, 0.0, WIDE_COLOURS["blue"], "outline")
    paint_shape(image, "triangle", 190, 190, 20, 0.0, WIDE_COLOURS["yellow"], "dotted")
    cells = cell_shapes(image, 3)
    assert cells.shape == (9, SHAPE_FEATURES) and cells.dtype == np.float32
    assert cells[:, -2].tolist() == [0.5, 0, 0, 0, 0, 0, 0, 0, 0.25]  # counts / 4
    assert cells[0, -1] < cells[8, -1]  # mean size: two small circles, one larger triangle
    assert not cells[1:8].any()
