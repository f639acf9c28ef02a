"""The oracle minimises every loss of docs/math.md section 2 (Monte Carlo, paired differences)."""

from __future__ import annotations

import pytest
import torch

from si_lightning.analytic import GaussianMixture
from si_lightning.interpolants import Interpolant, UniformTime, interpolant_loss, stack_fields
from tests.conftest import mixture_2d


def oracle_network(oracle: GaussianMixture, prediction: str):
    """The exact minimiser of the loss for ``prediction``, as a network (x_t, t) -> output."""
    fields = {
        "velocity": oracle.velocity,
        "score": oracle.score,
        "denoiser": oracle.denoiser,
        "data": oracle.data,
        "velocity+denoiser": lambda t, x: stack_fields(oracle.interpolant_derivative(t, x), oracle.denoiser(t, x)),
    }
    return lambda x, t: fields[prediction](t, x)


# Perturbations delta(t, x) added to the oracle's output: constant and state-dependent directions.
PERTURBATIONS = {
    "+e1": lambda t, x: torch.stack([torch.full_like(t, 0.3), torch.zeros_like(t)], -1),
    "-e2": lambda t, x: torch.stack([torch.zeros_like(t), torch.full_like(t, -0.3)], -1),
    "tanh(x)": lambda t, x: 0.3 * torch.tanh(x),
    "t-rotation": lambda t, x: 0.3 * t[:, None] * torch.stack([x[:, 1], -x[:, 0]], -1).tanh(),
}


def perturbed(network, prediction: str, perturbation):
    def output(x, t):
        value = network(x, t)
        delta = perturbation(t, x)
        return value + (delta.repeat(1, 2) if prediction == "velocity+denoiser" else delta)

    return output


@pytest.mark.parametrize(
    ("schedule", "gamma", "prediction"),
    [
        ("linear", "brownian", "velocity"),
        ("linear", "brownian", "velocity+denoiser"),
        ("linear", "brownian", "score"),
        ("linear", "brownian", "denoiser"),
        ("linear", "brownian", "data"),
        ("one-sided-linear", "zero", "velocity"),
        ("one-sided-linear", "zero", "score"),
        ("one-sided-trig", "zero", "denoiser"),
        ("vp-trig", "quadratic", "velocity+denoiser"),
    ],
)
@pytest.mark.parametrize("antithetic", [False, True])
def test_oracle_minimises_loss(schedule, gamma, prediction, antithetic):
    interpolant = Interpolant(schedule, gamma)
    oracle = mixture_2d(interpolant)
    generator = torch.Generator().manual_seed(7)
    count = 40_000
    x0, x1 = oracle.sample_base(count, generator), oracle.sample_data(count, generator)
    z = torch.randn(count, 2, generator=generator, dtype=torch.float64)
    t = UniformTime()(count, interpolant.valid_interval(need_score=True), dtype=torch.float64, generator=generator)
    network = oracle_network(oracle, prediction)
    best = interpolant_loss(interpolant, prediction, network, x0, x1, t, z, antithetic=antithetic)
    for name, perturbation in PERTURBATIONS.items():
        worse = interpolant_loss(
            interpolant, prediction, perturbed(network, prediction, perturbation), x0, x1, t, z, antithetic=antithetic
        )
        difference = worse - best  # paired: same (x0, x1, z, t) for both
        standard_error = difference.std() / count**0.5
        assert difference.mean() > 5 * standard_error, f"{name}: {difference.mean():.3g} vs se {standard_error:.3g}"


def test_antithetic_reduces_velocity_loss_variance_near_the_ends():
    """[U] section 6.1: with gamma' ~ t^(-1/2) near t = 0 the plain estimator's variance blows up.

    What training sees is the model-dependent part of the loss, L(b) - L(0) = |b|^2 - 2 target . b
    (|target|^2 carries no gradient); its variance must collapse under the antithetic pairing.
    """
    interpolant = Interpolant("linear", "brownian", endpoint_eps=1e-4)
    oracle = mixture_2d(interpolant)
    generator = torch.Generator().manual_seed(3)
    count = 20_000
    x0, x1 = oracle.sample_base(count, generator), oracle.sample_data(count, generator)
    z = torch.randn(count, 2, generator=generator, dtype=torch.float64)
    t = torch.full((count,), 1e-3, dtype=torch.float64)
    network = oracle_network(oracle, "velocity")

    def model_part(antithetic: bool) -> torch.Tensor:
        loss = interpolant_loss(interpolant, "velocity", network, x0, x1, t, z, antithetic=antithetic)
        zero = interpolant_loss(interpolant, "velocity", lambda x, t: 0 * x, x0, x1, t, z, antithetic=antithetic)
        return loss - zero

    plain, paired = model_part(False), model_part(True)
    assert paired.var() < 0.05 * plain.var(), (paired.var(), plain.var())


def test_loss_is_per_sample_and_zero_at_exact_target():
    interpolant = Interpolant("linear", "quadratic")
    x0, x1, z = torch.randn(3, 5, 2, 4, 4, dtype=torch.float64).unbind(0)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    sample = interpolant.sample(x0, x1, t, z)
    exact = interpolant_loss(interpolant, "velocity", lambda x, t: sample.velocity, x0, x1, t, z)
    assert exact.shape == (5,)
    assert exact.abs().max().item() == 0.0
