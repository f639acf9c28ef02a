"""The exact conditional velocity of a Gaussian data-dependent coupling drives the ODE to the law of x1 given xi."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.analytic import ConditionalGaussian
from si_lightning.sampling import Fields, ODESampler


class ObservedFields(Fields):
    """b(t, x | xi) for one fixed observation xi (d,), the same for every sample of the batch."""

    def __init__(self, oracle: ConditionalGaussian, observation: torch.Tensor) -> None:
        self.oracle, self.observation = oracle, observation
        self.has_score = False

    def velocity(self, t, x, cond=None):
        return self.oracle.velocity(t, x, self.observation.expand_as(x))


def test_posterior_is_the_gaussian_conditional():
    """m and P against the textbook form: m = mu + S (S + sigma^2 I)^-1 (xi - mu), P = S - S (S + sigma^2 I)^-1 S."""
    covariance = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    mean = torch.tensor([1.0, -1.0], dtype=torch.float64)
    oracle = ConditionalGaussian(mean, covariance, sigma=0.5, base_std=1.0)
    gain = covariance @ torch.linalg.inv(covariance + 0.25 * torch.eye(2, dtype=torch.float64))
    observation = torch.tensor([[0.3, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(oracle.posterior_mean(observation)[0], mean + gain @ (observation[0] - mean))
    torch.testing.assert_close(oracle.posterior_covariance, covariance - gain @ covariance)


def test_velocity_is_the_derivative_of_the_interpolant_in_expectation():
    """b(t, x | xi) = E[x1 - x0 | x_t = x, xi]: the regression of x1 - x0 on x_t among joint draws given xi."""
    covariance = torch.tensor([[1.5, -0.4], [-0.4, 0.8]], dtype=torch.float64)
    oracle = ConditionalGaussian(torch.zeros(2, dtype=torch.float64), covariance, sigma=0.7, base_std=0.5)
    observation = torch.tensor([0.5, -0.2], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    count, t = 200_000, 0.6
    root = torch.linalg.cholesky(oracle.posterior_covariance)
    x1 = (
        oracle.posterior_mean(observation[None])
        + torch.randn(count, 2, generator=generator, dtype=torch.float64) @ root.T
    )
    x0 = oracle.sample_base(observation.expand(count, 2), generator)
    xt = (1 - t) * x0 + t * x1
    # Least squares of x1 - x0 on [1, x_t]: the exact conditional expectation is affine, so they agree.
    design = torch.cat([torch.ones(count, 1, dtype=torch.float64), xt], dim=1)
    coefficients = torch.linalg.lstsq(design, x1 - x0).solution
    probe = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    fitted = torch.cat([torch.ones(2, 1, dtype=torch.float64), probe], dim=1) @ coefficients
    exact = oracle.velocity(torch.full((2,), t, dtype=torch.float64), probe, observation.expand(2, 2))
    residual = (x1 - x0) - design @ coefficients
    tolerance = 6 * float(residual.std()) * 3 / math.sqrt(count)  # regression error at points ~ 1 from the centre
    torch.testing.assert_close(fitted, exact, rtol=0, atol=tolerance)


def test_ode_from_the_conditional_base_samples_the_law_of_x1_given_xi():
    covariance = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    oracle = ConditionalGaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), covariance, sigma=0.5, base_std=1.0)
    observation = torch.tensor([0.3, 2.0], dtype=torch.float64)
    count = 4000
    x0 = oracle.sample_base(observation.expand(count, 2), torch.Generator().manual_seed(1))
    samples = ODESampler(method="dopri5", atol=1e-8, rtol=1e-8).sample(ObservedFields(oracle, observation), x0).x
    mean, target = oracle.posterior_mean(observation[None])[0], oracle.posterior_covariance
    mean_error = 5 * (target.diagonal() / count).sqrt()
    assert bool(((samples.mean(0) - mean).abs() < mean_error).all()), (samples.mean(0), mean)
    # Standard error of a sample covariance entry: sqrt((P_ij^2 + P_ii P_jj) / n).
    covariance_error = 5 * ((target**2 + target.diagonal()[:, None] * target.diagonal()[None, :]) / count).sqrt()
    sample_covariance = torch.cov(samples.T)
    assert bool(((sample_covariance - target).abs() < covariance_error).all()), (sample_covariance, target)


def test_bad_settings():
    with pytest.raises(ValueError, match="sigma and base_std must be > 0"):
        ConditionalGaussian(torch.zeros(2), torch.eye(2), sigma=0.5, base_std=0.0)
