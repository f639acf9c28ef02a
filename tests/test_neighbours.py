"""Nearest-neighbour restoration baselines against a plain loop over the training images."""

from __future__ import annotations

import torch

from si_lightning.callbacks.neighbours import neighbour_baselines
from si_lightning.couplings import Inpainting


def test_inpainting_neighbours_compare_kept_pixels_only_and_copy_the_hidden_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    training = torch.rand(40, 1, 8, 8, generator=generator) * 2 - 1
    queries = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1
    coupling = Inpainting(tiles=16, hide_probability=0.5)
    batch = coupling(queries, None, torch.Generator().manual_seed(1), noise_generator=torch.Generator().manual_seed(2))
    keep = batch.cond.keep.bool()
    baselines = neighbour_baselines(coupling, batch, training)
    for index in range(queries.shape[0]):
        known = keep[index].expand_as(queries[index])
        distances = [float(((other - queries[index])[known] ** 2).sum()) for other in training]
        order = sorted(range(len(training)), key=distances.__getitem__)
        for count in (1, 5):
            expected = torch.where(known, queries[index], training[order[:count]].mean(0))
            # float64 distances in both; the mean of 5 float32 images differs by rounding only.
            torch.testing.assert_close(baselines[f"knn-{count}"][index], expected, atol=1e-6, rtol=0)
