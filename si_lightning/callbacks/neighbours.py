"""Nearest-neighbour baselines of a restoration: copy the closest training images on what is observed.

kNN-1 copies the training image closest to the observation; kNN-5 averages the 5 closest (the mean of
a small posterior sample drawn from the training set). Closeness is the squared L2 distance on what
the coupling lets the model see:

- super-resolution: the low-resolution image D(x) (the block means; the coupling's noise is not used);
- in-painting: the kept pixels xi x (each query compares only its own kept pixels).

In-painting baselines keep the known pixels (as the model's samples do) and copy the hidden ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.couplings import Batch, Coupling, Inpainting, SuperResolution

NEIGHBOURS = (1, 5)


def nearest(distances: Tensor, training: Tensor, count: int) -> Tensor:
    """The mean of the ``count`` training images (M, ...) closest by ``distances`` (n, M): (n, ...)."""
    order = distances.topk(min(count, training.shape[0]), dim=1, largest=False).indices
    return training[order].mean(1)


def neighbour_baselines(coupling: Coupling, batch: Batch, training: Tensor) -> dict[str, Tensor]:
    """{"knn-1": (n, ...), "knn-5": (n, ...)} for the queries of ``batch`` and training images (M, ...)."""
    training = training.to(batch.x1)
    if isinstance(coupling, SuperResolution):
        observed, candidates = coupling.downsample(batch.x1).flatten(1), coupling.downsample(training).flatten(1)
        distances = torch.cdist(observed.double(), candidates.double()).pow(2)
        return {f"knn-{count}": nearest(distances, training, count) for count in NEIGHBOURS}
    if isinstance(coupling, Inpainting):
        keep = batch.cond.keep.to(batch.x1).expand_as(batch.x1).flatten(1)  # (n, D)
        queries, candidates = batch.x1.flatten(1).double(), training.flatten(1).double()  # (n, D), (M, D)
        # sum over kept pixels of (x - y)^2 = keep.x^2 - 2 (keep x).y + keep.y^2, per query and candidate
        distances = (
            (keep * queries.pow(2)).sum(1, keepdim=True)
            - 2 * (keep * queries) @ candidates.T
            + keep.double() @ candidates.pow(2).T
        )
        known = batch.cond.keep.bool().expand_as(batch.x1)
        return {
            f"knn-{count}": torch.where(known, batch.x1, nearest(distances, training, count).to(batch.x1))
            for count in NEIGHBOURS
        }
    return {}
