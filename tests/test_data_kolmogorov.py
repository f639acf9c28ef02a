"""KolmogorovFlowDataModule: held-out trajectories, consecutive pairs, a keyed atomic cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from si_lightning.data import KolmogorovFlowDataModule
from si_lightning.physics import divergence

TINY = {
    "size": 16,
    "viscosity": 0.02,
    "forcing_wavenumber": 2,
    "time_step": 0.05,
    "spin_up": 0.5,
    "interval": 0.25,
    "snapshots": 4,
    "trajectories": (3, 1, 1),
    "batch_size": 4,
}


def test_pairs_are_consecutive_states_and_splits_are_distinct(tmp_path: Path) -> None:
    data = KolmogorovFlowDataModule(root=str(tmp_path), **TINY)
    data.setup("fit")
    frames = data.trajectories("train")
    assert frames.shape == (3, 4, 2, 16, 16) and frames.dtype == torch.float32
    assert data.data_shape == (2, 16, 16) and data.cond_channels == 2 and not data.gaussian_base
    pairs = data.dataset("train").data
    assert pairs.shape == (3 * 3, 4, 16, 16)
    batch = data.coupling(pairs[:3])
    assert torch.equal(batch.x0, frames[0, :3]) and torch.equal(batch.x1, frames[0, 1:4])
    assert torch.equal(batch.cond.channels, batch.x0)
    assert not torch.allclose(data.trajectories("val")[0, 0], data.trajectories("test")[0, 0])
    # float32 storage of spectrally divergence-free fields: rounding of 1e-7 relative times |k| <= 8
    assert divergence(frames.double()).abs().max().item() < 1e-5


def test_cache_is_reused_only_for_the_same_settings(tmp_path: Path) -> None:
    data = KolmogorovFlowDataModule(root=str(tmp_path), **TINY)
    first = data.trajectories("train")
    path = data.cache_path()
    assert path.is_file() and [entry.name for entry in tmp_path.iterdir()] == [path.name]  # no temporary left
    with np.load(path) as stored:  # a planted value shows the cache is read rather than regenerated
        arrays = {key: stored[key] for key in stored.files}
    arrays["train"] = arrays["train"] + 1.0
    np.savez(path, **arrays)
    again = KolmogorovFlowDataModule(root=str(tmp_path), **TINY).trajectories("train")
    assert torch.equal(again, first + 1.0)
    other = KolmogorovFlowDataModule(root=str(tmp_path), **{**TINY, "seed": 1})
    assert other.cache_path() != path
    assert not torch.allclose(other.trajectories("train"), first)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"snapshots": 1}, "snapshots = 1: expected an integer >= 2 (one pair at least)"),
        ({"interval": 0.0}, "interval = 0.0: expected a positive multiple of time_step = 0.05"),
        ({"spin_up": 0.12}, "spin_up = 0.12: expected a multiple >= 0 of time_step = 0.05"),
        ({"trajectories": (3, 0, 1)}, "trajectories (val) = 0: expected an integer >= 1"),
        ({"trajectories": (3, 1)}, "trajectories = [3, 1]: expected three counts (train, val, test)"),
        ({"size": 12}, "forcing_wavenumber = 4: expected an integer in [1, 4.0) for N = 12"),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict, message: str) -> None:
    defaults = {key: value for key, value in TINY.items() if key not in settings}
    if "size" in settings:
        defaults.pop("forcing_wavenumber")
    with pytest.raises(ValueError) as error:
        KolmogorovFlowDataModule(**defaults, **settings)
    assert str(error.value) == message


def test_a_longer_split_continues_the_cached_trajectories(tmp_path: Path) -> None:
    """generate_split with more snapshots: the same initial conditions and deterministic solver, so its first
    frames equal the cached split's bit for bit and the rest continue them (not a new draw)."""
    data = KolmogorovFlowDataModule(root=str(tmp_path), **TINY)
    cached = data.trajectories("test")
    longer = data.generate_split("test", 7)
    assert longer.shape == (1, 7, 2, 16, 16)
    assert torch.equal(longer[:, :4], cached)
    assert not torch.allclose(longer[:, 4:], cached[:, -1:].expand(-1, 3, -1, -1, -1))  # the flow moves on
    with pytest.raises(ValueError, match="^snapshots = 1: expected an integer >= 2"):
        data.generate_split("test", 1)
