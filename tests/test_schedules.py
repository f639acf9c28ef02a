"""Endpoint conditions and closed-form derivatives of every schedule and gamma (docs/math.md section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.interpolants import GAMMAS, SCHEDULES, Interpolant
from tests.conftest import INTERPOLANT_CASES, case_id, make_interpolant


def test_cases_cover_every_schedule_and_gamma():
    assert {case[0] for case in INTERPOLANT_CASES} == set(SCHEDULES)
    assert {case[1] for case in INTERPOLANT_CASES} == set(GAMMAS)


@pytest.mark.parametrize("case", INTERPOLANT_CASES, ids=case_id)
def test_endpoint_conditions(case):
    interpolant = make_interpolant(case)
    c = interpolant.coefficients(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(c.gamma, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    if interpolant.schedule.base_absent:  # mirror: x0 = x1, alpha = 0, beta = 1
        torch.testing.assert_close(c.alpha, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(c.beta, torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)
    else:
        # beta(0) is 0 except for vp, whose base keeps a share of the data (its declared signal_at_base).
        signal = interpolant.schedule.signal_at_base
        expected_alpha = torch.tensor([math.sqrt(1 - signal**2), 0.0], dtype=torch.float64)
        torch.testing.assert_close(c.alpha, expected_alpha, atol=1e-12, rtol=0)
        torch.testing.assert_close(c.beta, torch.tensor([signal, 1.0], dtype=torch.float64), atol=1e-12, rtol=0)
    # And the interpolant itself: x_0 = x0 and x_1 = x1 whatever z is.
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    x0 = x1.clone() if interpolant.schedule.base_absent else torch.randn(2, 3, generator=generator, dtype=torch.float64)
    z = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    t_min, t_max = interpolant.valid_interval()
    if t_min == 0.0 and t_max == 1.0 and interpolant.schedule.signal_at_base == 0.0:
        sample = interpolant.sample(x0, x1, torch.tensor([0.0, 1.0], dtype=torch.float64), z)
        torch.testing.assert_close(sample.x_t[0], x0[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(sample.x_t[1], x1[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", INTERPOLANT_CASES, ids=case_id)
def test_derivatives_match_autograd(case):
    interpolant = make_interpolant(case)
    # Interior grid, avoiding the encoder-decoder's switch point t = 1/2.
    t = torch.linspace(0.01, 0.99, 97, dtype=torch.float64)
    t = t[(t - 0.5).abs() > 1e-6].requires_grad_()
    c = interpolant.coefficients(t)
    for value, closed_form in ((c.alpha, c.alpha_dot), (c.beta, c.beta_dot), (c.gamma, c.gamma_dot)):
        if not value.requires_grad:  # constant coefficient: derivative must be exactly zero
            torch.testing.assert_close(closed_form, torch.zeros_like(closed_form), atol=0, rtol=0)
            continue
        (derivative,) = torch.autograd.grad(value.sum(), t, retain_graph=True)
        torch.testing.assert_close(closed_form.detach(), derivative, atol=1e-10, rtol=1e-10)


def test_vp_trig_preserves_variance():
    interpolant = Interpolant("vp-trig", "brownian", 2.0)
    c = interpolant.coefficients(torch.linspace(0, 1, 11, dtype=torch.float64))
    torch.testing.assert_close(c.alpha**2 + c.beta**2 + c.gamma**2, torch.ones(11, dtype=torch.float64))


def test_linear_is_not_the_printed_typo():
    # [U] eq 4.9 prints alpha = t; docs/math.md section 0: alpha = 1 - t multiplies the base.
    c = Interpolant("linear").coefficients(torch.tensor([0.25]))
    assert float(c.alpha) == pytest.approx(0.75) and float(c.beta) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (("linear", "zero", 1.0), (0.0, 1.0)),
        (("linear", "brownian", 1.0), (1e-3, 1 - 1e-3)),
        (("sbdm", "zero", 1.0), (0.0, 1 - 1e-3)),
        (("one-sided-linear", "zero", 1.0), (0.0, 1.0)),
    ],
)
def test_valid_interval_excludes_singular_ends(case, expected):
    assert make_interpolant(case).valid_interval() == pytest.approx(expected)
    t_min, t_max = make_interpolant(case).valid_interval(need_score=True)
    assert t_max < 1.0 and t_min > 0.0
    c = make_interpolant(case).coefficients(torch.tensor([t_min, t_max], dtype=torch.float64))
    for value in (c.alpha_dot, c.beta_dot, c.gamma_dot):
        assert bool(torch.isfinite(value).all())


# --------------------------------------------------------------------------- continuity at the ends
def _every_pair(scale: float = 0.5) -> list[tuple[str, str, float]]:
    """Every (schedule, gamma) pair the Interpolant accepts, at one gamma scale (0.5: vp-trig needs gamma < 1)."""
    pairs = []
    for schedule in SCHEDULES:
        for gamma in GAMMAS:
            try:
                Interpolant(schedule, gamma, scale)
            except ValueError:
                continue
            pairs.append((schedule, gamma, scale))
    return pairs


EVERY_PAIR = _every_pair()
OFFSET = 1e-6
# The derivatives that are genuinely infinite at an end (docs/math.md section 1), by gamma family or schedule:
# gamma' = a (1 - 2t) / (2 sqrt(a t (1 - t))) of the Brownian gamma at both ends, alpha' = -t / sqrt(1 - t^2) of
# sbdm and alpha' = -beta^2 r / alpha of vp at t = 1, and gamma' = gamma gamma' / gamma of the GOUB gamma at both
# ends. Each grows like |t - end|^(-1/2).
SINGULAR_GAMMA = {("brownian", "gamma_dot"): (0.0, 1.0), ("goub", "gamma_dot"): (0.0, 1.0)}
SINGULAR_SCHEDULE = {("sbdm", "alpha_dot"): (1.0,), ("vp", "alpha_dot"): (1.0,)}
QUANTITIES = {
    "alpha": lambda c: c.alpha,
    "beta": lambda c: c.beta,
    "gamma": lambda c: c.gamma,
    "alpha_dot": lambda c: c.alpha_dot,
    "beta_dot": lambda c: c.beta_dot,
    "gamma_dot": lambda c: c.gamma_dot,
    "noise_variance_rate(gaussian_base=True)": lambda c: c.noise_variance_rate(True),
    "noise_variance_rate(gaussian_base=False)": lambda c: c.noise_variance_rate(False),
}


def test_every_schedule_has_a_pair():
    assert {pair[0] for pair in EVERY_PAIR} == set(SCHEDULES)
    assert {pair[1] for pair in EVERY_PAIR} == set(GAMMAS)


@pytest.mark.parametrize("end", [0.0, 1.0])
@pytest.mark.parametrize("case", EVERY_PAIR, ids=case_id)
def test_coefficients_at_the_ends_equal_their_limits_from_inside(case, end):
    """The value at t = 0 (or 1) equals the limit from inside, read at 1e-6 and 2e-6 from the end in float64.

    Tolerance: the offset times a bound on |f'| near the end, estimated from inside as 4 |f(2 d) - f(d)| / d
    (d = 1e-6; the factor 4 also covers a derivative growing like u^(-1/2) towards the end, as the Brownian
    gamma' does: then |f(0) - f(d)| = 2 d |f'(d)| and |f(2 d) - f(d)| / d = 0.83 |f'(d)|), plus 1e-12 for rounding.
    """
    interpolant = make_interpolant(case)
    inward = 1.0 if end == 0.0 else -1.0
    times = torch.tensor([end, end + inward * OFFSET, end + 2 * inward * OFFSET], dtype=torch.float64)
    c = interpolant.coefficients(times)
    for name, quantity in QUANTITIES.items():
        value, near, far = quantity(c).tolist()
        if end in SINGULAR_GAMMA.get((case[1], name), ()) or end in SINGULAR_SCHEDULE.get((case[0], name), ()):
            # Genuinely singular: infinite at the end, growing like |t - end|^(-1/2) towards it.
            assert math.isinf(value) and abs(near) > 100, (name, value, near)
            assert near / far == pytest.approx(math.sqrt(2), rel=1e-3), (name, near, far)
            continue
        tolerance = 4 * abs(far - near) + 1e-12  # offset * (4 |f(2d) - f(d)| / d)
        assert math.isfinite(value) and abs(value - near) <= tolerance, (name, end, value, near, tolerance)


def test_noise_variance_rate_at_the_base_end_of_the_brownian_gamma():
    """Linear schedule, Brownian gamma with a = 0.5: alpha alpha' + gamma gamma' = -1 + a / 2 = -0.75 at t = 0."""
    c = Interpolant("linear", "brownian", 0.5).coefficients(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(c.noise_variance_rate(True), torch.tensor([-0.75, -0.25], dtype=torch.float64))
    torch.testing.assert_close(c.noise_variance_rate(False), torch.tensor([0.25, -0.25], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(GAMMAS))
def test_gamma_gamma_dot_is_the_product_inside(name):
    family = GAMMAS[name](0.7)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    gamma, gamma_dot = family(t)
    torch.testing.assert_close(family.gamma_gamma_dot(t), gamma * gamma_dot, atol=1e-14, rtol=1e-12)
