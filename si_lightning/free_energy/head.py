"""The energy-interpolant head: a learned U_t whose gradient is the score (docs/math.md section 10).

    U_t(x) = (1 - t) U_a(x) + t U_b(x) + t (1 - t) N(t, x),     s(t, x) = -grad_x U_t(x),

N a scalar network (the ``correction``). U_0 = U_a and U_1 = U_b hold by construction, and a time-only part
c(t) of N changes neither the score nor the thermodynamic integral: int_0^1 d/dt [t (1 - t) c(t)] dt = 0.
``EnergyInterpolantBackbone`` outputs the drift v and s stacked, for the prediction ``velocity+score``, whose
score loss trains N; ``EnergyInterpolantFields`` hands N to ``estimate`` so that ``ti`` integrates
dF_t/dt = E_t[d_t U_t] along the learned interpolant (``learned.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from si_lightning.condition import Condition
from si_lightning.free_energy.systems import build_system
from si_lightning.nn.mlp import MLP
from si_lightning.sampling.fields import Fields, FieldsWrapper


class SmoothCorrection(nn.Module):
    """N(t, x) = MLP([x, t]) -> (batch,), SiLU activations, t a plain input.

    TI needs d_t N, which no loss constrains: the score loss fits grad_x N at each t separately. Time features
    of high frequency (the sinusoids of ``TimeEmbedding`` reach 1000 rad per unit t) let N wiggle in t between
    the fits, and then d_t N is large and meaningless; with t entering as one smooth input, d_t N follows the
    fits (measured: 8-node TI on the d = 50 Gaussians missed by 98 kT with sinusoidal features).
    """

    def __init__(self, dims: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dims + 1, hidden_size), nn.SiLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_size, hidden_size), nn.SiLU()]
        self.network = nn.Sequential(*layers, nn.Linear(hidden_size, 1))

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.network(torch.cat([x, t[:, None].to(x.dtype)], dim=1)).squeeze(1)


class EnergyInterpolantBackbone(nn.Module):
    """(x (batch, d), t (batch,), cond) -> (batch, 2 d): the drift v and s = -grad_x U_t (module docstring).

    Args:
        data_shape: (d,).
        system: the free-energy system whose U_a, U_b pin the ends (``si_lightning.free_energy.systems``);
            the same as the datamodule's (checked when training starts).
        dims: its dimension (None: the system's default); must equal d.
        hidden_size, num_layers: of both networks (the drift's and the correction's).
        time_embedding: the drift MLP's time features (the correction takes t as a plain input).
        num_classes, cond_channels: 0 (what the command line links from the data; no conditions here).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        system: str = "gaussians",
        dims: int | None = None,
        hidden_size: int = 256,
        num_layers: int = 3,
        time_embedding: str = "sinusoidal",
        num_classes: int = 0,
        cond_channels: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("cond_channels", cond_channels)):
            if value != 0:  # the command line links these from the data; two Boltzmann densities have neither
                raise ValueError(f"{name} = {value!r}: the energy-interpolant head takes no condition, expected 0")
        self.pair = build_system(system, dims)
        self.system = system
        if tuple(data_shape) != (self.pair.dims,):
            expected = f"({self.pair.dims},), the dimension of {system!r}"
            raise ValueError(f"data_shape = {tuple(data_shape)!r} must be {expected}")
        self.data_shape = (self.pair.dims,)
        self.num_classes, self.cond_channels = 0, 0
        self.out_channels = 2 * self.pair.dims
        self.drift = MLP(self.data_shape, hidden_size=hidden_size, num_layers=num_layers, time_embedding=time_embedding)
        self.correction_network = SmoothCorrection(self.pair.dims, hidden_size, num_layers)

    def correction(self, t: Tensor, x: Tensor) -> Tensor:
        """N(t, x): (batch,)."""
        return self.correction_network(t, x)

    def energy(self, t: Tensor, x: Tensor) -> Tensor:
        """U_t(x) = (1 - t) U_a + t U_b + t (1 - t) N: t (batch,), x (batch, d) -> (batch,)."""
        return (1 - t) * self.pair.energy_a(x) + t * self.pair.energy_b(x) + t * (1 - t) * self.correction(t, x)

    def score(self, t: Tensor, x: Tensor) -> Tensor:
        """-grad_x U_t(x): (batch, d), differentiable again when gradients are on (the training loss needs that)."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            inputs = x if x.requires_grad else x.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.energy(t, inputs).sum(), inputs, create_graph=create_graph)
        return -gradient

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        return torch.cat([self.drift(x, t, cond), self.score(t, x)], dim=1)


class EnergyInterpolantFields(FieldsWrapper):
    """``fields`` of a model with an ``EnergyInterpolantBackbone``, carrying its ``energy_correction`` N(t, x)."""

    def __init__(self, fields: Fields, backbone: EnergyInterpolantBackbone) -> None:
        super().__init__(fields)
        self.backbone = backbone

    def energy_correction(self, t: Tensor, x: Tensor) -> Tensor:
        """N(t, x) of U_t = (1 - t) U_a + t U_b + t (1 - t) N: t (batch,), x (batch, d) -> (batch,)."""
        return self.backbone.correction(t, x)
