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
