"""Interpolant conversion: the converted oracle of A is the oracle of B, for every Gaussian-base pair."""

from __future__ import annotations

import pytest
import torch

from si_lightning.interpolants import Interpolant
from si_lightning.sampling import ODESampler, OracleFields, convert_interpolant
from si_lightning.sampling.snr import log_snr, time_of_log_snr
from tests.conftest import INTERPOLANT_CASES, case_id, make_interpolant, mixture_2d

GAUSSIAN_CASES = [case for case in INTERPOLANT_CASES if case[0] not in ("mirror", "encoder-decoder")]
TOLERANCE = 1e-10  # float64 bisection reaches one ulp of s; everything else is closed form


def points(generator: torch.Generator, count: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Interior times and points near the data, in float64."""
    t = torch.linspace(0.02, 0.98, count, dtype=torch.float64)
    x = 2.5 * torch.randn(count, 2, generator=generator, dtype=torch.float64)
    return t, x


@pytest.mark.parametrize("source_case", GAUSSIAN_CASES, ids=case_id)
def test_converted_oracle_equals_the_target_oracle(source_case, generator):
    source = mixture_2d(make_interpolant(source_case))
    t, x = points(generator)
    # The source reaches log-SNRs in [log_snr(0), log_snr(1)] only (vp starts at -5.03, not -inf): a
    # target time outside that range has no source time to convert from, so it is not compared.
    reach = log_snr(source.interpolant, torch.tensor([0.0, 1.0], dtype=torch.float64))
    for target_case in GAUSSIAN_CASES:
        target = OracleFields(mixture_2d(make_interpolant(target_case)))
        converted = convert_interpolant(source, target.interpolant)
        wanted = log_snr(target.interpolant, t.reshape(-1))
        inside = (wanted > reach[0]) & (wanted < reach[1])
        assert int(inside.sum()) >= len(t) // 2, f"{case_id(source_case)} -> {case_id(target_case)}"
        velocity, score = converted.velocity_and_score(t, x)
        for name, got in (("velocity", velocity), ("score", score), ("data", converted.data(t, x))):
            want = getattr(target, name)(t, x)
            error = float(((got - want).abs() / (1 + want.abs()))[inside].max())
            assert error < TOLERANCE, f"{name} {case_id(source_case)} -> {case_id(target_case)}: {error:.3g}"


@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=case_id)
def test_log_snr_inverse_is_exact(case):
    interpolant = make_interpolant(case)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    recovered = time_of_log_snr(interpolant, log_snr(interpolant, t))
    assert float((recovered - t).abs().max()) < 1e-13


def test_sampling_through_the_conversion_reaches_the_native_samples(generator):
    """dopri5 on trig fields converted to the linear path carries each x0 to the x1 of the native linear fields,
    to the solver tolerance: the sampler sees the same field through the conversion."""
    native = mixture_2d(Interpolant("linear", "zero"))
    converted = convert_interpolant(mixture_2d(Interpolant("trig", "zero")), Interpolant("linear", "zero"))
    x0 = native.sample_base(400, generator)
    sampler = ODESampler("dopri5", atol=1e-8, rtol=1e-8, interval=(1e-3, 1 - 1e-3))
    assert torch.allclose(sampler.sample(converted, x0).x, sampler.sample(native, x0).x, atol=1e-5)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (Interpolant("linear", "zero", gaussian_base=False), Interpolant("trig", "zero"), "data-dependent coupling"),
        (Interpolant("linear", "zero"), Interpolant("linear", "brownian", gaussian_base=False), "gaussian_base=False"),
        (Interpolant("linear", "zero"), Interpolant("mirror", "brownian"), "no base"),
        (Interpolant("linear", "zero"), Interpolant("encoder-decoder"), "not strictly increasing"),
    ],
)
def test_conversion_refuses_other_bases_and_non_monotone_snr(source, target, message):
    with pytest.raises(ValueError, match=message) as error:
        convert_interpolant(OracleFields(mixture_2d(source)), target)
    assert "\n" not in str(error.value)


def test_conversion_needs_fields_with_an_interpolant():
    class Bare:
        def velocity(self, t, x, cond=None):
            return x

    with pytest.raises(ValueError, match="carries no interpolant"):
        convert_interpolant(Bare(), Interpolant("linear", "zero"))
