"""The oracle's joint (b, s): the same values as the separate calls, from one pass over the components."""

from __future__ import annotations

import torch

from si_lightning.sampling import OracleFields
from tests.test_sampling_mmd import mixture


def test_velocity_and_score_equal_the_separate_calls():
    oracle = mixture()
    x = oracle.sample_data(64, torch.Generator().manual_seed(0)) + 0.3
    t = torch.linspace(0.01, 0.99, 64, dtype=x.dtype)
    velocity, score = OracleFields(oracle).velocity_and_score(t, x)
    assert torch.equal(velocity, oracle.velocity(t, x)) and torch.equal(score, oracle.score(t, x))


def test_velocity_plus_score_equals_the_sum_of_the_separate_fields():
    """b + w s from one rotation back equals b + w s from two, to float64 rounding, for 0-d and per-sample w."""
    oracle = mixture()
    x = oracle.sample_data(64, torch.Generator().manual_seed(1)) + 0.3
    t = torch.linspace(0.01, 0.99, 64, dtype=x.dtype)
    fields = OracleFields(oracle)
    velocity, score = oracle.velocity(t, x), oracle.score(t, x)
    scale = float(velocity.abs().max() + score.abs().max())
    for weight in (torch.tensor(0.7, dtype=x.dtype), torch.linspace(-1.0, 2.0, 64, dtype=x.dtype)):
        expected = velocity + (weight[:, None] if weight.dim() else weight) * score
        combined = fields.velocity_plus_score(t, x, None, weight)
        torch.testing.assert_close(combined, expected, rtol=0, atol=1e-12 * scale)
        # The generic path of any other fields (b and s apart) agrees as well.
        generic = super(OracleFields, fields).velocity_plus_score(t, x, None, weight)
        torch.testing.assert_close(generic, expected, rtol=0, atol=1e-12 * scale)
