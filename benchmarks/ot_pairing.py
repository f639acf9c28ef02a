"""Minibatch OT versus independent pairing: sample error against ODE steps for a trained 2-D model.

Two small MLPs learn the linear-interpolant velocity (gamma = 0, base N(0, I)) of the eight-Gaussians toy,
one with independent pairs, one with exact minibatch OT pairs (``MinibatchOT("exact")``), with the same
seed, steps and batch. For each model, samples from the same N base points with Euler at k steps are
compared with the model's own flow solved accurately (rk4, 256 steps): the error is the mean distance
|X_k - X_exact| per sample, the discretisation error of the learnt flow. Straighter paths (OT) need
fewer steps for the same error. Also printed: the pairing cost E|x1 - x0|^2 of a batch.

    OMP_NUM_THREADS=1 python benchmarks/ot_pairing.py [--steps 1500] [--batch 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from si_lightning.couplings import IndependentCoupling, MinibatchOT
from si_lightning.data.toys import EightGaussians
from si_lightning.interpolants import Interpolant
from si_lightning.nn import MLP
from si_lightning.sampling import NetworkFields, ODESampler

EULER_STEPS = (1, 2, 4, 8, 16, 32)


def train(coupling, steps: int, batch: int, seed: int = 0) -> tuple[MLP, float]:
    """An MLP velocity model trained with ``coupling``; and the mean pairing cost over training."""
    torch.manual_seed(seed)
    model = MLP(data_shape=(2,), hidden_size=128, num_layers=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    toy, generator = EightGaussians(), torch.Generator().manual_seed(seed)
    costs = []
    for _ in range(steps):
        x1 = toy.sample(batch, generator)[0].float()
        pair = coupling(x1, generator=generator)
        costs.append(float((pair.x1 - pair.x0).pow(2).sum(1).mean()))
        t = torch.rand(batch, generator=generator)
        xt = (1 - t[:, None]) * pair.x0 + t[:, None] * pair.x1
        loss = (model(xt, t) - (pair.x1 - pair.x0)).pow(2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), sum(costs) / len(costs)


def errors(model: MLP, count: int = 4000) -> dict[int, float]:
    fields = NetworkFields(lambda x, t, cond=None: model(x, t), Interpolant("linear"), "velocity")
    x0 = torch.randn(count, 2, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        exact = ODESampler("rk4", steps=256).sample(fields, x0).x
        return {
            k: float((ODESampler("euler", steps=k).sample(fields, x0).x - exact).norm(dim=1).mean())
            for k in EULER_STEPS
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=256)
    arguments = parser.parse_args()
    rows = {}
    for name, coupling in (("independent", IndependentCoupling()), ("minibatch-ot", MinibatchOT("exact"))):
        start = time.perf_counter()
        model, cost = train(coupling, arguments.steps, arguments.batch)
        rows[name] = (errors(model), cost, time.perf_counter() - start)
    print(f"eight Gaussians, MLP 128 x 3, {arguments.steps} Adam steps at batch {arguments.batch}")
    print("pairing      E|x1-x0|^2  train s  " + "  ".join(f"euler-{k:<3d}" for k in EULER_STEPS))
    for name, (values, cost, seconds) in rows.items():
        print(f"{name:12s} {cost:10.3f} {seconds:8.1f}  " + "  ".join(f"{values[k]:9.4f}" for k in EULER_STEPS))


if __name__ == "__main__":
    main()
