"""FreeEnergyDataModule: x1 from rho_b's samples, x0 from rho_a's pool, from files or the system's sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from si_lightning.couplings import SampledBase
from si_lightning.data import FreeEnergyDataModule


def test_files_of_samples_feed_both_sides(tmp_path):
    samples_a = torch.randn(300, 3, dtype=torch.float64) - 10.0  # far from b: each side is recognisable
    samples_b = torch.randn(200, 3, dtype=torch.float64) + 10.0
    torch.save(samples_a, tmp_path / "a.pt")
    np.save(tmp_path / "b.npy", samples_b.numpy())
    data = FreeEnergyDataModule(
        "gaussians", 3, val_samples=50, samples_a=str(tmp_path / "a.pt"), samples_b=str(tmp_path / "b.npy"),
        batch_size=32,
    )  # fmt: skip
    assert data.gaussian_base is False and data.data_shape == (3,)
    assert len(data.dataset("train")) == 150 and len(data.dataset("val")) == 50
    x1, labels, index = next(iter(data.val_dataloader()))
    batch = data.on_after_batch_transfer((x1, labels, index))
    # Every x0 is a row of the a-file (float32), every x1 a held-out row of the b-file (its last 50 rows).
    pool = samples_a.float()
    assert bool((batch.x0[:, None, :] == pool[None]).all(-1).any(1).all())
    torch.testing.assert_close(batch.x1, samples_b[150:182].float())


def test_the_system_sampler_without_files_and_bad_settings(tmp_path):
    data = FreeEnergyDataModule("double-well", 4, num_samples=256, val_samples=32, batch_size=64)
    assert isinstance(data.coupling, SampledBase) and data.samples["train_a"].shape == (256, 4)
    assert data.hparams["system"] == "double-well" and data.hparams["dims"] == 4
    with pytest.raises(ValueError, match="give both files of samples or neither"):
        FreeEnergyDataModule("gaussians", 3, samples_a=str(tmp_path / "a.pt"))
    with pytest.raises(ValueError, match=r"samples_a = '.*missing.pt': expected an existing .pt or .npy file"):
        FreeEnergyDataModule("gaussians", 3, samples_a=str(tmp_path / "missing.pt"), samples_b=str(tmp_path / "b.pt"))
    torch.save(torch.zeros(10, 2), tmp_path / "two.pt")
    with pytest.raises(ValueError, match="samples_a: samples of dimension 2, the system has d = 3"):
        FreeEnergyDataModule("gaussians", 3, samples_a=str(tmp_path / "two.pt"), samples_b=str(tmp_path / "two.pt"))
