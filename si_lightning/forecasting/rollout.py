"""Autoregressive ensemble roll-outs: each forecast step is one solve of the interpolant's SDE (docs/math.md 9)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from si_lightning.condition import Condition


def rollout(
    interpolant: nn.Module,
    backbone: nn.Module,
    initial: Tensor,
    steps: int,
    sde_steps: int,
    generators: list[torch.Generator],
) -> Tensor:
    """(M, steps + 1, ...) trajectories: member m starts at initial[m] and draws all its noise from generators[m].

    Step n maps the state u_n to u_{n+1} = X_1 of ``interpolant.forecast`` with x0 = u_n, the network
    ``backbone(x, tau, Condition(channels=x0))``. A member's trajectory depends only on its initial state,
    its generator and the weights (not on the other members: no batch statistics in the backbone).

    The state is carried in float64 (the Leray projection then leaves a divergence at the 1e-13 level, where
    float32 storage alone would leave about 1e-6) and the network is evaluated in its own precision.
    """
    if len(generators) != initial.shape[0]:
        raise ValueError(f"one generator per member: {initial.shape[0]} members, {len(generators)} generators")
    precision = next(backbone.parameters()).dtype
    initial = initial.double()
    state, frames = initial, [initial]
    shape = initial.shape[1:]
    for _ in range(steps):
        condition = Condition(channels=state.to(precision))

        def network(x: Tensor, tau: Tensor, condition: Condition = condition) -> Tensor:
            return backbone(x.to(precision), tau.to(precision), condition).to(x.dtype)

        def noise(step: int) -> Tensor:
            draws = [torch.randn(shape, generator=generator, dtype=initial.dtype) for generator in generators]
            return torch.stack(draws).to(initial.device)

        with torch.no_grad():
            state = interpolant.forecast(network, state, sde_steps, noise)
        frames.append(state)
    return torch.stack(frames, dim=1)
