"""The multimarginal interpolant against closed forms (docs/math.md section 12), in float64.

Gaussian marginals N(m_k, C_k) in d = 2, K = 4, marginal 0 the standard Gaussian: x(alpha) is Gaussian,
so g_k = E[x_k | x(alpha)], eta = E[z | x(alpha)] and the score are linear regressions
(``GaussianMarginals``), and along an edge the flow map is affine.
"""

from __future__ import annotations

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.analytic_multimarginal import GaussianMarginals
from si_lightning.interpolants import Interpolant
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant, multimarginal_loss
from si_lightning.interpolants.simplex import SIMPLEX_SAMPLERS, MixedSimplex, UniformSimplex
from si_lightning.interpolants.simplex_paths import EdgePath, route
from si_lightning.sampling import ODESampler, SDESampler
from si_lightning.sampling.multimarginal import OracleSimplexFields, PathFields, translate

GAMMAS = [("brownian", 0.5), ("quadratic", 2.0), ("zero", 1.0)]


def gaussian_marginals(interpolant: MultimarginalInterpolant) -> GaussianMarginals:
    """Marginal 0 is N(0, I); the others have distinct means and full covariances."""
    generator = torch.Generator().manual_seed(11)
    count = interpolant.num_marginals
    means = 3.0 * torch.randn(count, 2, generator=generator, dtype=torch.float64)
    factors = torch.randn(count, 2, 2, generator=generator, dtype=torch.float64)
    covariances = factors @ factors.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
    means[0], covariances[0] = 0.0, torch.eye(2, dtype=torch.float64)
    return GaussianMarginals(means, covariances, interpolant)


def draw(oracle: GaussianMarginals, count: int, generator: torch.Generator) -> list[torch.Tensor]:
    return [oracle.sample(k, count, generator) for k in range(oracle.interpolant.num_marginals)]


@pytest.mark.parametrize("sampler", sorted(SIMPLEX_SAMPLERS))
def test_simplex_samplers_stay_on_the_simplex(sampler):
    kind = SIMPLEX_SAMPLERS[sampler]
    alpha = kind()(5000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    MultimarginalInterpolant(4).check_alpha(alpha, 5000, tolerance=1e-12)
    if sampler == "edges":  # exactly two non-zero coordinates (s = 0 has probability zero)
        assert bool(((alpha > 0).sum(dim=1) == 2).all())


def test_uniform_simplex_is_dirichlet_one():
    """Dirichlet(1, .., 1) on K = 4: each coordinate is Beta(1, 3), mean 1/4 and variance 3/80."""
    count = 40_000
    alpha = UniformSimplex()(count, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # Standard errors: sqrt(var / n) for the mean, sqrt((m4 - var^2) / n) for the variance (Beta(1,3):
    # m4 = E(a - 1/4)^4 = 0.00614...), so 5 SE is 4.8e-3 and 1.3e-3.
    assert (alpha.mean(dim=0) - 0.25).abs().max() < 5 * (3 / 80 / count) ** 0.5
    assert (alpha.var(dim=0) - 3 / 80).abs().max() < 5 * ((0.00614 - (3 / 80) ** 2) / count) ** 0.5


@pytest.mark.parametrize(("gamma", "scale"), GAMMAS)
def test_vertices_recover_the_marginals_and_edges_the_two_marginal_gamma(gamma, scale):
    interpolant = MultimarginalInterpolant(4, gamma=gamma, gamma_scale=scale)
    generator = torch.Generator().manual_seed(2)
    # W == batch: a broadcast of alpha_k against the last axis would pass silently otherwise.
    xs = [torch.randn(3, 1, 2, 3, generator=generator, dtype=torch.float64) for _ in range(4)]
    for k in range(4):
        alpha = torch.zeros(3, 4, dtype=torch.float64)
        alpha[:, k] = 1.0
        sample = interpolant.sample(xs, alpha)
        torch.testing.assert_close(sample.x, xs[k], atol=0, rtol=0)
    s = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64)
    alpha, rate = EdgePath(4, 1, 3)(s)
    gamma_value, gamma_rate, product = interpolant.gamma_rates(alpha, rate)
    two_marginal = Interpolant("linear", gamma=gamma, gamma_scale=scale).coefficients(s)
    torch.testing.assert_close(gamma_value, two_marginal.gamma)
    torch.testing.assert_close(gamma_rate, two_marginal.gamma_dot)
    torch.testing.assert_close(product, two_marginal.gamma_gamma_dot)
    sample = interpolant.sample(xs, alpha, z := torch.randn(3, 1, 2, 3, generator=generator, dtype=torch.float64))
    expected = (1 - s).view(3, 1, 1, 1) * xs[1] + s.view(3, 1, 1, 1) * xs[3] + gamma_value.view(3, 1, 1, 1) * z
    torch.testing.assert_close(sample.x, expected)


@pytest.mark.parametrize(("gamma", "scale"), GAMMAS[:2])
def test_oracle_is_consistent_and_its_score_is_the_gradient(gamma, scale):
    """sum_k alpha_k g_k + gamma eta = E[x(alpha) | x(alpha)] = x; score = grad log N(x; mu, Sigma)."""
    oracle = gaussian_marginals(MultimarginalInterpolant(4, gamma=gamma, gamma_scale=scale))
    generator = torch.Generator().manual_seed(3)
    alpha = UniformSimplex()(64, 4, dtype=torch.float64, generator=generator)
    x = oracle.interpolant.sample(draw(oracle, 64, generator), alpha).x
    g, eta = oracle.predict(alpha, x)
    gamma_value = oracle.interpolant.gamma(alpha)
    torch.testing.assert_close((alpha[:, :, None] * g).sum(1) + gamma_value[:, None] * eta, x, atol=1e-10, rtol=0)
    mean, covariance = oracle.moments(alpha)
    x = x.requires_grad_()
    log_density = torch.distributions.MultivariateNormal(mean, covariance).log_prob(x).sum()
    (gradient,) = torch.autograd.grad(log_density, x)
    torch.testing.assert_close(oracle.score(alpha, x.detach()), gradient, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(oracle.interpolant.score(alpha, eta), gradient, atol=1e-9, rtol=1e-9)


PERTURBATIONS = {
    "+g1": lambda alpha, x, out: out + 0.3 * torch.nn.functional.one_hot(torch.tensor(2), out.shape[1]),
    "tanh(x) on g0": lambda alpha, x, out: out + torch.cat([0.3 * torch.tanh(x), 0 * out[:, 2:]], 1),
    "alpha-scaled on last": lambda alpha, x, out: out + torch.cat([0 * out[:, :-2], 0.3 * alpha[:, :2] * x], 1),
}


@pytest.mark.parametrize(("gamma", "scale"), GAMMAS)
def test_oracle_minimises_the_loss(gamma, scale):
    """Every perturbation of the exact fields raises the loss by more than 5 paired standard errors."""
    interpolant = MultimarginalInterpolant(4, gamma=gamma, gamma_scale=scale)
    oracle = gaussian_marginals(interpolant)
    generator = torch.Generator().manual_seed(4)
    count = 20_000
    xs, z = draw(oracle, count, generator), torch.randn(count, 2, generator=generator, dtype=torch.float64)
    alpha = MixedSimplex()(count, 4, dtype=torch.float64, generator=generator)
    best = multimarginal_loss(interpolant, lambda x, a: oracle.output(a, x), xs, alpha, z)
    for name, perturbation in PERTURBATIONS.items():
        network = lambda x, a, change=perturbation: change(a, x, oracle.output(a, x))  # noqa: E731
        worse = multimarginal_loss(interpolant, network, xs, alpha, z)
        difference = worse - best  # paired: the same (xs, z, alpha) for both
        standard_error = difference.std() / count**0.5
        assert difference.mean() > 5 * standard_error, f"{name}: {difference.mean():.3g} vs se {standard_error:.3g}"


@pytest.mark.parametrize(("gamma", "scale"), GAMMAS[:2])
def test_edge_from_the_gaussian_vertex_is_the_two_marginal_velocity(gamma, scale):
    """On the edge 0 -> j, x(alpha) is the linear two-marginal interpolant with the same gamma family and
    scale; its velocity from the independent Gaussian-mixture oracle (one component) must agree."""
    interpolant = MultimarginalInterpolant(4, gamma=gamma, gamma_scale=scale)
    oracle = gaussian_marginals(interpolant)
    target = 2
    two_marginal = GaussianMixture(
        torch.ones(1, dtype=torch.float64),
        oracle.means[target : target + 1],
        oracle.covariances[target : target + 1],
        Interpolant("linear", gamma=gamma, gamma_scale=scale),
    )
    generator = torch.Generator().manual_seed(5)
    s = 0.05 + 0.9 * torch.rand(256, generator=generator, dtype=torch.float64)
    x = 2.0 * torch.randn(256, 2, generator=generator, dtype=torch.float64)
    fields = PathFields(OracleSimplexFields(oracle), EdgePath(4, 0, target))
    torch.testing.assert_close(fields.velocity(s, x), two_marginal.velocity(s, x), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fields.score(s, x), two_marginal.score(s, x), atol=1e-10, rtol=1e-10)


def whitened_draw(oracle: GaussianMarginals, marginal: int, count: int) -> torch.Tensor:
    """Samples whose empirical mean and covariance are exactly m_i and C_i (centred, whitened, recoloured)."""
    raw = torch.randn(count, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    raw = raw - raw.mean(0)
    raw = raw @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(raw.T))).T
    return oracle.means[marginal] + raw @ torch.linalg.cholesky(oracle.covariances[marginal]).T


@pytest.mark.parametrize(("gamma", "scale", "eps"), [("quadratic", 2.0, 1e-3), ("brownian", 0.5, 1e-7)])
@pytest.mark.parametrize("path", ["edge", "through-base"])
def test_ode_transport_with_the_exact_fields_reproduces_the_target(gamma, scale, eps, path):
    """The exact fields are affine in x, so the flow map of each leg is affine: samples whose empirical
    moments are exactly (m_i, C_i) arrive with empirical moments (m_j, C_j) up to the solver's error
    (dopri5 at 1e-9) plus, for the Brownian gamma, the start at s = eps instead of the vertex, where the
    covariance of x(alpha) differs from C_i by O(eps) = 1e-7: a 1e-5 tolerance covers both with margin."""
    interpolant = MultimarginalInterpolant(4, gamma=gamma, gamma_scale=scale, endpoint_eps=eps)
    oracle = gaussian_marginals(interpolant)
    sampler = ODESampler("dopri5", atol=1e-9, rtol=1e-9)
    for start, end in [(1, 3), (2, 1), (0, 2)]:
        x = whitened_draw(oracle, start, 500)
        moved, _ = translate(OracleSimplexFields(oracle), sampler, x, route(4, start, end, path))
        torch.testing.assert_close(moved.mean(0), oracle.means[end], atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cov(moved.T), oracle.covariances[end], atol=1e-5, rtol=0)


def test_sde_transport_along_an_edge_reproduces_the_target():
    """Euler-Maruyama with eps(s) = sin^2(pi s) (eps / gamma^2 stays bounded at both vertices) from
    rho_1 to rho_3, 200 steps, 20,000 samples. Tolerance on the mean: 5 standard errors sqrt(C_jj / n)
    plus the O(h) bias of Euler-Maruyama (h = 5e-3 times a drift of order |m_3 - m_1| ~ 5: 0.03); on the
    covariance 5 standard errors sqrt((C_ii C_jj + C_ij^2) / n) plus the same bias relative to |C|."""
    interpolant = MultimarginalInterpolant(4, gamma="brownian", gamma_scale=0.5, endpoint_eps=1e-3)
    oracle = gaussian_marginals(interpolant)
    count = 20_000
    x = oracle.sample(1, count, torch.Generator().manual_seed(8))
    sampler = SDESampler(steps=200, method="euler-maruyama", diffusion="increasing-decreasing", last_step="mean")
    moved, _ = translate(
        OracleSimplexFields(oracle), sampler, x, [EdgePath(4, 1, 3)], generator=torch.Generator().manual_seed(9)
    )
    covariance = oracle.covariances[3]
    mean_tolerance = 5 * (covariance.diagonal() / count).sqrt() + 0.03
    assert bool(((moved.mean(0) - oracle.means[3]).abs() < mean_tolerance).all()), moved.mean(0)
    variance = covariance.diagonal()
    covariance_se = ((variance[:, None] * variance[None, :] + covariance**2) / count).sqrt()
    covariance_tolerance = 5 * covariance_se + 0.03 * covariance.abs().max()
    assert bool(((torch.cov(moved.T) - covariance).abs() < covariance_tolerance).all()), torch.cov(moved.T)


def test_bad_alpha_and_shapes_are_refused_with_the_value():
    interpolant = MultimarginalInterpolant(3)
    xs = [torch.zeros(2, 4) for _ in range(3)]
    with pytest.raises(ValueError, match=r"simplex.*\[0\.5, 0\.6, 0\.0\]"):
        interpolant.sample(xs, torch.tensor([[0.5, 0.6, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        interpolant.sample(xs, torch.ones(2, 2) / 2)
    with pytest.raises(ValueError, match="expected 3 marginal samples, got 2"):
        interpolant.sample(xs[:2], torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match="num_marginals must be an integer >= 2"):
        MultimarginalInterpolant(1)
    with pytest.raises(ValueError, match="unknown simplex gamma 'browian'"):
        MultimarginalInterpolant(3, gamma="browian")
    with pytest.raises(ValueError, match="edge needs two different vertices"):
        EdgePath(3, 1, 1)
