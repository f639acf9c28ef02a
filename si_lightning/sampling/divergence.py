"""div f(x) for a field evaluated with autograd: exact (D backward passes) or Hutchinson (K probes).

Hutchinson: div f = E[probe^T (df/dx) probe] for probes with E[probe probe^T] = I (Gaussian or
Rademacher). The probes are drawn once per solve and passed in: a fresh probe at
every right-hand-side call would make an adaptive solver integrate a random function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from si_lightning.checks import lookup, positive_int
from si_lightning.sampling.seeds import NoiseSource


class ProbeDistribution(ABC):
    """Draws probes of a given shape from a NoiseSource."""

    @abstractmethod
    def draw(self, noise: NoiseSource, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor: ...


class GaussianProbe(ProbeDistribution):
    def draw(self, noise: NoiseSource, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        return noise.normal(shape, device, dtype)


class RademacherProbe(ProbeDistribution):
    """Uniform on {-1, +1}: the lowest-variance Hutchinson probe (variance 2 sum_{i != j} J_ij^2)."""

    def draw(self, noise: NoiseSource, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        return noise.rademacher(shape, device, dtype)


PROBES: dict[str, type[ProbeDistribution]] = {"gaussian": GaussianProbe, "rademacher": RademacherProbe}


class DivergenceEstimator(ABC):
    """Estimates of div f at x: (count, batch), one row per probe (``count`` = 1 for exact)."""

    count: int = 1

    def draw(self, x: Tensor, noise: NoiseSource, paths: int = 1) -> Tensor | None:
        """The probes of one solve: (count, batch * paths, ...) for x (batch, ...), or None."""
        return None

    @abstractmethod
    def __call__(self, output: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
        """``output`` = f(x) (batch, ...) built with autograd from ``x`` (requires grad)."""

    @abstractmethod
    def describe(self) -> str: ...


class ExactDivergence(DivergenceEstimator):
    """sum_i d f_i / d x_i by one backward pass per data dimension (D passes: for small D)."""

    def __init__(self, probes: int = 1, probe: str = "gaussian") -> None:
        if probes != 1:
            raise ValueError(f"probes = {probes!r} applies to the Hutchinson estimator; the exact divergence takes 1")

    def __call__(self, output: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
        flat = output.flatten(1)
        diagonal = []
        for index in range(flat.shape[1]):
            # Samples are independent, so the gradient of the batch sum gives each sample's own entry.
            (gradient,) = torch.autograd.grad(flat[:, index].sum(), x, retain_graph=True, allow_unused=True)
            diagonal.append(torch.zeros_like(flat[:, index]) if gradient is None else gradient.flatten(1)[:, index])
        return torch.stack(diagonal, dim=1).sum(dim=1).unsqueeze(0)

    def describe(self) -> str:
        return "exact divergence"


class HutchinsonDivergence(DivergenceEstimator):
    """probe^T (df/dx) probe by one vector-Jacobian product per probe, for ``probes`` probes."""

    def __init__(self, probes: int = 1, probe: str = "gaussian") -> None:
        self.count = positive_int("probes", probes)
        self.probe_name = probe
        self.probe = lookup(PROBES, probe, "Hutchinson probe")()

    def draw(self, x: Tensor, noise: NoiseSource, paths: int = 1) -> Tensor:
        # Drawn as (batch, paths, count, ...) so that per-sample generators draw their own sample's probes.
        probes = self.probe.draw(noise, (x.shape[0], paths, self.count, *x.shape[1:]), x.device, x.dtype)
        return probes.flatten(0, 1).movedim(1, 0)

    def __call__(self, output: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
        # One batched vector-Jacobian product for all probes (vmap over the first dimension of probes).
        (products,) = torch.autograd.grad(output, x, grad_outputs=probes, is_grads_batched=True, allow_unused=True)
        if products is None:
            return torch.zeros(self.count, x.shape[0], dtype=x.dtype, device=x.device)
        return (products * probes).flatten(2).sum(dim=2)

    def describe(self) -> str:
        return f"Hutchinson divergence, {self.count} {self.probe_name} probe(s) drawn once per solve"


DIVERGENCES: dict[str, type[DivergenceEstimator]] = {"exact": ExactDivergence, "hutchinson": HutchinsonDivergence}


def field_and_divergence(
    output: Callable[[Tensor], tuple[Tensor, ...]], x: Tensor, estimator: DivergenceEstimator, probes: Tensor | None
) -> tuple[tuple[Tensor, ...], Tensor]:
    """``output(x)`` (its first entry the field f whose divergence is wanted) and div f: (count, batch).

    Evaluated with autograd on (also inside ``torch.no_grad``); everything returned is detached.
    ``x`` (batch, ...); ``probes`` as drawn by ``estimator.draw`` for this solve.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        values = output(x)
        divergence = estimator(values[0], x, probes)
    return tuple(value.detach() for value in values), divergence.detach()
