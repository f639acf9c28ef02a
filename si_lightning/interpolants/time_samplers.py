"""Training-time densities for t, always inside the interpolant's valid interval.

Each sampler also gives ``uniform_weight(t)`` = (uniform density) / (its density), so a loss
meant to be the uniform-in-t objective of docs/math.md section 2 stays unbiased when multiplied by it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class TimeSampler(ABC):
    """Draws t (batch,) in [t_min, t_max]."""

    def __call__(
        self,
        batch_size: int,
        interval: tuple[float, float],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        t_min, t_max = interval
        unit = self.draw_unit(batch_size, device, dtype, generator)
        return t_min + (t_max - t_min) * unit

    @abstractmethod
    def draw_unit(self, batch_size: int, device, dtype: torch.dtype, generator) -> Tensor: ...

    @abstractmethod
    def unit_density(self, u: Tensor) -> Tensor: ...

    def uniform_weight(self, t: Tensor, interval: tuple[float, float]) -> Tensor:
        """1 / density of the unit variable: the importance weight back to uniform t."""
        t_min, t_max = interval
        return 1.0 / self.unit_density((t - t_min) / (t_max - t_min))


class UniformTime(TimeSampler):
    """t ~ U[t_min, t_max]."""

    def draw_unit(self, batch_size, device, dtype, generator) -> Tensor:
        return torch.rand(batch_size, device=device, dtype=dtype, generator=generator)

    def unit_density(self, u: Tensor) -> Tensor:
        return torch.ones_like(u)


class LogitNormalTime(TimeSampler):
    """u = sigmoid(m + s n), n ~ N(0, 1), mapped to [t_min, t_max] (SD3's logit-normal)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"logit-normal std must be > 0, got {std!r}")
        self.mean, self.std = float(mean), float(std)

    def draw_unit(self, batch_size, device, dtype, generator) -> Tensor:
        normal = torch.randn(batch_size, device=device, dtype=dtype, generator=generator)
        return torch.sigmoid(self.mean + self.std * normal)

    def unit_density(self, u: Tensor) -> Tensor:
        logit = torch.log(u) - torch.log1p(-u)
        gauss = torch.exp(-0.5 * ((logit - self.mean) / self.std) ** 2) / (self.std * math.sqrt(2 * math.pi))
        return gauss / (u * (1 - u))


TIME_SAMPLERS: dict[str, type[TimeSampler]] = {"uniform": UniformTime, "logit-normal": LogitNormalTime}
