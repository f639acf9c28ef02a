"""Endpoint conditions and closed-form derivatives of every schedule and gamma (docs/math.md section 1)."""

from __future__ import annotations

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
        torch.testing.assert_close(c.alpha, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(c.beta, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-12, rtol=0)
    # And the interpolant itself: x_0 = x0 and x_1 = x1 whatever z is.
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    x0 = x1.clone() if interpolant.schedule.base_absent else torch.randn(2, 3, generator=generator, dtype=torch.float64)
    z = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    t_min, t_max = interpolant.valid_interval()
    if t_min == 0.0 and t_max == 1.0:
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
