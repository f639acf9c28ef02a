"""``estimate``: Delta F = F_b - F_a of two Boltzmann densities by one of ``METHODS`` (docs/math.md section 10).

rho_a ~ exp(-U_a) sits at t = 0 (the interpolant's base end) and rho_b ~ exp(-U_b) at t = 1 (its data
end). The transport methods carry samples along the ODE of ``fields`` (``transport="ode"``: works from the
log-Jacobian, ``works.py``) or along the SDE of its velocity and score (``transport="sde"``: works from the
discrete Girsanov term, ``girsanov.py``):

- ``escorted-jarzynski``: Delta F = -log mean exp(-W_F) over x_a; with x_b also the backward estimate
  log mean exp(-W_R) (``backward``). Bounds: upper = mean W_F, and lower = -mean W_R with x_b.
- ``controlled-crooks``: Bennett's acceptance ratio on (W_F, W_R), both directions; same bounds.

and the baselines need no transport (W_F = U_b(x_a) - U_a(x_a), W_R = U_a(x_b) - U_b(x_b)):

- ``fep``: Zwanzig's free-energy perturbation -log mean exp(-W_F); upper = mean W_F.
- ``bar``: Bennett's acceptance ratio on those works; bounds as for controlled-crooks.
- ``ti``: thermodynamic integration. With fields that carry a learned energy interpolant
  (``energy_correction``: ``EnergyInterpolantFields`` of a model with an ``EnergyInterpolantBackbone``), on
  that U_t with samples of the interpolant itself (``si_lightning.free_energy.learned``); otherwise on
  U_t = (1 - t) U_a + t U_b with MALA chains at Gauss-Legendre nodes (``si_lightning.free_energy.thermodynamic``).
  No bounds.

``energy_evaluations`` counts configurations whose energies were computed (U_a and U_b of one x count
two); ``nfe`` counts field evaluations per sample (one ``velocity_and_score`` call counts one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from si_lightning.checks import lookup, positive_float, positive_int
from si_lightning.free_energy.averages import BAR_SOLVERS, Estimate, backward_estimate, forward_estimate
from si_lightning.free_energy.energies import CountedEnergy, Energy
from si_lightning.free_energy.girsanov import sde_works
from si_lightning.free_energy.learned import learned_thermodynamic_integration
from si_lightning.free_energy.thermodynamic import thermodynamic_integration
from si_lightning.free_energy.works import transport_works
from si_lightning.sampling.diffusion import DIFFUSIONS, Diffusion
from si_lightning.sampling.fields import Fields
from si_lightning.sampling.ode import ODESampler
from si_lightning.sampling.seeds import GeneratorArgument


@dataclass(frozen=True)
class FreeEnergyResult:
    """Delta F (kT) with its standard error and, where defined, Jensen bounds lower <= Delta F <= upper.

    forward_works (n_a,) / reverse_works (n_b,) are kept where the method computed them; forward and
    backward are the one-directional exponential averages.
    """

    method: str
    delta_f: float
    stderr: float
    lower: float | None = None
    upper: float | None = None
    energy_evaluations: int = 0
    nfe: int = 0
    forward: Estimate | None = None
    backward: Estimate | None = None
    forward_works: Tensor | None = field(default=None, repr=False)
    reverse_works: Tensor | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Inputs:
    fields: Fields | None
    energy_a: CountedEnergy
    energy_b: CountedEnergy
    x_a: Tensor
    x_b: Tensor | None
    solver: ODESampler
    transport_kind: str
    diffusion: Diffusion
    divergence: str
    probes: int
    generator: GeneratorArgument
    bar_solver: Callable[[Tensor, Tensor], Estimate]
    nodes: int
    mcmc_steps: int
    step_size: float

    def evaluations(self) -> int:
        return self.energy_a.evaluations + self.energy_b.evaluations

    def require_fields(self, method: str) -> Fields:
        if self.fields is None:
            raise ValueError(f"method {method!r} transports samples: give fields (a velocity), got None")
        return self.fields

    def require_x_b(self, method: str) -> Tensor:
        if self.x_b is None:
            raise ValueError(f"method {method!r} uses both directions: give x_b (samples of rho_b), got None")
        return self.x_b

    def transport(self, method: str, reverse: bool) -> tuple[Tensor, int]:
        fields = self.require_fields(method)
        if reverse:
            x, energy_from, energy_to = self.require_x_b(method), self.energy_b, self.energy_a
        else:
            x, energy_from, energy_to = self.x_a, self.energy_a, self.energy_b
        if self.transport_kind == "sde":
            result = sde_works(
                fields, energy_from, energy_to, x, reverse, self.solver.steps, self.diffusion, self.generator,
                self.solver.interval,
            )  # fmt: skip
        else:
            result = transport_works(
                fields, energy_from, energy_to, x, reverse, self.solver, self.divergence, self.probes, "rademacher",
                self.generator,
            )  # fmt: skip
        return result.works, result.nfe


def _mean(works: Tensor) -> float:
    return float(works.double().mean())


def _escorted_jarzynski(inputs: _Inputs) -> FreeEnergyResult:
    method = "escorted-jarzynski"
    forward_works, nfe = inputs.transport(method, reverse=False)
    forward = forward_estimate(forward_works)
    reverse_works, backward, lower = None, None, None
    if inputs.x_b is not None:
        reverse_works, reverse_nfe = inputs.transport(method, reverse=True)
        backward, lower, nfe = backward_estimate(reverse_works), -_mean(reverse_works), max(nfe, reverse_nfe)
    return FreeEnergyResult(
        method, forward.delta_f, forward.stderr, lower, _mean(forward_works), inputs.evaluations(), nfe,
        forward, backward, forward_works, reverse_works,
    )  # fmt: skip


def _controlled_crooks(inputs: _Inputs) -> FreeEnergyResult:
    method = "controlled-crooks"
    inputs.require_x_b(method)
    forward_works, nfe = inputs.transport(method, reverse=False)
    reverse_works, reverse_nfe = inputs.transport(method, reverse=True)
    combined = inputs.bar_solver(forward_works, reverse_works)
    return FreeEnergyResult(
        method, combined.delta_f, combined.stderr, -_mean(reverse_works), _mean(forward_works), inputs.evaluations(),
        max(nfe, reverse_nfe), forward_estimate(forward_works), backward_estimate(reverse_works), forward_works,
        reverse_works,
    )  # fmt: skip


def _perturbation_works(inputs: _Inputs, reverse: bool) -> Tensor:
    with torch.no_grad():
        if reverse:
            return inputs.energy_a(inputs.x_b) - inputs.energy_b(inputs.x_b)
        return inputs.energy_b(inputs.x_a) - inputs.energy_a(inputs.x_a)


def _free_energy_perturbation(inputs: _Inputs) -> FreeEnergyResult:
    forward_works = _perturbation_works(inputs, reverse=False)
    forward = forward_estimate(forward_works)
    return FreeEnergyResult(
        "fep", forward.delta_f, forward.stderr, None, _mean(forward_works), inputs.evaluations(), 0, forward,
        None, forward_works,
    )  # fmt: skip


def _bennett_acceptance_ratio(inputs: _Inputs) -> FreeEnergyResult:
    inputs.require_x_b("bar")
    forward_works = _perturbation_works(inputs, reverse=False)
    reverse_works = _perturbation_works(inputs, reverse=True)
    combined = inputs.bar_solver(forward_works, reverse_works)
    return FreeEnergyResult(
        "bar", combined.delta_f, combined.stderr, -_mean(reverse_works), _mean(forward_works), inputs.evaluations(),
        0, forward_estimate(forward_works), backward_estimate(reverse_works), forward_works, reverse_works,
    )  # fmt: skip


def _thermodynamic_integration(inputs: _Inputs) -> FreeEnergyResult:
    generator = inputs.generator if isinstance(inputs.generator, torch.Generator) or inputs.generator is None else None
    correction = getattr(inputs.fields, "energy_correction", None)
    if correction is not None:  # the learned energy interpolant: the interpolant's own samples at each node
        interpolant = inputs.fields.interpolant
        result = learned_thermodynamic_integration(
            correction, interpolant, inputs.energy_a, inputs.energy_b, inputs.x_a, inputs.require_x_b("ti"),
            inputs.nodes, generator,
        )  # fmt: skip
        return FreeEnergyResult("ti", result.delta_f, result.stderr, None, None, inputs.evaluations(), 0)
    result = thermodynamic_integration(
        inputs.energy_a, inputs.energy_b, inputs.x_a, inputs.x_b, inputs.nodes, inputs.mcmc_steps, inputs.step_size,
        generator,
    )  # fmt: skip
    return FreeEnergyResult("ti", result.delta_f, result.stderr, None, None, inputs.evaluations(), 0)


METHODS: dict[str, Callable[[_Inputs], FreeEnergyResult]] = {
    "escorted-jarzynski": _escorted_jarzynski,
    "controlled-crooks": _controlled_crooks,
    "fep": _free_energy_perturbation,
    "bar": _bennett_acceptance_ratio,
    "ti": _thermodynamic_integration,
}


TRANSPORTS = ("ode", "sde")


def _samples(name: str, x: object, dims: int | None) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (n, d) with n >= 2, got {shape}")
    if dims is not None and x.shape[1] != dims:
        raise ValueError(f"{name} must have d = {dims} columns like x_a, got shape {tuple(x.shape)}")
    return x


def estimate(
    fields: Fields | None,
    energy_a: Energy,
    energy_b: Energy,
    x_a: Tensor,
    x_b: Tensor | None = None,
    method: str = "controlled-crooks",
    steps: int = 50,
    generator: GeneratorArgument = None,
    ode_method: str = "rk4",
    divergence: str = "exact",
    probes: int = 1,
    bar_solver: str = "own",
    nodes: int = 8,
    mcmc_steps: int = 10,
    step_size: float = 0.01,
    interval: tuple[float, float] | None = None,
    transport: str = "ode",
    diffusion: str | Diffusion = "constant",
    diffusion_scale: float = 0.5,
) -> FreeEnergyResult:
    """Delta F = F_b - F_a = -log(Z_b / Z_a) in kT, by ``method`` (module docstring).

    Args:
        fields: the transport (its velocity; also its score for ``transport="sde"``); None for fep and bar,
            and for ti on the linear energy interpolant (fields with ``energy_correction`` switch ti to theirs).
        energy_a, energy_b: U_a, U_b in kT, (n, d) -> (n,) (differentiable for ti).
        x_a: samples of rho_a (n_a, d); x_b: samples of rho_b (n_b, d), or None.
        method: one of ``METHODS``.
        steps: steps of the fixed-step ODE solver ``ode_method`` (rk4: 4 velocity evaluations a step), or
            Euler-Maruyama steps of the SDE (steps + 1 evaluations of velocity and score a path).
        generator: the Hutchinson probes' or the SDE's randomness (and ti's, if a single generator).
        divergence, probes: ``exact`` or ``hutchinson`` log-Jacobian along the ODE.
        bar_solver: ``own`` (``averages.bennett``) or ``pymbar``.
        nodes, mcmc_steps, step_size: ti's Gauss-Legendre nodes, MALA steps per node and MALA step size
            (on the learned energy interpolant: nodes only, min(n_a, n_b) interpolant samples a node).
        interval: (t_start, t_end) of the transport; None takes the fields' valid interval (their score
            interval for the SDE).
        transport: ``ode`` (probability-flow ODE, log-Jacobian works) or ``sde`` (dX = [b +- eps s] dt +
            sqrt(2 eps) dW, Girsanov works; ``girsanov.py``).
        diffusion, diffusion_scale: eps(t) of the SDE, a name of ``DIFFUSIONS`` times the scale, or a
            ``Diffusion``; it must be > 0 on the grid.
    """
    run = lookup(METHODS, method, "free-energy method")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; expected one of: {', '.join(TRANSPORTS)}")
    if not isinstance(diffusion, Diffusion):
        diffusion = lookup(DIFFUSIONS, diffusion, "diffusion")(positive_float("diffusion_scale", diffusion_scale))
    x_a = _samples("x_a", x_a, None)
    x_b = None if x_b is None else _samples("x_b", x_b, x_a.shape[1])
    inputs = _Inputs(
        fields, CountedEnergy(energy_a, "energy_a"), CountedEnergy(energy_b, "energy_b"), x_a, x_b,
        ODESampler(method=ode_method, steps=steps, interval=interval), transport, diffusion, divergence,
        positive_int("probes", probes), generator, lookup(BAR_SOLVERS, bar_solver, "BAR solver"),
        positive_int("nodes", nodes), positive_int("mcmc_steps", mcmc_steps), positive_float("step_size", step_size),
    )  # fmt: skip
    return run(inputs)
