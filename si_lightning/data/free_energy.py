"""Samples of two Boltzmann densities for learning the transport rho_a (t = 0) -> rho_b (t = 1).

The loaders yield x1 ~ rho_b; the coupling (``SampledBase``) pairs each with an independent x0 drawn
from the training samples of rho_a. The samples come from files (``samples_a``, ``samples_b``: .pt or
.npy arrays of shape (n, d)) or, without files, from the exact sampler of ``system``
(``si_lightning.free_energy.systems``). The checkpoint records ``system`` and ``dims`` so that an
estimation run knows the energies (experiments/free-energy/estimate.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from si_lightning.checks import is_integer
from si_lightning.couplings import SampledBase
from si_lightning.data.base import CoupledDataModule, derived_seed
from si_lightning.data.datasets import InMemoryDataset
from si_lightning.free_energy.systems import BoltzmannPair, build_system

SAMPLE_FILES = (".pt", ".npy")


def read_samples(name: str, path: str | Path) -> Tensor:
    """(n, d) float32 samples from a .pt (a tensor, read with weights_only=True) or .npy file."""
    path = Path(path)
    if path.suffix not in SAMPLE_FILES or not path.is_file():
        raise ValueError(f"{name} = {str(path)!r}: expected an existing .pt or .npy file of samples (n, d)")
    values = torch.load(path, weights_only=True) if path.suffix == ".pt" else torch.from_numpy(np.load(path))
    if not isinstance(values, Tensor) or values.dim() != 2 or not values.is_floating_point():
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{name} = {str(path)!r}: expected floating-point samples of shape (n, d), got {shape}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} = {str(path)!r}: the samples hold NaN or inf")
    return values.float()


class FreeEnergyDataModule(CoupledDataModule):
    """x1 ~ rho_b batches coupled with x0 ~ rho_a (``SampledBase``); module docstring.

    Args:
        system: one of ``si_lightning.free_energy.systems.SYSTEMS`` (gaussians, mixtures, double-well).
        dims: its dimension (None: the system's default).
        num_samples: training samples of each density (drawn from the system; with files, all rows
            but the last ``val_samples`` train).
        val_samples: held-out samples of rho_b for the validation (and test) loss.
        samples_a, samples_b: optional files of samples (both or neither).
        batch_size, num_workers, seed, device_invariant: see CoupledDataModule.
    """

    def __init__(
        self,
        system: str = "gaussians",
        dims: int | None = None,
        num_samples: int = 65536,
        val_samples: int = 4096,
        samples_a: str | None = None,
        samples_b: str | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        device_invariant: bool = True,
    ) -> None:
        for label, value in (("num_samples", num_samples), ("val_samples", val_samples)):
            if not is_integer(value) or value <= 0:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if (samples_a is None) != (samples_b is None):
            raise ValueError("samples_a and samples_b: give both files of samples or neither")
        self.pair: BoltzmannPair = build_system(system, dims)
        self.system, self.dims = system, self.pair.dims
        self.num_samples, self.val_samples = num_samples, val_samples
        self.samples = self._draw(seed) if samples_a is None else self._read(samples_a, samples_b)
        super().__init__(batch_size, num_workers, seed, SampledBase(self.samples["train_a"]), device_invariant)
        self.data_shape = (self.dims,)
        self.dataset_classes = 0
        self.check_coupling()
        self.save_hyperparameters({"system": system, "dims": self.dims})

    def _draw(self, seed: int) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(derived_seed(seed, "free-energy", self.system))
        return {
            "train_a": self.pair.sample_a(self.num_samples, generator).float(),
            "train_b": self.pair.sample_b(self.num_samples, generator).float(),
            "val_b": self.pair.sample_b(self.val_samples, generator).float(),
        }

    def _read(self, path_a: str, path_b: str) -> dict[str, Tensor]:
        samples_a, samples_b = read_samples("samples_a", path_a), read_samples("samples_b", path_b)
        for name, values in (("samples_a", samples_a), ("samples_b", samples_b)):
            if values.shape[1] != self.dims:
                raise ValueError(f"{name}: samples of dimension {values.shape[1]}, the system has d = {self.dims}")
        if samples_b.shape[0] <= self.val_samples:
            raise ValueError(
                f"samples_b holds {samples_b.shape[0]} samples; more than val_samples = {self.val_samples} are needed"
            )
        return {
            "train_a": samples_a,
            "train_b": samples_b[: -self.val_samples],
            "val_b": samples_b[-self.val_samples :],
        }

    def build_datasets(self) -> dict[str, InMemoryDataset]:
        held_out = InMemoryDataset(self.samples["val_b"])
        return {"train": InMemoryDataset(self.samples["train_b"]), "val": held_out, "test": held_out}
