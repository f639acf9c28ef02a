"""Self-consistency of the Gaussian-mixture oracle in float64 (docs/math.md section 7)."""

from __future__ import annotations

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant
from tests.conftest import INTERPOLANT_CASES, case_id, make_interpolant, mixture_2d


def interior_times(count: int, generator: torch.Generator) -> torch.Tensor:
    """t in [0.05, 0.95], away from the encoder-decoder's switch at 1/2 (C^1 there, not C^2)."""
    t = 0.05 + 0.9 * torch.rand(count, generator=generator, dtype=torch.float64)
    return torch.where((t - 0.5).abs() < 0.02, t + 0.05, t)


def points(oracle: GaussianMixture, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x_t drawn from rho_t itself, so the checks run where the density lives."""
    count = t.shape[0]
    return oracle.interpolant.sample(
        oracle.sample_base(count, generator),
        oracle.sample_data(count, generator),
        t,
        torch.randn(count, oracle.dim, generator=generator, dtype=torch.float64),
    ).x_t


@pytest.mark.parametrize("case", INTERPOLANT_CASES, ids=case_id)
def test_score_is_gradient_of_log_density(case, generator):
    oracle = mixture_2d(make_interpolant(case))
    t = interior_times(64, generator)
    x = points(oracle, t, generator).requires_grad_()
    (gradient,) = torch.autograd.grad(oracle.log_prob(t, x).sum(), x)
    torch.testing.assert_close(oracle.score(t, x.detach()), gradient, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("case", INTERPOLANT_CASES, ids=case_id)
def test_exact_divergence_matches_autograd(case, generator):
    oracle = mixture_2d(make_interpolant(case))
    t = interior_times(64, generator)
    x = points(oracle, t, generator).requires_grad_()
    velocity = oracle.velocity(t, x)
    divergence = sum(
        torch.autograd.grad(velocity[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(oracle.dim)
    )
    torch.testing.assert_close(oracle.divergence(t, x.detach()), divergence, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("case", INTERPOLANT_CASES, ids=case_id)
def test_transport_equation(case, generator):
    """d/dt log rho + b . s + div b = 0, with a central finite difference in t (error O(h^2))."""
    oracle = mixture_2d(make_interpolant(case))
    t = interior_times(64, generator)
    x = points(oracle, t, generator)
    h = 1e-5
    time_derivative = (oracle.log_prob(t + h, x) - oracle.log_prob(t - h, x)) / (2 * h)
    residual = time_derivative + (oracle.velocity(t, x) * oracle.score(t, x)).sum(-1) + oracle.divergence(t, x)
    assert residual.abs().max().item() < 1e-6


@pytest.mark.parametrize("case", INTERPOLANT_CASES, ids=case_id)
def test_posterior_means_recompose_x(case, generator):
    """alpha eta_0 + beta eta_1 + gamma eta_z = x, and b = alpha' eta_0 + beta' eta_1 + gamma' eta_z."""
    interpolant = make_interpolant(case)
    oracle = mixture_2d(interpolant)
    t = interior_times(64, generator)
    x = points(oracle, t, generator)
    c = interpolant.coefficients(t)
    base, data, latent = oracle.base(t, x), oracle.data(t, x), oracle.latent(t, x)
    recomposed = c.alpha[:, None] * base + c.beta[:, None] * data + c.gamma[:, None] * latent
    torch.testing.assert_close(recomposed, x, atol=1e-10, rtol=1e-10)
    velocity = c.alpha_dot[:, None] * base + c.beta_dot[:, None] * data + c.gamma_dot[:, None] * latent
    torch.testing.assert_close(oracle.velocity(t, x), velocity, atol=1e-10, rtol=1e-10)


def test_log_prob_at_one_is_the_data_density(generator):
    oracle = mixture_2d(Interpolant("linear", "brownian"))
    x = oracle.sample_data(100, generator)
    expected = torch.logsumexp(
        torch.stack(
            [
                torch.distributions.MultivariateNormal(mean, cov).log_prob(x) + weight.log()
                for weight, mean, cov in zip(oracle.weights, oracle.means, oracle.covariances, strict=True)
            ]
        ),
        dim=0,
    )
    torch.testing.assert_close(oracle.log_prob(1.0, x), expected, atol=1e-10, rtol=1e-10)


def test_samples_match_mixture_moments(generator):
    oracle = mixture_2d(Interpolant("linear"))
    x = oracle.sample_data(200_000, generator)
    mean = (oracle.weights[:, None] * oracle.means).sum(0)
    standard_error = x.std(0) / 200_000**0.5
    assert bool(((x.mean(0) - mean).abs() < 5 * standard_error).all())


def test_bad_mixture_parameters_are_named():
    with pytest.raises(ValueError, match="covariances must have shape"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 3), torch.eye(2).expand(2, 2, 2), Interpolant())
    with pytest.raises(ValueError, match="weights must be positive"):
        GaussianMixture(torch.tensor([1.0, -1.0]), torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2), Interpolant())
