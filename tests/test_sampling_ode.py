"""The probability-flow ODE sampler against the oracle: distribution, flow map, order, encoding, NFE, errors."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant
from si_lightning.sampling import GRIDS, Fields, NetworkFields, ODESampler
from tests.conftest import mixture_2d
from tests.test_sampling_mmd import SAMPLES, gaussian_mmd, mixture, mixture_threshold

DIM = 3


class CountingNetwork:
    """A "network" predicting the oracle's velocity, counting its calls."""

    def __init__(self, oracle: GaussianMixture) -> None:
        self.oracle, self.calls = oracle, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        self.calls += 1
        return self.oracle.velocity(t, x)


def gaussian_target(interpolant: Interpolant) -> GaussianMixture:
    """One Gaussian N(mu, S) in 3-D with an anisotropic, rotated covariance."""
    generator = torch.Generator().manual_seed(3)
    factor = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64)
    covariance = factor @ factor.T / DIM + 0.3 * torch.eye(DIM, dtype=torch.float64)
    mean = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    return GaussianMixture(torch.ones(1, dtype=torch.float64), mean, covariance[None], interpolant)


def gaussian_flow_map(oracle: GaussianMixture, x: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """docs/math.md section 7 with one component: X_end = m(end) + C(end)^{1/2} C(start)^{-1/2} (x - m(start)).

    C(t) = alpha^2 I + beta^2 S + gamma^2 I shares the eigenvectors U of S, so the matrix square roots
    are diagonal in that basis: the ODE moves each eigen-coordinate of x - m(t) by sqrt(c(t)).
    """
    eigenvalues, eigenvectors = oracle.eigenvalues[0], oracle.eigenvectors[0]

    def moments(t: float) -> tuple[torch.Tensor, torch.Tensor]:
        c = oracle.interpolant.coefficients(torch.tensor([t], dtype=torch.float64))
        return c.beta * oracle.means[0], c.beta**2 * eigenvalues + c.alpha**2 + c.gamma**2

    mean_start, variance_start = moments(start)
    mean_end, variance_end = moments(end)
    rotated = (x - mean_start) @ eigenvectors
    return mean_end + (rotated * (variance_end / variance_start).sqrt()) @ eigenvectors.T


# ------------------------------------------------------------------------------------ distribution
@pytest.mark.parametrize(
    "sampler",
    [ODESampler("dopri5", atol=1e-6, rtol=1e-6), ODESampler("heun", steps=100)],
    ids=["dopri5", "heun-100"],
)
def test_ode_from_the_base_reproduces_the_mixture(sampler):
    oracle = mixture()
    generator = torch.Generator().manual_seed(11)
    samples = sampler.sample(oracle, oracle.sample_base(SAMPLES, generator)).x
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, generator)) < mixture_threshold()


def test_mmd_rejects_a_coarse_euler_sampler():
    """The same test fails for Euler with 10 steps: it can tell a biased sampler from a good one."""
    oracle = mixture()
    generator = torch.Generator().manual_seed(11)
    samples = ODESampler("euler", steps=10).sample(oracle, oracle.sample_base(SAMPLES, generator)).x
    assert gaussian_mmd(samples, oracle.sample_data(SAMPLES, generator)) > mixture_threshold()


# --------------------------------------------------------------------------------------- flow map
FLOW_CASES = [("linear", "brownian", 1.0), ("trig", "zero", 1.0), ("sbdm", "zero", 1.0), ("vp-trig", "quadratic", 1.0)]


@pytest.mark.parametrize("case", FLOW_CASES, ids=lambda case: "-".join(map(str, case)))
def test_flow_map_equals_the_gaussian_closed_form(case):
    oracle = gaussian_target(Interpolant(*case))
    start, end = oracle.interpolant.valid_interval()
    x0 = oracle.sample_base(64, torch.Generator().manual_seed(0))
    result = ODESampler("dopri5", atol=1e-8, rtol=1e-8).sample(oracle, x0)
    assert result.interval == (start, end)
    torch.testing.assert_close(result.x, gaussian_flow_map(oracle, x0, start, end), atol=1e-6, rtol=0)


def test_encoding_is_the_inverse_closed_form_on_a_partial_interval():
    oracle = gaussian_target(Interpolant("linear", "quadratic", 1.0))
    x = oracle.sample_data(64, torch.Generator().manual_seed(1))
    result = ODESampler("dopri5", atol=1e-8, rtol=1e-8, interval=(0.2, 0.9)).encode(oracle, x)
    assert result.interval == (0.9, 0.2)
    torch.testing.assert_close(result.x, gaussian_flow_map(oracle, x, 0.9, 0.2), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("method", "order", "steps"), [("euler", 1, 20), ("heun", 2, 20), ("rk4", 4, 10)])
@pytest.mark.parametrize("case", [("linear", "quadratic", 1.0), ("trig", "zero", 1.0)], ids=["linear", "trig"])
# Path grids (logsnr, edm) clip an infinite log-SNR at sigma_max, so their first step does not shrink with N.
@pytest.mark.parametrize("grid", sorted(name for name, grid in GRIDS.items() if not grid.needs_interpolant))
def test_fixed_step_methods_converge_at_their_order(method, order, steps, case, grid):
    oracle = gaussian_target(Interpolant(*case))
    x0 = oracle.sample_base(64, torch.Generator().manual_seed(0))
    exact = gaussian_flow_map(oracle, x0, 0.0, 1.0)
    errors = [
        (ODESampler(method, steps=count, grid=grid).sample(oracle, x0).x - exact).abs().max().item()
        for count in (steps, 2 * steps)
    ]
    assert abs(math.log2(errors[0] / errors[1]) - order) < 0.5


def test_cosine_grid_is_denser_at_both_ends():
    grid = GRIDS["cosine"]()(0.1, 0.9, 20)
    uniform = GRIDS["uniform"]()(0.1, 0.9, 20)
    steps = grid.diff()
    assert grid[0] == 0.1 and grid[-1] == 0.9 and bool((steps > 0).all())
    assert steps[0] < uniform.diff()[0] / 5 and steps[-1] < uniform.diff()[-1] / 5
    torch.testing.assert_close(GRIDS["cosine"]()(0.9, 0.1, 20), grid.flip(0), atol=1e-15, rtol=0)


# ------------------------------------------------------------------------------------ encoding
def test_encode_then_decode_returns_the_data():
    oracle = mixture()
    x1 = oracle.sample_data(256, torch.Generator().manual_seed(5))
    sampler = ODESampler("dopri5", atol=1e-8, rtol=1e-8)
    encoded = sampler.encode(oracle, x1)
    assert encoded.interval == oracle.interpolant.valid_interval()[::-1]
    decoded = sampler.sample(oracle, encoded.x).x
    assert (decoded - x1).abs().max().item() < 1e-4


# ------------------------------------------------------------------------------------------- NFE
@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        (ODESampler("euler", steps=7), 7),
        (ODESampler("heun", steps=7), 13),  # 2 steps - 1: the last step is Euler
        (ODESampler("rk4", steps=7), 28),
        (ODESampler("dopri5", atol=1e-6, rtol=1e-6), None),
        (ODESampler("bosh3", atol=1e-5, rtol=1e-5), None),
    ],
    ids=["euler", "heun", "rk4", "dopri5", "bosh3"],
)
@pytest.mark.parametrize("direction", ["sample", "encode"])
def test_reported_nfe_equals_network_calls(sampler, expected, direction):
    oracle = mixture_2d(Interpolant("linear", "quadratic", 1.0))
    network = CountingNetwork(oracle)
    fields = NetworkFields(network, oracle.interpolant, "velocity")
    x = oracle.sample_base(32, torch.Generator().manual_seed(0))
    result = getattr(sampler, direction)(fields, x)
    assert result.nfe == network.calls
    if expected is not None:
        assert result.nfe == expected


# ----------------------------------------------------------------------------------- data shapes
def test_image_shaped_data_is_sampled_like_flat_data():
    """(batch, C, H, W) with W == batch: t must broadcast per sample, never along the width."""
    oracle = gaussian_target(Interpolant("linear", "quadratic", 1.0))
    batch = 3  # data (3, 1, 1, 3): width equals batch

    def network(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        return oracle.velocity(t, x.flatten(1)).reshape(x.shape)

    fields = Fields.from_network(network, oracle.interpolant, "velocity")
    x0 = oracle.sample_base(batch, torch.Generator().manual_seed(0))
    for sampler in (ODESampler("heun", steps=10), ODESampler("dopri5")):
        images = sampler.sample(fields, x0.reshape(batch, 1, 1, DIM)).x
        torch.testing.assert_close(images.flatten(1), sampler.sample(oracle, x0).x, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------ bad input
class ExplodingFields(Fields):
    """A field that returns NaN for t > 0.5."""

    def velocity(self, t, x, cond=None):
        return torch.where((t > 0.5)[:, None], torch.full_like(x, float("nan")), -x)

    def score(self, t, x, cond=None):
        return -x


def test_fixed_step_nan_raises_naming_the_step():
    # Step 50 evaluates at t = 0.5 (finite); step 51 evaluates at t = 0.51 and goes bad.
    with pytest.raises(
        FloatingPointError, match=r"ExplodingFields\(\): a NaN or inf appeared at step 51 of 100 \(t = 0.51 -> 0.52\)"
    ):
        ODESampler("euler", steps=100).sample(ExplodingFields(), torch.ones(4, 2))


def test_adaptive_nan_raises_naming_the_time():
    with pytest.raises(FloatingPointError, match=r"NaN or inf at t = 0\.5"):
        ODESampler("dopri5").sample(ExplodingFields(), torch.ones(4, 2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"steps": -3}, "steps must be an int >= 1, got -3"),
        ({"atol": 0.0}, "atol must be a finite number > 0, got 0.0"),
        ({"rtol": -1e-5}, "rtol must be a finite number > 0, got -1e-05"),
        ({"method": "dopri6"}, "unknown ODE method 'dopri6'; expected one of: .*dopri5"),
        ({"grid": "log"}, "unknown time grid 'log'"),
        ({"interval": (0.5, 0.2)}, r"t_start < t_end, got \(0.5, 0.2\)"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        ODESampler(**arguments)


def test_interval_outside_the_valid_interval_is_named():
    oracle = mixture()  # Brownian gamma: valid on [0.001, 0.999]
    with pytest.raises(ValueError, match=r"t_start = 0.0 .* outside the valid interval \[0.001, 0.999\]"):
        ODESampler("heun", steps=4, interval=(0.0, 0.5)).sample(oracle, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"t_end = 1.0 .* outside"):
        ODESampler("heun", steps=4, interval=(0.5, 1.0)).encode(oracle, torch.zeros(2, 2, dtype=torch.float64))


def test_data_without_a_batch_dimension_is_refused():
    with pytest.raises(ValueError, match=r"x0 must be a floating-point tensor of shape \(batch, ...\).*got \(2,\)"):
        ODESampler("euler", steps=2).sample(mixture(), torch.zeros(2))
