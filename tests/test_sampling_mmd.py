"""The two-sample test the sampler tests use: Gaussian-kernel MMD with a threshold from data-vs-data draws.

A sampler "reproduces" a distribution when MMD(samples, fresh data) is below the 99th percentile of
20 MMDs between two independent data draws of the same size: within the noise of the data itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant
from tests.conftest import mixture_2d

BANDWIDTHS = (0.3, 1.0)  # the scale of one component and the spread of the modes
SAMPLES = 1500
NULL_DRAWS = 20


def gaussian_mmd(first: Tensor, second: Tensor, bandwidths: tuple[float, ...] = BANDWIDTHS) -> float:
    """Unbiased MMD^2 between samples (n, d) and (m, d) for a sum of Gaussian kernels."""
    both = torch.cat([first, second]).to(torch.float32)
    squared = torch.cdist(both, both).pow_(2)
    kernel = torch.zeros_like(squared)
    for bandwidth in bandwidths:
        kernel += torch.exp(squared / (-2 * bandwidth**2))
    n, m = first.shape[0], second.shape[0]
    within_first, within_second, across = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    first_term = (within_first.sum() - within_first.diagonal().sum()) / (n * (n - 1))
    second_term = (within_second.sum() - within_second.diagonal().sum()) / (m * (m - 1))
    return float(first_term + second_term - 2 * across.mean())


def mmd_threshold(draw: Callable[[int, torch.Generator], Tensor], count: int, generator: torch.Generator) -> float:
    """The 99th percentile of ``NULL_DRAWS`` MMDs between two independent draws of ``count`` samples."""
    values = torch.tensor([gaussian_mmd(draw(count, generator), draw(count, generator)) for _ in range(NULL_DRAWS)])
    return float(torch.quantile(values, 0.99))


def mixture() -> GaussianMixture:
    """The 2-D mixture of tests/conftest.py with the linear interpolant and gamma = sqrt(t (1 - t))."""
    return mixture_2d(Interpolant("linear", "brownian", 1.0))


@functools.cache
def mixture_threshold() -> float:
    """The data-vs-data threshold of ``mixture()`` (rho_1 does not depend on the interpolant); computed once."""
    return mmd_threshold(mixture().sample_data, SAMPLES, torch.Generator().manual_seed(2024))


@functools.cache
def base_threshold() -> float:
    """The same threshold for the base N(0, I) in 2-D."""
    return mmd_threshold(mixture().sample_base, SAMPLES, torch.Generator().manual_seed(2025))


def test_threshold_passes_fresh_data_and_rejects_a_five_percent_contraction():
    oracle = mixture()
    generator = torch.Generator().manual_seed(7)
    threshold = mixture_threshold()
    reference = oracle.sample_data(SAMPLES, generator)
    fresh = oracle.sample_data(SAMPLES, generator)
    assert gaussian_mmd(fresh, reference) < threshold
    # Samples 5% too concentrated about their mean must fail the test.
    mean = fresh.mean(0)
    assert gaussian_mmd(mean + 0.95 * (fresh - mean), reference) > threshold
