"""Energies in units of kT: callables U(x) of x (batch, d) returning (batch,), counted where they are called.

A Boltzmann density is rho(x) = exp(-U(x)) / Z with Z unknown; the free energy is F = -log Z, so
Delta F = F_b - F_a = -log(Z_b / Z_a) (docs/math.md section 10).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Energy = Callable[[Tensor], Tensor]  # x (batch, d) -> U(x) (batch,), in kT


class CountedEnergy:
    """Wraps an energy: checks the shape of what it returns and counts the configurations it evaluated.

    ``evaluations`` is the number of rows x_i whose energy was computed (one per sample, whatever
    the batching), the unit in which the estimators' costs are compared.
    """

    def __init__(self, energy: Energy, name: str) -> None:
        if not callable(energy):
            raise ValueError(f"{name} must be a callable (batch, d) -> (batch,), got {type(energy).__name__}")
        self.energy, self.name = energy, name
        self.evaluations = 0

    def __call__(self, x: Tensor) -> Tensor:
        value = self.energy(x)
        if not isinstance(value, Tensor) or value.shape != (x.shape[0],):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{self.name} must return a tensor of shape ({x.shape[0]},), got {shape}")
        self.evaluations += x.shape[0]
        return value
