"""``--grid fitted-local-error|fitted-lipschitz`` with ``--pilot N``: a time grid fitted on a pilot batch.

The grid is fitted once, before any process starts, on the base noise of seeds 0 .. N-1 (class labels
seed mod K for a class-conditional model), along the path the samples take (after ``--path``). It is
recorded in ``record.json`` (``settings.grid``: criterion, pilot size, the tabulated times and
density) and the same command, started again on the same directory, reads it back instead of fitting
anew, so a resumed run integrates on exactly the grid of its first session.
"""

from __future__ import annotations

from typing import Any

import torch

from si_lightning.errors import ConfigurationError
from si_lightning.sampling import ODESampler
from si_lightning.sampling.design import FittedGrid, fit_lipschitz_grid, fit_local_error_grid
from si_lightning.sampling.fields import Fields

FITTED_GRIDS = ("fitted-local-error", "fitted-lipschitz")
ORDERS = {"euler": 1, "heun": 2, "rk4": 4, "dpm++2m": 2}  # the order the local-error grid equalises


def check_grid_request(grid: str | None, pilot: int, spec_args: dict[str, Any], class_path: str) -> None:
    """A fitted grid needs a fixed-step ODE sampler; refused before the checkpoint is read."""
    if grid is None:
        return
    if grid not in FITTED_GRIDS:
        raise ConfigurationError("--grid", grid, f"one of {', '.join(FITTED_GRIDS)}")
    if not class_path.endswith("ODESampler") or spec_args.get("method", "dopri5") not in ORDERS:
        raise ConfigurationError("--grid", grid, f"a fixed-step ODE --sampler ({', '.join(ORDERS)}), not adaptive/SDE")
    if pilot < 1:
        raise ConfigurationError("--pilot", pilot, "an integer >= 1")


def fit_grid(fields: Fields, grid: str, pilot: int, method: str, x0: torch.Tensor, cond: Any = None) -> dict[str, Any]:
    """The recorded form of the grid fitted on pilot base noise ``x0`` (pilot, ...)."""
    with torch.no_grad():
        if grid == "fitted-lipschitz":
            fitted = fit_lipschitz_grid(fields, x0, cond=cond)
        else:
            fitted = fit_local_error_grid(fields, x0, order=min(ORDERS[method], 3), cond=cond)
    return {
        "name": grid,
        "pilot": pilot,
        "criterion": fitted.criterion,
        "times": [float(value) for value in fitted.times],
        "density": [float(value) for value in fitted.density],
    }


def recorded_grid(grid: str, pilot: int, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """The grid a previous session of this command recorded, if it was fitted by the same request."""
    if not isinstance(previous, dict) or previous.get("name") != grid or previous.get("pilot") != pilot:
        return None
    return previous


def grid_object(recorded: dict[str, Any]) -> FittedGrid:
    """The FittedGrid of a recorded grid (float64, as fitted: JSON keeps every digit of a float)."""
    return FittedGrid(
        torch.tensor(recorded["times"], dtype=torch.float64),
        torch.tensor(recorded["density"], dtype=torch.float64),
        recorded["criterion"],
    )


def build_sampler(init_args: dict[str, Any], recorded: dict[str, Any] | None) -> ODESampler:
    """The ODE sampler of ``init_args`` on the recorded fitted grid."""
    arguments = {key: value for key, value in init_args.items() if key != "grid"}
    return ODESampler(**arguments, grid=grid_object(recorded))
