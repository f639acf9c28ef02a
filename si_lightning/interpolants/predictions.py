"""What a network predicts, its square loss (docs/math.md section 2), and how it becomes b and s.

A ``Prediction`` turns a network output into the velocity b(t, x) and the score s(t, x) through
the conversions of docs/math.md section 3, so a model that predicts the denoiser still samples with
an ODE. ``velocity+denoiser`` outputs two fields (v, eta_z) stacked along dimension 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from si_lightning.interpolants import conversions
from si_lightning.interpolants.interpolant import Interpolant, InterpolantSample, broadcast_time


def mean_square(error: Tensor) -> Tensor:
    """Per-sample mean of error^2 over every non-batch dimension: (batch, ...) -> (batch,)."""
    return error.pow(2).flatten(1).mean(dim=1)


class Prediction(ABC):
    """A named regression target; ``outputs`` is how many data-shaped fields the network emits."""

    outputs: int = 1
    needs_score_interval: bool = True  # b from this prediction is singular where beta = 0 or alpha_bar = 0

    @abstractmethod
    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        """Per-sample square loss (batch,) of ``output`` at ``sample.x_t``."""

    def velocity(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return conversions.velocity_from_score(interpolant, t, x, self.score(interpolant, t, x, output))

    @abstractmethod
    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor: ...

    def split(self, output: Tensor) -> tuple[Tensor, ...]:
        """Split a network output (batch, outputs * C, ...) into ``outputs`` fields (batch, C, ...)."""
        return tuple(output.chunk(self.outputs, dim=1)) if self.outputs > 1 else (output,)


class Velocity(Prediction):
    """b_hat with L_b = |b_hat - (alpha' x0 + beta' x1 + gamma' z)|^2."""

    needs_score_interval = False

    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        return mean_square(output - sample.velocity)

    def velocity(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return output

    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return conversions.score_from_velocity(interpolant, t, x, output)


class VelocityDenoiser(Prediction):
    """(v_hat, eta_hat) with L_v + L_eta; b = v + gamma' eta_z and s = -eta_z / gamma for any coupling."""

    outputs = 2
    needs_score_interval = False

    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        drift, denoiser = self.split(output)
        return mean_square(drift - sample.interpolant_derivative) + mean_square(denoiser - sample.noise)

    def velocity(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        drift, denoiser = self.split(output)
        return conversions.velocity_from_drift_and_denoiser(interpolant, t, x, drift, denoiser)

    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return conversions.score_from_denoiser(interpolant, t, x, self.split(output)[1])


class VelocityScore(Prediction):
    """(v_hat, s_hat) with L_v + |noise_scale s_hat + noise|^2: ``velocity+denoiser`` with eta_z = -noise_scale s.

    For a network whose score is the gradient of a learned energy (``EnergyInterpolantBackbone``, s = -grad U_t),
    so that the energy, not a free vector field, is what the score loss trains. b = v - gamma' gamma s (two-sided;
    b = v one-sided). Needs a Gaussian part in x_t (gamma > 0, or a Gaussian base one-sided): without one the
    score term of the loss is a constant and would train nothing.
    """

    outputs = 2
    needs_score_interval = False
    needs_latent_noise = True

    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        drift, score = self.split(output)
        noise_term = broadcast_time(sample.noise_scale, score) * score + sample.noise
        return mean_square(drift - sample.interpolant_derivative) + mean_square(noise_term)

    def velocity(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        drift, score = self.split(output)
        denoiser = conversions.denoiser_from_score(interpolant, t, x, score)
        return conversions.velocity_from_drift_and_denoiser(interpolant, t, x, drift, denoiser)

    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        if not interpolant.score_defined:
            conversions.denoiser_from_score(interpolant, t, x, output)  # raises, naming what is missing
        return self.split(output)[1]


class Score(Prediction):
    """s_hat with L_s = |noise_scale s_hat + noise|^2 (gamma two-sided, alpha one-sided)."""

    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        return mean_square(broadcast_time(sample.noise_scale, output) * output + sample.noise)

    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return output


class Denoiser(Prediction):
    """eta_hat = E[noise | x_t] with L_eta = |eta_hat - noise|^2."""

    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        return mean_square(output - sample.noise)

    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return conversions.score_from_denoiser(interpolant, t, x, output)


class Data(Prediction):
    """eta1_hat = E[x1 | x_t] with L_x1 = |eta1_hat - x1|^2."""

    def loss(self, output: Tensor, sample: InterpolantSample) -> Tensor:
        return mean_square(output - sample.x1)

    def score(self, interpolant: Interpolant, t: Tensor, x: Tensor, output: Tensor) -> Tensor:
        return conversions.score_from_data(interpolant, t, x, output)


PREDICTIONS: dict[str, type[Prediction]] = {
    "velocity": Velocity,
    "velocity+denoiser": VelocityDenoiser,
    "velocity+score": VelocityScore,
    "score": Score,
    "denoiser": Denoiser,
    "data": Data,
}


def stack_fields(*fields: Tensor) -> Tensor:
    """The inverse of ``Prediction.split``: concatenate fields along dimension 1."""
    return torch.cat(fields, dim=1)
