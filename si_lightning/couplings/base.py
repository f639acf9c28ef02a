"""The coupling protocol: ``coupling(x1, labels=None, generator=None) -> Batch(x0, x1, cond)``.

x0 = m(x1) + sigma zeta, zeta ~ N(0, I) (docs/math.md section 6, Couplings). Two random draws may
enter a coupling: the *degradation* (an in-painting mask) and the *noise* zeta. Both come from
``generator``, unless ``noise_generator`` is given: then zeta comes from it, so several base points
can share one degradation (k restorations of one masked image).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

from si_lightning.condition import Condition


class Batch(NamedTuple):
    """One coupled batch: x0 (batch, ...) base points, x1 (batch, ...) data, cond their condition."""

    x0: Tensor
    x1: Tensor
    cond: Condition

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x0.to(device), self.x1.to(device), self.cond.to(device))

    @staticmethod
    def concatenate(batches: list[Batch]) -> Batch:
        """Several batches stacked along the batch dimension."""
        return Batch(
            torch.cat([item.x0 for item in batches]),
            torch.cat([item.x1 for item in batches]),
            Condition.concatenate([item.cond for item in batches]),
        )


def check_data(x1: Tensor, labels: Tensor | None) -> None:
    if not isinstance(x1, Tensor) or not x1.is_floating_point() or x1.dim() < 2:
        shape = tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__
        raise ValueError(f"x1 must be a floating tensor of shape (batch, ...), got {shape}")
    if labels is not None and (labels.shape != (x1.shape[0],) or labels.is_floating_point()):
        raise ValueError(
            f"labels must be an integer tensor of shape ({x1.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )


def noise(x1: Tensor, generator: torch.Generator | None) -> Tensor:
    """zeta ~ N(0, I) shaped like x1, drawn from ``generator`` (which must live on x1's device)."""
    return torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)


def gaussian_log_prob(residual: Tensor, sigma: float, inside: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """log N(residual; 0, sigma^2 I) over the entries where ``inside`` (all if None): (batch,), and their count."""
    inside = torch.ones_like(residual) if inside is None else inside.expand_as(residual).to(residual.dtype)
    dims = inside.flatten(1).sum(1)
    squared = (inside * residual / sigma).pow(2).flatten(1).sum(1)
    return -0.5 * squared - dims * (math.log(sigma) + 0.5 * math.log(2 * math.pi)), dims


def image_shape(data_shape: tuple[int, ...], kind: str) -> tuple[int, int, int]:
    if len(data_shape) != 3:
        raise ValueError(f"{kind} needs image data of shape (channels, height, width), got data shape {data_shape}")
    return data_shape  # type: ignore[return-value]


class Coupling(ABC):
    """Base class: ``coupling(x1, labels=None, generator=None, noise_generator=None) -> Batch(x0, x1, cond)``.

    Subclasses implement ``couple``; ``__call__`` checks the input first. A subclass that draws a
    degradation as well as noise accepts ``noise_generator`` in ``couple`` (see the module docstring).
    """

    gaussian_base: bool = False
    num_classes: int = 0

    def cond_channels(self, data_channels: int) -> int:
        """Channels of ``cond.channels`` for data with ``data_channels`` channels (0: none)."""
        return 0

    def check_shape(self, data_shape: tuple[int, ...]) -> None:  # noqa: B027 (a hook: no check by default)
        """Raise a ValueError if data of shape (channels, ...) cannot be coupled this way."""

    def __call__(
        self,
        x1: Tensor,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        check_data(x1, labels)
        self.check_shape(tuple(x1.shape[1:]))
        if noise_generator is None:
            return self.couple(x1, labels, generator)
        return self.couple(x1, labels, generator, noise_generator=noise_generator)

    @abstractmethod
    def couple(self, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Batch: ...

    def evaluation_coupling(self) -> Coupling:
        """The coupling that makes sampler inputs from held-out data (no label drop, no re-pairing)."""
        return self

    def base_log_prob(self, x0: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(log rho_0(x0 | cond) (batch,) in nats, the dimensions D (batch,) it is a density over).

        The base density of a likelihood; only couplings whose base given the condition is Gaussian have one.
        """
        raise ValueError(f"{self!r} has no base density log rho_0(x0 | cond) for a likelihood")

    def degraded(self, batch: Batch) -> Tensor:
        """What a restoration starts from, as a picture (batch, C, ...): the base point x0 by default."""
        return batch.x0

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({settings})"


class IndependentCoupling(Coupling):
    """x0 ~ N(0, I) independent of x1; no condition (labels are ignored: wrap in ClassLabels to use them)."""

    gaussian_base = True

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        return Batch(noise(x1, noise_generator or generator), x1, Condition())
