"""A base drawn from a fixed set of samples: x0 uniform over a pool, independent of x1.

For an interpolant between two sampled densities (rho_a at t = 0, rho_b at t = 1): the data loader
yields x1 ~ rho_b and the pool holds samples of rho_a. The base is data, not a Gaussian, so the
interpolant must be built with ``gaussian_base: false`` (docs/math.md section 6).
"""

from __future__ import annotations

import torch
from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.couplings.base import Batch, Coupling


class SampledBase(Coupling):
    """x0 = pool[k], k ~ U{0, ..., n - 1} drawn from the batch's generator; no condition.

    Args:
        pool: base samples (n, ...), each shaped like one x1.
    """

    gaussian_base = False

    def __init__(self, pool: Tensor) -> None:
        if not isinstance(pool, Tensor) or not pool.is_floating_point() or pool.dim() < 2 or pool.shape[0] == 0:
            shape = tuple(pool.shape) if isinstance(pool, Tensor) else type(pool).__name__
            raise ValueError(f"pool must be a non-empty floating-point tensor of shape (n, ...), got {shape}")
        self.pool = pool

    def __repr__(self) -> str:
        return f"SampledBase(pool of {self.pool.shape[0]} samples of shape {tuple(self.pool.shape[1:])})"

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        if tuple(self.pool.shape[1:]) != tuple(data_shape):
            raise ValueError(
                f"the base pool holds samples of shape {tuple(self.pool.shape[1:])}, the data {data_shape}"
            )

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        chosen = torch.randint(
            self.pool.shape[0], (x1.shape[0],), generator=noise_generator or generator, device=x1.device
        )
        x0 = self.pool.to(device=x1.device, dtype=x1.dtype)[chosen]
        return Batch(x0, x1, Condition())
