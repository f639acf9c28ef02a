"""In-painting mask generators: tiles at the paper's rate, boxes of the asked size, strokes; all from a generator."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.couplings import MASKS, BoxMask, Inpainting, StrokeMask, TileMask, get_mask


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(mask, batch=400, size=32, seed=0):
    return mask(batch, size, size, seeded(seed), "cpu", torch.float32)


def test_paper_tiles_hide_thirty_percent_of_64_tiles():
    masks = draw(TileMask(64, 0.3), batch=500)
    tiles = masks[:, 0, ::4, ::4]  # 8 x 8 tiles of 4 x 4 pixels at 32 x 32
    assert torch.equal(masks, tiles.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None])
    hidden = 1 - tiles.mean().item()
    assert abs(hidden - 0.3) < 5 * math.sqrt(0.3 * 0.7 / tiles.numel())


def test_boxes_have_sides_within_the_asked_fractions():
    masks = draw(BoxMask(boxes=1, min_size=0.25, max_size=0.5))
    hidden = masks[:, 0] == 0
    rows, columns = hidden.any(2).sum(1), hidden.any(1).sum(1)
    assert bool((rows >= 8).all() and (rows <= 16).all() and (columns >= 8).all() and (columns <= 16).all())
    assert torch.equal(hidden.sum((1, 2)), rows * columns)  # one filled rectangle each


def test_strokes_hide_connected_bands_and_every_mask_comes_from_the_generator():
    stroke = StrokeMask(strokes=2, vertices=4, width=0.15)
    masks = draw(stroke)
    hidden = 1 - masks.mean((1, 2, 3))
    assert bool((hidden > 0).all()) and float(hidden.mean()) < 0.6
    for mask in (TileMask(16, 0.5), BoxMask(2), stroke):
        assert torch.equal(draw(mask, seed=3), draw(mask, seed=3))
        assert not torch.equal(draw(mask, seed=3), draw(mask, seed=4))


def test_inpainting_with_another_mask_keeps_visible_pixels_exactly():
    x1 = torch.randn(16, 3, 32, 32, generator=seeded(5))
    batch = Inpainting(masks=BoxMask(2))(x1, generator=seeded(6))
    keep = batch.cond.keep.bool().expand_as(x1)
    assert torch.equal(batch.x0[keep], x1[keep]) and torch.equal(batch.cond.channels[:, :1], batch.cond.keep)
    # A separate noise generator: the same mask, other noise.
    other = Inpainting(masks=BoxMask(2))(x1, generator=seeded(6), noise_generator=seeded(7))
    assert torch.equal(other.cond.keep, batch.cond.keep) and not torch.equal(other.x0, batch.x0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TileMask(50), r"tiles = 50: expected a positive perfect square"),
        (lambda: TileMask(64, 1.5), r"hide_probability = 1.5: expected a probability in \[0, 1\]"),
        (lambda: TileMask(64, -0.1), r"hide_probability = -0.1: expected a probability in \[0, 1\]"),
        (lambda: BoxMask(0), r"boxes = 0: expected an integer >= 1"),
        (lambda: BoxMask(1, 0.6, 0.5), r"min_size = 0.6: expected at most max_size = 0.5"),
        (lambda: StrokeMask(width=0.0), r"width = 0.0: expected a fraction of the image side in \(0, 1\]"),
        (lambda: Inpainting(masks="boxes"), r"in-painting masks = 'boxes': expected a MaskGenerator"),
        (lambda: get_mask("blobs"), r"unknown mask 'blobs'; expected one of: boxes, strokes, tiles"),
    ],
)
def test_bad_settings_are_one_line(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_registry_and_grid_check():
    assert set(MASKS) == {"tiles", "boxes", "strokes"}
    with pytest.raises(ValueError, match="image size 12x12 is not divisible by the 8x8 grid of 64 tiles"):
        Inpainting(masks=TileMask(64))(torch.zeros(2, 1, 12, 12))
