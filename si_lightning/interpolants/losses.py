"""Per-sample regression losses of docs/math.md section 2, with the antithetic estimator of [U] 6.1."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from si_lightning.checks import lookup
from si_lightning.interpolants.interpolant import Interpolant
from si_lightning.interpolants.predictions import PREDICTIONS, Prediction

Network = Callable[[Tensor, Tensor], Tensor]  # (x_t (batch, ...), t (batch,)) -> prediction


def get_prediction(prediction: str | Prediction) -> Prediction:
    """A Prediction instance from its name (``PREDICTIONS``) or as given."""
    return prediction if isinstance(prediction, Prediction) else lookup(PREDICTIONS, prediction, "prediction")()


def interpolant_loss(
    interpolant: Interpolant,
    prediction: str | Prediction,
    network: Network,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    z: Tensor | None = None,
    antithetic: bool = False,
    check_time: bool = True,
    modulation: Tensor | None = None,
) -> Tensor:
    """Per-sample loss (batch,) of ``network`` for ``prediction`` at x_t drawn from (x0, x1, t, z).

    With ``antithetic`` the loss is averaged over x_t^+ = I + gamma z and x_t^- = I - gamma z
    (for a one-sided interpolant, x0 and -x0), which keeps the variance of the score and
    velocity losses bounded as gamma -> 0. Callers weight or bin the per-sample values by t.
    ``check_time=False`` skips the host-syncing check of t (for t drawn by a TimeSampler). ``modulation``
    is a residual bridge's per-pixel noise modulation m (``Interpolant.sample``).
    """
    prediction = get_prediction(prediction)
    sample = interpolant.sample(x0, x1, t, z, check_time=check_time, modulation=modulation)
    loss = prediction.loss(network(sample.x_t, t), sample)
    if antithetic:
        twin = interpolant.antithetic(sample)
        loss = 0.5 * (loss + prediction.loss(network(twin.x_t, t), twin))
    return loss
