"""Fields: any prediction becomes b and s through the conversions; the oracle; guidance; what is refused."""

from __future__ import annotations

import pytest
import torch

from si_lightning.condition import Condition
from si_lightning.interpolants import Interpolant, stack_fields
from si_lightning.sampling import (
    Fields,
    GuidedFields,
    NetworkFields,
    ODESampler,
    OracleFields,
    SDESampler,
    as_fields,
    log_likelihood,
    sde_log_likelihood,
)
from tests.conftest import mixture_2d


def oracle_outputs(oracle):
    """What a perfectly trained network outputs for each prediction (docs/math.md section 2)."""
    return {
        "velocity": lambda t, x: oracle.velocity(t, x),
        "velocity+denoiser": lambda t, x: stack_fields(oracle.interpolant_derivative(t, x), oracle.denoiser(t, x)),
        "score": lambda t, x: oracle.score(t, x),
        "denoiser": lambda t, x: oracle.denoiser(t, x),
        "data": lambda t, x: oracle.data(t, x),
    }


def network_fields(oracle, prediction: str) -> NetworkFields:
    output = oracle_outputs(oracle)[prediction]
    return Fields.from_network(lambda x, t, cond=None: output(t, x), oracle.interpolant, prediction)


PREDICTION_NAMES = ["velocity", "velocity+denoiser", "score", "denoiser", "data"]


@pytest.mark.parametrize("prediction", PREDICTION_NAMES)
@pytest.mark.parametrize("case", [("linear", "brownian", 1.0), ("one-sided-trig", "zero", 1.0)], ids=["linear", "trig"])
def test_every_prediction_gives_the_oracle_fields(prediction, case):
    oracle = mixture_2d(Interpolant(*case))
    fields = network_fields(oracle, prediction)
    generator = torch.Generator().manual_seed(0)
    t = 0.05 + 0.9 * torch.rand(64, generator=generator, dtype=torch.float64)
    x = 2 * torch.randn(64, 2, generator=generator, dtype=torch.float64)
    velocity, score = fields.velocity_and_score(t, x)
    torch.testing.assert_close(velocity, oracle.velocity(t, x), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(score, oracle.score(t, x), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fields.data(t, x), oracle.data(t, x), atol=1e-10, rtol=1e-10)
    assert fields.has_score and fields.has_data


@pytest.mark.parametrize("prediction", ["denoiser", "score", "data"])
def test_a_model_of_the_denoiser_samples_with_the_ode(prediction):
    """A denoiser model is sampled by the ODE through b(s(eta)) and lands where the velocity model does."""
    oracle = mixture_2d(Interpolant("linear", "brownian", 1.0))
    fields = network_fields(oracle, prediction)
    assert fields.valid_interval() == oracle.interpolant.valid_interval(need_score=True)
    x0 = oracle.sample_base(128, torch.Generator().manual_seed(1))
    sampler = ODESampler("heun", steps=40)
    torch.testing.assert_close(sampler.sample(fields, x0).x, sampler.sample(oracle, x0).x, atol=1e-9, rtol=0)


def test_oracle_is_usable_directly_or_through_the_adapter():
    oracle = mixture_2d(Interpolant("linear", "quadratic", 1.0))
    adapted = as_fields(oracle)
    assert isinstance(adapted, OracleFields) and isinstance(Fields.from_oracle(oracle), OracleFields)
    x0 = oracle.sample_base(16, torch.Generator().manual_seed(2))
    sampler = ODESampler("rk4", steps=10)
    assert torch.equal(sampler.sample(oracle, x0).x, sampler.sample(adapted, x0).x)


def test_a_duck_typed_object_is_accepted_as_fields():
    oracle = mixture_2d(Interpolant("linear", "quadratic", 1.0))

    class VelocityOnly:
        def velocity(self, t, x, cond=None):
            return oracle.velocity(t, x)

    x0 = oracle.sample_base(16, torch.Generator().manual_seed(2))
    sampler = ODESampler("rk4", steps=10)
    assert torch.equal(sampler.sample(VelocityOnly(), x0).x, sampler.sample(oracle, x0).x)
    with pytest.raises(ValueError, match="needs the score, but ProtocolFields\\(VelocityOnly\\) provides none"):
        SDESampler(steps=5, diffusion="constant").sample(VelocityOnly(), x0)
    with pytest.raises(ValueError, match="expected Fields .* got int"):
        as_fields(3)


# ----------------------------------------------------------------------------- refused fields
def test_velocity_model_on_a_data_dependent_base_has_no_score_but_samples_with_the_ode():
    interpolant = Interpolant("linear", "brownian", 1.0, gaussian_base=False)
    fields = NetworkFields(lambda x, t, cond=None: -x, interpolant, "velocity")
    assert not fields.has_score and not fields.has_data
    x = torch.randn(8, 2)
    assert ODESampler("euler", steps=4).sample(fields, x).x.shape == x.shape
    with pytest.raises(
        ValueError, match="SDESampler.* needs the score, but NetworkFields.*velocity.*data-dependent base"
    ):
        SDESampler(steps=4).sample(fields, x)
    with pytest.raises(ValueError, match="has no score"):
        fields.score(torch.full((8,), 0.5), x)


def test_a_score_model_on_a_data_dependent_base_gives_no_velocity():
    interpolant = Interpolant("linear", "brownian", 1.0, gaussian_base=False)
    with pytest.raises(ValueError, match="prediction 'score' gives no velocity .*data-dependent base"):
        NetworkFields(lambda x, t, cond=None: -x, interpolant, "score")


def test_velocity_model_with_no_gaussian_part_has_no_score():
    # Two-sided with gamma = 0 and a data-dependent base: x_t has no Gaussian part to read the score from.
    interpolant = Interpolant("linear", "zero", 1.0, gaussian_base=False)
    fields = NetworkFields(lambda x, t, cond=None: -x, interpolant, "velocity")
    assert not fields.has_score
    with pytest.raises(ValueError, match="needs the score.*no score"):
        sde_log_likelihood(fields, torch.randn(4, 2), lambda x: torch.zeros(4))
    assert log_likelihood(fields, torch.randn(4, 2), lambda x: torch.zeros(4), method="euler", steps=2).nfe == 2


def test_a_denoiser_model_is_refused_outside_the_score_interval():
    oracle = mixture_2d(Interpolant("linear", "quadratic", 1.0))  # b itself is valid on [0, 1]
    fields = network_fields(oracle, "denoiser")
    with pytest.raises(ValueError, match=r"t_start = 0.0 .* outside the valid interval \[0.001, 0.999\]"):
        ODESampler("euler", steps=4, interval=(0.0, 1.0)).sample(fields, torch.zeros(2, 2, dtype=torch.float64))
    result = ODESampler("euler", steps=4, interval=(0.0, 1.0)).sample(oracle, torch.zeros(2, 2, dtype=torch.float64))
    assert result.interval == (0.0, 1.0)


# ------------------------------------------------------------------------------------- guidance
class LabelNetwork:
    """b(t, x | y) = mean_y - x with per-class means; the null label has mean 0. Counts samples seen."""

    def __init__(self) -> None:
        self.means = torch.tensor([[2.0, 0.0], [0.0, -3.0], [0.0, 0.0]], dtype=torch.float64)
        self.calls, self.samples = 0, 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        self.samples += x.shape[0]
        return self.means[cond.labels] - x


def test_guidance_combines_the_branches_and_doubles_the_nfe():
    network = LabelNetwork()
    interpolant = Interpolant("linear", "quadratic", 1.0)
    fields = GuidedFields(NetworkFields(network, interpolant, "velocity"), guidance_scale=3.0, null_label=2)
    labels = torch.tensor([0, 1, 1, 0])
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    conditional, unconditional = network.means[labels] - x, -x
    expected = unconditional + 3.0 * (conditional - unconditional)
    torch.testing.assert_close(fields.velocity(t, x, Condition(labels=labels)), expected)
    network.calls = network.samples = 0
    result = ODESampler("euler", steps=5).sample(fields, x, cond=Condition(labels=labels))
    assert network.calls == 5 and network.samples == 2 * 4 * 5
    assert result.nfe == 10  # two network evaluations per sample and step


def test_guidance_without_labels_is_refused():
    fields = GuidedFields(NetworkFields(LabelNetwork(), Interpolant("linear", "quadratic", 1.0)), 2.0, 2)
    with pytest.raises(ValueError, match="classifier-free guidance needs class labels"):
        fields.velocity(torch.full((2,), 0.5), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="guidance_scale must be a finite number, got nan"):
        GuidedFields(fields, float("nan"), 2)
    with pytest.raises(ValueError, match="null_label must be an int >= 0 .* got -1"):
        GuidedFields(fields, 1.0, -1)


def test_condition_of_the_wrong_batch_size_is_refused():
    fields = NetworkFields(LabelNetwork(), Interpolant("linear", "quadratic", 1.0))
    with pytest.raises(ValueError, match="cond describes 3 samples but the data has batch size 4"):
        ODESampler("euler", steps=2).sample(fields, torch.zeros(4, 2), cond=Condition(labels=torch.zeros(3).long()))
