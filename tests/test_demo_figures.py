"""The demo's figures: nearest-neighbour distance and the side-by-side grid."""

from __future__ import annotations

import torch
from PIL import Image

from si_lightning.demo import nearest_distance, write_grid


def test_nearest_distance_is_rms_to_closest_reference():
    reference = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    samples = torch.stack([torch.full((1, 8, 8), 0.25), torch.full((1, 8, 8), 0.9), torch.ones(1, 8, 8)])
    torch.testing.assert_close(
        nearest_distance(samples, reference), torch.tensor([0.25, 0.1, 0.0], dtype=torch.float64)
    )


def test_grid_places_blocks_side_by_side(tmp_path):
    images = {"real": -torch.ones(100, 1, 8, 8), "ode": torch.ones(100, 1, 8, 8)}
    path = tmp_path / "samples.png"
    write_grid(path, images, scale=2)
    picture = torch.tensor(list(Image.open(path).convert("L").getdata())).reshape(Image.open(path).height, -1)
    block = 10 * 16 + 11 * 2  # ten 16-pixel images with 2-pixel padding around each
    assert picture.shape == (block, 2 * block + 8)
    assert picture[5, 5].item() == 0 and picture[5, block + 8 + 5].item() == 255  # black real, white ode
    assert not list(tmp_path.glob("*.tmp"))
