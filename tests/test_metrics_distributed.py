"""FID/KID under real torch.distributed (two CPU processes, gloo): the same value as in one process.

Generated samples are drawn from per-sample seeds and sharded by index, so the set of samples is
the same for any number of ranks; the fake-side states merge through torchmetrics' own sync, and
the cached real side is not multiplied by the world size.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing

from si_lightning.metrics import (
    FeatureStatistics,
    FrechetDistance,
    KernelDistance,
    build_feature_extractor,
    extract_features,
)
from si_lightning.metrics.digits import digits_holdout_split, load_digits_data

NUM_GENERATED = 600


def generated_sample(index: int, source: torch.Tensor) -> torch.Tensor:
    """Sample ``index``: a digit plus noise from its own seed (stands in for a sampler driven by per-sample seeds)."""
    generator = torch.Generator().manual_seed(index)
    return source[index % len(source)] + 0.3 * torch.randn(source.shape[1:], generator=generator)


def evaluate(rank: int, world_size: int) -> dict[str, float]:
    extractor = build_feature_extractor("digits")
    images = load_digits_data()[0]
    real_index, generated_index = digits_holdout_split(len(images), holdout_fraction=0.5)
    real_features = extract_features(extractor, images[real_index])
    fid = FrechetDistance(extractor, real_statistics=FeatureStatistics.from_features(real_features))
    kid = KernelDistance(extractor, real_features=real_features, subsets=5, subset_size=200)
    shard = list(range(rank, NUM_GENERATED, world_size))
    for start in range(0, len(shard), 37):
        batch = torch.stack([generated_sample(index, images[generated_index]) for index in shard[start : start + 37]])
        fid.update(batch, real=False)
        kid.update(batch, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def worker(rank: int, world_size: int, directory: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=world_size)
    try:
        torch.save(evaluate(rank, world_size), os.path.join(directory, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two fresh processes importing torch and torchmetrics
def test_two_ranks_give_the_single_process_value(tmp_path) -> None:
    multiprocessing.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = evaluate(rank=0, world_size=1)
    for rank in range(2):
        distributed = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert distributed["fid"] == pytest.approx(single["fid"], rel=1e-9)
        assert distributed["kid_mean"] == pytest.approx(single["kid_mean"], rel=1e-9)
        assert distributed["kid_std"] == pytest.approx(single["kid_std"], rel=1e-9)
    assert single["fid"] > 0
