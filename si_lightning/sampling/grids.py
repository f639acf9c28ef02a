"""Time grids for the fixed-step integrators: uniform, denser near both ends, or shaped by the path.

Heun on a uniform grid can lose to Euler at equal NFE when the field is stiff near the ends; the grid
matters as much as the order, so it is a separate, named choice. Path grids (``logsnr``, ``edm``) read
the interpolant of the fields they integrate: uniform in the log signal-to-noise ratio
lambda = log(beta / alpha_bar), or EDM's rho-grid in sigma = alpha_bar / beta = exp(-lambda), each mapped
back to t through the inverse of lambda. ``FittedGrid`` (si_lightning.sampling.design) is fitted on a
pilot batch and stored with a checkpoint.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from si_lightning.interpolants import Interpolant
from si_lightning.sampling.snr import log_snr, time_of_log_snr


class TimeGrid(ABC):
    """Maps ``steps`` to times (steps + 1,) from ``start`` to ``end`` (either direction), ends exact.

    ``needs_interpolant``: the grid depends on the path, and the sampler passes the fields' interpolant.
    """

    needs_interpolant: bool = False

    @abstractmethod
    def fractions(self, steps: int) -> Tensor:
        """Increasing fractions u_0 = 0 < ... < u_steps = 1 in float64."""

    def __call__(
        self,
        start: float,
        end: float,
        steps: int,
        device: torch.device | str = "cpu",
        dtype=torch.float64,
        interpolant: Interpolant | None = None,
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


class IncreasingTimeGrid(TimeGrid):
    """A grid given by increasing times on [low, high]; a decreasing interval takes them in reverse."""

    def fractions(self, steps: int) -> Tensor:
        raise TypeError(f"{type(self).__name__} places absolute times; call it with (start, end, steps)")

    @abstractmethod
    def increasing(self, low: float, high: float, steps: int, interpolant: Interpolant | None) -> Tensor:
        """Times (steps + 1,) in float64 from ``low`` to ``high``, increasing."""

    def __call__(
        self,
        start: float,
        end: float,
        steps: int,
        device: torch.device | str = "cpu",
        dtype=torch.float64,
        interpolant: Interpolant | None = None,
    ) -> Tensor:
        if self.needs_interpolant and interpolant is None:
            raise ValueError(f"time grid {type(self).__name__} needs the interpolant of the fields, and got none")
        low, high = min(start, end), max(start, end)
        grid = self.increasing(low, high, steps, interpolant)
        grid[0], grid[-1] = low, high
        if start > end:
            grid = grid.flip(0)
        return grid.to(device=device, dtype=dtype)


class LogSNRGrid(IncreasingTimeGrid):
    """Uniform in lambda = log(beta / alpha_bar) between lambda(start) and lambda(end), clipped to
    [-log sigma_max, -log sigma_min] where lambda is infinite (t = 0 or 1); interior ends then step to the
    exact ends.
    """

    needs_interpolant = True

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def _lambda_range(self, low: float, high: float, interpolant: Interpolant) -> tuple[float, float]:
        ends = log_snr(interpolant, torch.tensor([low, high], dtype=torch.float64))
        first = max(float(ends[0]), -math.log(self.sigma_max))
        last = min(float(ends[1]), -math.log(self.sigma_min))
        if not first < last:
            raise ValueError(
                f"{type(self).__name__}: the interval [{low}, {high}] spans no log-SNR range "
                f"inside [-log {self.sigma_max}, -log {self.sigma_min}]"
            )
        return first, last

    def increasing(self, low: float, high: float, steps: int, interpolant: Interpolant | None) -> Tensor:
        first, last = self._lambda_range(low, high, interpolant)
        values = torch.linspace(first, last, steps + 1, dtype=torch.float64)
        return time_of_log_snr(interpolant, values).clamp(low, high)


class EDMGrid(LogSNRGrid):
    """EDM's rho-grid sigma_k = (sigma_max^(1/rho) + k/N (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho in
    sigma = alpha_bar / beta, mapped to t through the inverse log-SNR (sigma clipped as in ``LogSNRGrid``).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        super().__init__(sigma_min, sigma_max)
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho!r}")
        self.rho = float(rho)

    def increasing(self, low: float, high: float, steps: int, interpolant: Interpolant | None) -> Tensor:
        first, last = self._lambda_range(low, high, interpolant)
        largest, smallest = math.exp(-first) ** (1 / self.rho), math.exp(-last) ** (1 / self.rho)
        fractions = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        sigma = (largest + fractions * (smallest - largest)) ** self.rho
        return time_of_log_snr(interpolant, -sigma.log()).clamp(low, high)


GRIDS: dict[str, type[TimeGrid]] = {"uniform": UniformGrid, "cosine": CosineGrid, "logsnr": LogSNRGrid, "edm": EDMGrid}
