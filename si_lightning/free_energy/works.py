"""Works of deterministic transports along the probability-flow ODE (docs/math.md section 10).

The interpolant runs from rho_a at t = 0 (the base end) to rho_b at t = 1 (the data end). The flow
X_t of dX/dt = b(t, X) maps X_{t_start} to X_{t_end}; its log-Jacobian is the time integral of the
divergence, log |det dX_{t_end} / dX_{t_start}| = int_{t_start}^{t_end} div b(t, X_t) dt. For a path
from x at time ``start`` to time ``end`` (either direction) the work is

    W = U_to(X_end) - U_from(X_start) - int_start^end div b(t, X_t) dt,

which is the forward work W_F (start = t_start, U_from = U_a, U_to = U_b) or the reverse work W_R
(start = t_end, U_from = U_b, U_to = U_a): the integral from t_end down to t_start is minus the
log-Jacobian of the forward map, i.e. the log-Jacobian of the inverse map. Any invertible map gives
E_a[exp(-W_F)] = Z_b / Z_a exactly (escorted Jarzynski); a perfect transport makes W_F constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from si_lightning.checks import lookup
from si_lightning.free_energy.energies import CountedEnergy
from si_lightning.sampling.checks import batch_time, check_data, resolve_interval
from si_lightning.sampling.divergence import DIVERGENCES, field_and_divergence
from si_lightning.sampling.fields import CountedFields, Fields, as_fields
from si_lightning.sampling.ode import ODESampler
from si_lightning.sampling.seeds import GeneratorArgument, NoiseSource
from si_lightning.sampling.solvers import State


@dataclass(frozen=True)
class TransportWorks:
    """works (batch,) in kT; end: the transported samples X_end (batch, d); nfe: velocity evaluations."""

    works: Tensor
    end: Tensor
    nfe: int
    log_jacobian: Tensor


def transport_works(
    fields: Fields,
    energy_from: CountedEnergy,
    energy_to: CountedEnergy,
    x: Tensor,
    reverse: bool,
    solver: ODESampler,
    divergence: str = "exact",
    probes: int = 1,
    probe: str = "rademacher",
    generator: GeneratorArgument = None,
) -> TransportWorks:
    """The work of each sample of x (batch, d) carried by the ODE forwards (rho_a -> rho_b) or in ``reverse``.

    The divergence is ``exact`` (d backward passes) or ``hutchinson`` (``probes`` probes drawn once
    per path from ``generator``; exp(-W) is then unbiased only in the exact log-Jacobian's limit:
    Jensen's inequality over the probes biases the exponential average).
    """
    x = check_data("x", x)
    counted = CountedFields(as_fields(fields))
    estimator = lookup(DIVERGENCES, divergence, "divergence estimator")(probes, probe)
    start, end = resolve_interval(counted, solver.interval, False, "free-energy transport")
    if reverse:
        start, end = end, start
    batch = x.shape[0]
    drawn = estimator.draw(x, NoiseSource.create(batch, x.device, generator, stream="probe"))

    def function(t: Tensor, state: State) -> State:
        (velocity,), divergence_value = field_and_divergence(
            lambda y: (counted.velocity(batch_time(t, batch), y),), state[0], estimator, drawn
        )
        return velocity, divergence_value

    accumulated = torch.zeros(estimator.count, batch, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        final, accumulated = solver.integrate(
            function, (x, accumulated), start, end, f"free-energy transport with {solver!r}", counted.interpolant
        )
        log_jacobian = accumulated.mean(0)  # int_start^end div b dt, averaged over the probes
        works = energy_to(final) - energy_from(x) - log_jacobian
    return TransportWorks(works, final, counted.nfe, log_jacobian)
