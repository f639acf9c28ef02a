"""What every sampler drives: the velocity b(t, x) and, where needed, the score s(t, x).

``Fields`` is the protocol (docs/math.md sections 2-4): ``velocity(t, x, cond=None)`` and
``score(t, x, cond=None)`` with t of shape (batch,) and x of shape (batch, ...), returning tensors
shaped like x. A sampler never knows whether it drives a trained network (``NetworkFields``, which
converts any prediction into b and s through docs/math.md section 3) or a closed form (``OracleFields``
around the Gaussian-mixture oracle).

NFE counts network evaluations: ``velocity_and_score`` is one evaluation (one network output gives
both), and ``evaluations_per_call`` is 2 for classifier-free guidance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from si_lightning.analytic import GaussianMixture
from si_lightning.condition import Condition
from si_lightning.interpolants import PREDICTIONS, Interpolant, Prediction, conversions, get_prediction

Network = Callable[[Tensor, Tensor, Condition | None], Tensor]  # (x (batch, ...), t (batch,), cond) -> output


class Fields(ABC):
    """Base class of the sampler protocol.

    Subclasses implement ``velocity`` and, if ``has_score``, ``score``; ``data`` (E[x1 | x_t], for the
    Tweedie last step) if ``has_data``. ``valid_interval(need_score)`` is where the fields are finite.
    """

    interpolant: Interpolant | None = None
    has_score: bool = True
    has_data: bool = False
    missing_score_reason: str = ""  # why there is no score, for the error a score-needing sampler raises
    evaluations_per_call: int = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @abstractmethod
    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        """b(t, x): (batch, ...)."""

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        """s(t, x) = grad log rho_t(x): (batch, ...)."""
        raise TypeError(
            f"{type(self).__name__} does not implement score(t, x, cond); fields without a score set has_score = False"
        )

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        """eta_1(t, x) = E[x1 | x_t = x]: (batch, ...)."""
        raise ValueError(f"{self!r} has no data prediction E[x1 | x_t] (needed by the Tweedie last step)")

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        """(b, s) at one evaluation's cost."""
        return self.velocity(t, x, cond), self.score(t, x, cond)

    def velocity_plus_score(self, t: Tensor, x: Tensor, cond: Condition | None, weight: Tensor) -> Tensor:
        """b + weight s, the drift of an SDE (weight: 0-d or (batch,)), at one evaluation's cost.

        Fields that can form the sum more cheaply than b and s apart override this (the oracle does).
        """
        velocity, score = self.velocity_and_score(t, x, cond)
        return velocity + _per_sample(weight, x) * score

    def frozen_pixels(self, cond: Condition | None) -> Tensor | None:
        """Pixels (batch, 1, ...) in {0, 1} that a sampler must never move (1), or None: all may move.

        Fields whose b and s are zero there (``KeptPixelFields``) say so, so that an SDE adds no noise there.
        """
        return None

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        """[t_min, t_max] on which the fields (and the score, if ``need_score``) are finite."""
        return self.interpolant.valid_interval(need_score) if self.interpolant is not None else (0.0, 1.0)

    @staticmethod
    def from_network(network: Network, interpolant: Interpolant, prediction: str | Prediction) -> NetworkFields:
        """Fields of a trained ``network(x, t, cond)`` that predicts ``prediction`` for ``interpolant``."""
        return NetworkFields(network, interpolant, prediction)

    @staticmethod
    def from_oracle(oracle: GaussianMixture) -> OracleFields:
        """The exact fields of the Gaussian-mixture oracle."""
        return OracleFields(oracle)


def _per_sample(weight: Tensor, x: Tensor) -> Tensor:
    """A 0-d weight as is; a (batch,) weight shaped to broadcast against x (batch, ...)."""
    weight = torch.as_tensor(weight, dtype=x.dtype, device=x.device)
    return weight.reshape(-1, *([1] * (x.dim() - 1))) if weight.dim() == 1 else weight


def _conversion_error(function: Callable[[], Tensor]) -> str | None:
    """The ValueError message a conversion raises on a dummy input, or None if it is defined."""
    try:
        function()
    except ValueError as error:
        return str(error)
    return None


class NetworkFields(Fields):
    """b and s of a network trained for ``prediction`` (``PREDICTIONS``), through the conversions.

    Which fields exist is asked of the conversions themselves (on a dummy input), so the reason a
    score-needing sampler is refused is theirs: e.g. a velocity model on a data-dependent base has no
    score. A prediction with ``needs_score_interval`` (b through s, singular where beta = 0 or
    alpha_bar = 0) can only be sampled on the interpolant's score interval, even by an ODE.
    """

    def __init__(self, network: Network, interpolant: Interpolant, prediction: str | Prediction = "velocity") -> None:
        self.network = network
        self.interpolant = interpolant
        self.prediction = get_prediction(prediction)
        t, x = torch.full((1,), 0.5), torch.zeros(1, 1)
        output = torch.zeros(1, self.prediction.outputs)
        velocity_error = _conversion_error(lambda: self.prediction.velocity(interpolant, t, x, output))
        if velocity_error is not None:
            raise ValueError(f"prediction {self._name!r} gives no velocity for {interpolant!r}: {velocity_error}")
        score_error = _conversion_error(lambda: self.prediction.score(interpolant, t, x, output))
        self.has_score = score_error is None
        self.missing_score_reason = score_error or ""
        data_error = score_error or _conversion_error(lambda: conversions.data_from_score(interpolant, t, x, x))
        self.has_data = data_error is None

    @property
    def _name(self) -> str:
        return next((name for name, kind in PREDICTIONS.items() if kind is type(self.prediction)), "custom")

    def __repr__(self) -> str:
        return f"NetworkFields(prediction={self._name!r}, interpolant={self.interpolant!r})"

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.prediction.velocity(self.interpolant, t, x, self.network(x, t, cond))

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        self._require_score()
        return self.prediction.score(self.interpolant, t, x, self.network(x, t, cond))

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        self._require_score()
        output = self.network(x, t, cond)
        return (
            self.prediction.velocity(self.interpolant, t, x, output),
            self.prediction.score(self.interpolant, t, x, output),
        )

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return conversions.data_from_score(self.interpolant, t, x, self.score(t, x, cond))

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        return self.interpolant.valid_interval(need_score or self.prediction.needs_score_interval)

    def _require_score(self) -> None:
        if not self.has_score:
            raise ValueError(f"{self!r} has no score: {self.missing_score_reason}")


class OracleFields(Fields):
    """The exact b, s and E[x1 | x_t] of a ``GaussianMixture`` (x of shape (batch, d))."""

    has_data = True

    def __init__(self, oracle: GaussianMixture) -> None:
        self.oracle = oracle
        self.interpolant = oracle.interpolant

    def __repr__(self) -> str:
        return f"OracleFields(d={self.oracle.dim}, interpolant={self.interpolant!r})"

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.oracle.velocity(t, x)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.oracle.score(t, x)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        return self.oracle.velocity_and_score(t, x)

    def velocity_plus_score(self, t: Tensor, x: Tensor, cond: Condition | None, weight: Tensor) -> Tensor:
        return self.oracle.velocity_plus_score(t, x, weight)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.oracle.data(t, x)


class ProtocolFields(Fields):
    """Any object with ``velocity`` (and optionally ``score``/``data``) methods, used as Fields."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.interpolant = getattr(source, "interpolant", None)
        self.has_score = callable(getattr(source, "score", None))
        self.missing_score_reason = "" if self.has_score else f"{type(source).__name__} has no score method"
        self.has_data = callable(getattr(source, "data", None))

    def __repr__(self) -> str:
        return f"ProtocolFields({type(self.source).__name__})"

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.source.velocity(t, x, cond)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.source.score(t, x, cond)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        return self.source.data(t, x, cond)


def as_fields(fields: object) -> Fields:
    """A Fields as given, the oracle's exact fields, or a duck-typed object with a ``velocity`` method."""
    if isinstance(fields, Fields):
        return fields
    if isinstance(fields, GaussianMixture):
        return OracleFields(fields)
    if callable(getattr(fields, "velocity", None)):
        return ProtocolFields(fields)
    raise ValueError(
        "expected Fields (velocity(t, x, cond) and score(t, x, cond)) or a GaussianMixture, "
        f"got {type(fields).__name__}"
    )


class FieldsWrapper(Fields):
    """Fields around inner ``fields``: forwards what a subclass does not change.

    The capability attributes (``interpolant``, ``has_score``, ``has_data``, ``missing_score_reason``,
    ``evaluations_per_call``) are read from the inner fields once, at construction, and a subclass
    overrides the ones it changes. ``velocity``, ``score``, ``data``, ``velocity_and_score`` and
    ``valid_interval`` forward unchanged. ``velocity_plus_score`` is deliberately not forwarded: the
    inherited one builds b + w s from this wrapper's own ``velocity_and_score``, so a wrapper that
    changes b or s changes the SDE drift too; a wrapper that changes neither may forward it (as
    ``CountedFields`` does, keeping the oracle's cheaper sum).
    """

    def __init__(self, fields: Fields) -> None:
        self.fields = fields
        self.interpolant = fields.interpolant
        self.has_score, self.has_data = fields.has_score, fields.has_data
        self.missing_score_reason = fields.missing_score_reason
        self.evaluations_per_call = fields.evaluations_per_call

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fields!r})"

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        """The inner b(t, x): t (batch,), x (batch, ...) -> (batch, ...)."""
        return self.fields.velocity(t, x, cond)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        """The inner s(t, x): t (batch,), x (batch, ...) -> (batch, ...)."""
        return self.fields.score(t, x, cond)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        """The inner E[x1 | x_t = x]: t (batch,), x (batch, ...) -> (batch, ...)."""
        return self.fields.data(t, x, cond)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        """The inner (b, s), each (batch, ...), at one evaluation's cost."""
        return self.fields.velocity_and_score(t, x, cond)

    def valid_interval(self, need_score: bool = False) -> tuple[float, float]:
        return self.fields.valid_interval(need_score)

    def frozen_pixels(self, cond: Condition | None) -> Tensor | None:
        return self.fields.frozen_pixels(cond)


class CountedFields(FieldsWrapper):
    """Forwards to ``fields`` and counts network evaluations in ``nfe`` (a Python int: no host sync)."""

    def __init__(self, fields: Fields) -> None:
        super().__init__(fields)
        self.nfe = 0

    def __repr__(self) -> str:
        return repr(self.fields)

    def _count(self) -> None:
        self.nfe += self.evaluations_per_call

    def velocity(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        self._count()
        return super().velocity(t, x, cond)

    def score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        self._count()
        return super().score(t, x, cond)

    def data(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> Tensor:
        self._count()
        return super().data(t, x, cond)

    def velocity_and_score(self, t: Tensor, x: Tensor, cond: Condition | None = None) -> tuple[Tensor, Tensor]:
        self._count()
        return super().velocity_and_score(t, x, cond)

    def velocity_plus_score(self, t: Tensor, x: Tensor, cond: Condition | None, weight: Tensor) -> Tensor:
        self._count()
        return self.fields.velocity_plus_score(t, x, cond, weight)
