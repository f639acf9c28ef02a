"""A time grid fitted after training travels with the checkpoint and gives the same sampler times."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from si_lightning.data import ToyDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP
from si_lightning.sampling import FittedGrid


@pytest.mark.timeout(120)
def test_fitted_grid_is_saved_and_restored_with_the_model(tmp_path):
    model = InterpolantModule(backbone=MLP(data_shape=(2,)), interpolant=Interpolant("linear"), loss_bins=0)
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=ToyDataModule("8-gaussians", num_samples=256, batch_size=64))
    times = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)
    density = 1.0 + 4.0 * (times - 0.5) ** 2  # more steps near the ends
    model.sampling_grids["pilot"] = FittedGrid(times, density, criterion="local-error")
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = InterpolantModule.load_from_checkpoint(path, backbone=MLP(data_shape=(2,)), weights_only=True)
    grid = loaded.sampling_grids["pilot"]
    assert grid.criterion == "local-error"
    expected = model.sampling_grids["pilot"].increasing(0.0, 1.0, 12, None)
    torch.testing.assert_close(grid.increasing(0.0, 1.0, 12, None), expected, rtol=0, atol=0)
    steps = grid.increasing(0.0, 1.0, 12, None).diff()
    assert steps[0] < steps[6] and steps[-1] < steps[6]  # the density's shape reached the grid
