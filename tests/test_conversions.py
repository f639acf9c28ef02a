"""Conversions between predictions (docs/math.md section 3) against the oracle, in float64."""

from __future__ import annotations

import pytest
import torch

from si_lightning.interpolants import Interpolant, get_prediction, stack_fields
from si_lightning.interpolants import conversions as cv
from tests.conftest import INTERPOLANT_CASES, case_id, make_interpolant, mixture_2d

CONVERTIBLE = [case for case in INTERPOLANT_CASES if make_interpolant(case).conversions_defined]


def setup(case, generator):
    interpolant = make_interpolant(case)
    oracle = mixture_2d(interpolant)
    # beta = 0 on [0, 1/2] for the encoder-decoder: b is then not a function of s there.
    low = 0.55 if case[0] == "encoder-decoder" else 0.05
    t = low + (0.95 - low) * torch.rand(128, generator=generator, dtype=torch.float64)
    x = oracle.sample_data(128, generator) + 0.5 * torch.randn(128, 2, generator=generator, dtype=torch.float64)
    return interpolant, oracle, t, x


def test_convertible_cases_are_the_gaussian_ones():
    names = {case[0] for case in CONVERTIBLE}
    assert {"one-sided-linear", "one-sided-trig", "sbdm", "linear", "mirror"} <= names
    assert ("linear", "zero", 1.0) in CONVERTIBLE  # gamma = 0 with a Gaussian base: x0 is the noise
    assert not Interpolant("linear", "zero", gaussian_base=False).score_defined  # no Gaussian part at all


@pytest.mark.parametrize("case", CONVERTIBLE, ids=case_id)
def test_conversions_reproduce_oracle_fields(case, generator):
    interpolant, oracle, t, x = setup(case, generator)
    b, s, eta, eta1 = oracle.velocity(t, x), oracle.score(t, x), oracle.denoiser(t, x), oracle.data(t, x)
    tolerance = {"atol": 1e-10, "rtol": 1e-10}
    torch.testing.assert_close(cv.velocity_from_score(interpolant, t, x, s), b, **tolerance)
    torch.testing.assert_close(cv.score_from_velocity(interpolant, t, x, b), s, **tolerance)
    torch.testing.assert_close(cv.denoiser_from_score(interpolant, t, x, s), eta, **tolerance)
    torch.testing.assert_close(cv.score_from_denoiser(interpolant, t, x, eta), s, **tolerance)
    torch.testing.assert_close(cv.data_from_score(interpolant, t, x, s), eta1, **tolerance)
    torch.testing.assert_close(cv.score_from_data(interpolant, t, x, eta1), s, **tolerance)
    drift = oracle.interpolant_derivative(t, x)
    torch.testing.assert_close(cv.velocity_from_drift_and_denoiser(interpolant, t, x, drift, eta), b, **tolerance)


@pytest.mark.parametrize("case", CONVERTIBLE, ids=case_id)
def test_round_trip_velocity_score_denoiser_data(case, generator):
    interpolant, oracle, t, x = setup(case, generator)
    b = oracle.velocity(t, x)
    s = cv.score_from_velocity(interpolant, t, x, b)
    eta = cv.denoiser_from_score(interpolant, t, x, s)
    eta1 = cv.data_from_score(interpolant, t, x, cv.score_from_denoiser(interpolant, t, x, eta))
    back = cv.velocity_from_score(interpolant, t, x, cv.score_from_data(interpolant, t, x, eta1))
    torch.testing.assert_close(back, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", CONVERTIBLE, ids=case_id)
def test_every_prediction_gives_oracle_velocity_and_score(case, generator):
    interpolant, oracle, t, x = setup(case, generator)
    outputs = {
        "velocity": oracle.velocity(t, x),
        "score": oracle.score(t, x),
        "denoiser": oracle.denoiser(t, x),
        "data": oracle.data(t, x),
        "velocity+denoiser": stack_fields(oracle.interpolant_derivative(t, x), oracle.denoiser(t, x)),
    }
    for name, output in outputs.items():
        prediction = get_prediction(name)
        torch.testing.assert_close(
            prediction.velocity(interpolant, t, x, output),
            outputs["velocity"],
            atol=1e-10,
            rtol=1e-10,
            msg=lambda m, name=name: f"{name}: {m}",
        )
        torch.testing.assert_close(
            prediction.score(interpolant, t, x, output),
            outputs["score"],
            atol=1e-10,
            rtol=1e-10,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def test_data_dependent_base_refuses_undefined_conversions():
    interpolant = Interpolant("linear", "brownian", gaussian_base=False)
    t, x = torch.full((4,), 0.5), torch.randn(4, 2)
    with pytest.raises(ValueError, match="data-dependent base"):
        cv.velocity_from_score(interpolant, t, x, x)
    with pytest.raises(ValueError, match="data-dependent base"):
        get_prediction("velocity").score(interpolant, t, x, x)
    with pytest.raises(ValueError, match="data-dependent base"):
        get_prediction("denoiser").velocity(interpolant, t, x, x)
    # velocity+denoiser gives both fields for any coupling: b = v + gamma' eta_z, s = -eta_z / gamma.
    both = get_prediction("velocity+denoiser")
    output = stack_fields(torch.ones(4, 2), torch.full((4, 2), 2.0))
    c = interpolant.coefficients(t)
    torch.testing.assert_close(both.velocity(interpolant, t, x, output), 1 + 2 * c.gamma_dot[:, None].expand(4, 2))
    torch.testing.assert_close(both.score(interpolant, t, x, output), -2 / c.gamma[:, None].expand(4, 2))


def test_no_gaussian_part_has_no_score():
    interpolant = Interpolant("linear", "zero", gaussian_base=False)
    with pytest.raises(ValueError, match="no score"):
        cv.score_from_velocity(interpolant, torch.full((2,), 0.5), torch.zeros(2, 2), torch.zeros(2, 2))


def test_broadcast_with_width_equal_to_batch():
    """flow_matching's trap: t (B,) against (B, C, H, W) with W == B must scale per sample, not per column."""
    interpolant = Interpolant("one-sided-linear")
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    x = torch.ones(4, 3, 5, 4, dtype=torch.float64)
    score = cv.score_from_data(interpolant, t, x, torch.zeros_like(x))
    expected = -1 / (1 - t) ** 2  # s = (beta * 0 - x) / alpha^2 per sample
    for i in range(4):
        torch.testing.assert_close(score[i], torch.full((3, 5, 4), float(expected[i]), dtype=torch.float64))
