"""Time grids for the fixed-step integrators: uniform, or denser near both ends.

Heun on a uniform grid can lose to Euler at equal NFE when the field is stiff near the ends
(PITFALLS.md); the grid matters as much as the order, so it is a separate, named choice.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class TimeGrid(ABC):
    """Maps ``steps`` to times (steps + 1,) from ``start`` to ``end`` (either direction), ends exact."""

    @abstractmethod
    def fractions(self, steps: int) -> Tensor:
        """Increasing fractions u_0 = 0 < ... < u_steps = 1 in float64."""

    def __call__(
        self, start: float, end: float, steps: int, device: torch.device | str = "cpu", dtype=torch.float64
    ) -> Tensor:
        fractions = self.fractions(steps)
        grid = start + (end - start) * fractions
        grid[0], grid[-1] = start, end  # exact ends: the interval is checked against them
        return grid.to(device=device, dtype=dtype)


class UniformGrid(TimeGrid):
    """u_k = k / steps."""

    def fractions(self, steps: int) -> Tensor:
        return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


class CosineGrid(TimeGrid):
    """u_k = (1 - cos(pi k / steps)) / 2: step sizes shrink like (pi/2)^2 / steps^2 at both ends."""

    def fractions(self, steps: int) -> Tensor:
        unit = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        return 0.5 * (1 - torch.cos(math.pi * unit))


GRIDS: dict[str, type[TimeGrid]] = {"uniform": UniformGrid, "cosine": CosineGrid}
