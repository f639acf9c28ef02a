"""Classifier-free guidance: exact ends (w = 0, w = 1), the guidance interval, one batched call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from si_lightning.condition import Condition
from si_lightning.interpolants import Interpolant
from si_lightning.sampling import GuidedFields, NetworkFields, ODESampler


class LabelledMLP(nn.Module):
    """A small nonlinear network with a class embedding (null label = 3) that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(4, 16)
        self.body = nn.Sequential(nn.Linear(2 + 1 + 16, 32), nn.Tanh(), nn.Linear(32, 2))
        self.calls, self.batches = 0, []

    def forward(self, x, t, cond=None):
        self.calls += 1
        self.batches.append(x.shape[0])
        return self.body(torch.cat([x, t[:, None], self.embedding(cond.labels)], dim=1))


def setup(scale: float, interval=None):
    network = LabelledMLP()
    plain = NetworkFields(network, Interpolant("linear"), "velocity")
    return network, plain, GuidedFields(plain, scale, null_label=3, interval=interval)


def inputs(batch: int = 6, t: float = 0.4):
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])[:batch]
    return torch.full((batch,), t), x, Condition(labels=labels)


def test_scale_zero_is_the_unconditional_field_and_one_the_conditional_field_exactly():
    t, x, cond = inputs()
    with torch.no_grad():
        network, plain, zero = setup(0.0)
        assert torch.equal(zero.velocity(t, x, cond), plain.velocity(t, x, Condition(labels=torch.full((6,), 3))))
        _, plain, one = setup(1.0)
        assert torch.equal(one.velocity(t, x, cond), plain.velocity(t, x, cond))
        _, plain, two = setup(2.0)
        conditional = plain.velocity(t, x, cond)
        unconditional = plain.velocity(t, x, Condition(labels=torch.full((6,), 3)))
        torch.testing.assert_close(two.velocity(t, x, cond), 2 * conditional - unconditional, rtol=1e-5, atol=1e-6)


def test_both_branches_run_as_one_batched_call():
    t, x, cond = inputs()
    network, _, guided = setup(2.5)
    with torch.no_grad():
        result = ODESampler("euler", steps=4).sample(guided, x, cond)
    assert network.batches == [12] * 4  # one call per step on the doubled batch
    assert result.nfe == 8


def test_the_interval_leaves_the_field_untouched_outside_and_guides_inside():
    _, x, cond = inputs()
    with torch.no_grad():
        network, plain, guided = setup(3.0, interval=(0.2, 0.6))
        outside = torch.full((6,), 0.8)
        assert torch.equal(guided.velocity(outside, x, cond), plain.velocity(outside, x, cond))
        inside = torch.full((6,), 0.4)
        conditional = plain.velocity(inside, x, cond)
        unconditional = plain.velocity(inside, x, Condition(labels=torch.full((6,), 3)))
        expected = unconditional + 3.0 * (conditional - unconditional)
        torch.testing.assert_close(guided.velocity(inside, x, cond), expected, rtol=1e-5, atol=1e-6)
        # Samples on both sides of the boundary in one batch: each row follows its own t.
        mixed = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.2, 0.6])
        velocity = guided.velocity(mixed, x, cond)
        for row, inside_row in enumerate([False, True, True, False, True, True]):
            one = slice(row, row + 1)
            reference = guided.velocity(mixed[one], x[one], cond.select(one))
            torch.testing.assert_close(velocity[one], reference, rtol=1e-5, atol=1e-6)
            if not inside_row:
                torch.testing.assert_close(velocity[one], plain.velocity(mixed[one], x[one], cond.select(one)))


@pytest.mark.parametrize("interval", [(0.7, 0.2), (-0.1, 0.5), (0.2,), ("a", 1.0)])
def test_bad_intervals_are_one_line(interval):
    with pytest.raises(ValueError, match=r"guidance_interval = .*: expected \[t_low, t_high\] with 0 <= t_low"):
        GuidedFields(NetworkFields(LabelledMLP(), Interpolant("linear"), "velocity"), 2.0, 3, interval=interval)
