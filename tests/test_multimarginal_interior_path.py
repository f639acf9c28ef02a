"""The interior path of the simplex (``InteriorPath``, docs/math.md section 12) against closed forms, in float64.

alpha(s) bends from e_i toward e_k and on to e_j; checked: it stays on the simplex, alpha' is its
derivative, it is the reverse of the path j -> i, and with the exact fields of Gaussian marginals
(``GaussianMarginals``, affine in x) the ODE along it carries rho_i to rho_j through the laws of x(alpha(s)).
"""

from __future__ import annotations

import pytest
import torch

from si_lightning.analytic_multimarginal import GaussianMarginals
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant
from si_lightning.interpolants.simplex_paths import EdgePath, InteriorPath, route
from si_lightning.sampling import ODESampler
from si_lightning.sampling.multimarginal import OracleSimplexFields, PathFields, translate
from tests.test_multimarginal_oracle import gaussian_marginals

KAPPAS = [0.05, 0.5, 0.95]


def whitened_draw(oracle: GaussianMarginals, marginal: int, count: int) -> torch.Tensor:
    """Samples whose empirical mean and covariance are exactly m_i and C_i (centred, whitened, recoloured)."""
    raw = torch.randn(count, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    raw = raw - raw.mean(0)
    raw = raw @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(raw.T))).T
    return oracle.means[marginal] + raw @ torch.linalg.cholesky(oracle.covariances[marginal]).T


@pytest.mark.parametrize("kappa", KAPPAS)
def test_interior_path_stays_on_the_simplex_and_joins_the_vertices(kappa):
    path = InteriorPath(4, start=1, end=3, via=2, kappa=kappa)
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    alpha, _ = path(s)
    MultimarginalInterpolant(4).check_alpha(alpha, s.shape[0], tolerance=1e-12)
    assert float(alpha.min()) >= 0.0
    torch.testing.assert_close(alpha[0], torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64), atol=0, rtol=0)
    torch.testing.assert_close(alpha[-1], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=0, rtol=0)
    # The midpoint: (1 - kappa)/2 on each end, kappa on the via vertex, nothing on the base.
    middle = torch.tensor([0.0, (1 - kappa) / 2, kappa, (1 - kappa) / 2], dtype=torch.float64)
    torch.testing.assert_close(alpha[500], middle, atol=1e-15, rtol=0)
    assert bool((alpha[1:-1, 2] > 0).all())  # strictly inside the face of {1, 2, 3} between the ends


@pytest.mark.parametrize("kappa", KAPPAS)
def test_interior_path_rate_is_the_derivative(kappa):
    """alpha'(s) against the central difference (alpha(s + h) - alpha(s - h)) / 2h, error O(h^2) = 1e-12."""
    path = InteriorPath(5, start=4, end=0, via=2, kappa=kappa)
    s = torch.linspace(1e-3, 1 - 1e-3, 257, dtype=torch.float64)
    h = 1e-6
    _, rate = path(s)
    difference = (path(s + h)[0] - path(s - h)[0]) / (2 * h)
    torch.testing.assert_close(rate, difference, atol=1e-8, rtol=0)
    torch.testing.assert_close(rate.sum(dim=1), torch.zeros_like(s), atol=1e-14, rtol=0)


def test_interior_path_backwards_is_the_reverse_path():
    forward = InteriorPath(4, start=1, end=3, via=2, kappa=0.6)
    backward = InteriorPath(4, start=3, end=1, via=2, kappa=0.6)
    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, rate = forward(s)
    alpha_back, rate_back = backward(1 - s)
    torch.testing.assert_close(alpha, alpha_back, atol=1e-15, rtol=0)
    torch.testing.assert_close(rate, -rate_back, atol=1e-14, rtol=0)


def test_interior_path_refuses_bad_arguments_with_the_value():
    with pytest.raises(ValueError, match=r"kappa must lie in \(0, 1\).*got 1"):
        InteriorPath(4, 1, 3, 2, 1.0)
    with pytest.raises(ValueError, match=r"kappa must lie in \(0, 1\).*got 0"):
        InteriorPath(4, 1, 3, 2, 0.0)
    with pytest.raises(ValueError, match=r"kappa must lie in \(0, 1\).*got nan"):
        InteriorPath(4, 1, 3, 2, float("nan"))
    with pytest.raises(ValueError, match="three different vertices, got start 1, end 3, via 3"):
        InteriorPath(4, 1, 3, 3, 0.5)
    with pytest.raises(ValueError, match="via vertex 4 is not a marginal in 0..3"):
        InteriorPath(4, 1, 3, 4, 0.5)
    with pytest.raises(ValueError, match="needs via and kappa, got via=2, kappa=None"):
        route(4, 1, 3, "through-interior", via=2)
    with pytest.raises(ValueError, match="unknown path 'through-middle'"):
        route(4, 1, 3, "through-middle")
    assert route(4, 1, 3, "through-interior", via=2, kappa=0.5) == [InteriorPath(4, 1, 3, 2, 0.5)]


@pytest.mark.parametrize(("start", "end", "via", "kappa"), [(1, 3, 2, 0.5), (2, 1, 3, 0.9), (0, 2, 1, 0.3)])
def test_ode_transport_along_the_interior_path_reproduces_the_target(start, end, via, kappa):
    """The exact Gaussian fields are affine in x along any path, so the flow map is affine: samples with
    empirical moments exactly (m_i, C_i) arrive with (m_j, C_j) up to the solver's error (dopri5 at 1e-9)
    and the start at s = eps = 1e-7 (an O(eps) change of the covariance); no Monte-Carlo error enters.
    The tolerance 1e-5 is the edge test's. The bend changes the map: the same points arrive elsewhere
    than along the edge (by more than 0.01 on average, a thousand times the tolerance), with the same law."""
    interpolant = MultimarginalInterpolant(4, gamma="brownian", gamma_scale=0.5, endpoint_eps=1e-7)
    oracle = gaussian_marginals(interpolant)
    sampler = ODESampler("dopri5", atol=1e-9, rtol=1e-9)
    fields = OracleSimplexFields(oracle)
    x = whitened_draw(oracle, start, 500)
    legs = route(4, start, end, "through-interior", via=via, kappa=kappa)
    moved, _ = translate(fields, sampler, x, legs)
    torch.testing.assert_close(moved.mean(0), oracle.means[end], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cov(moved.T), oracle.covariances[end], atol=1e-5, rtol=0)
    along_edge, _ = translate(fields, sampler, x, [EdgePath(4, start, end)])
    assert float((moved - along_edge).norm(dim=1).mean()) > 0.01


def test_ode_along_the_interior_path_follows_the_laws_of_x_alpha():
    """Midway (s = 1/2, alpha = (1 - kappa)/2 (e_1 + e_3) + kappa e_2) the ODE's samples have the moments
    of x(alpha) = sum_k alpha_k x_k + gamma z, N(sum_k alpha_k m_k, sum_k alpha_k^2 C_k + gamma^2 I). The
    quadratic gamma has a finite dgamma/ds at the vertices, so classical RK4 from s = 0 (400 steps,
    error O(h^4) ~ 1e-10 relative) is enough; the tolerance 1e-7 covers it."""
    interpolant = MultimarginalInterpolant(4, gamma="quadratic", gamma_scale=2.0)
    oracle = gaussian_marginals(interpolant)
    path = InteriorPath(4, start=1, end=3, via=2, kappa=0.7)
    fields = PathFields(OracleSimplexFields(oracle), path)
    x = whitened_draw(oracle, 1, 500)
    steps, s = 400, 0.0
    h = 0.5 / steps
    for _ in range(steps):
        time = torch.full((x.shape[0],), s, dtype=torch.float64)
        k1 = fields.velocity(time, x)
        k2 = fields.velocity(time + h / 2, x + h / 2 * k1)
        k3 = fields.velocity(time + h / 2, x + h / 2 * k2)
        k4 = fields.velocity(time + h, x + h * k3)
        x, s = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), s + h
    alpha, _ = path(torch.tensor([0.5], dtype=torch.float64))
    mean, covariance = oracle.moments(alpha)
    torch.testing.assert_close(x.mean(0), mean[0], atol=1e-7, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), covariance[0], atol=1e-7, rtol=0)
