"""Restoration couplings for diffusion bridges: x0 = A(x1), the degraded image itself (docs/math.md section 11).

Each degradation A maps clean images (batch, C, H, W) in [-1, 1] to degraded ones and says which pixels it
provably left untouched (x0 = x1 there), from what is known at sampling time: the degraded image and the
degradation's own settings and random draws (a seed fixes them, as it fixes an in-painting mask):

- ``Denoising``: A(x1) = x1 + s zeta_A; every pixel is touched (no pixel is kept);
- ``Blur``: a Gaussian filter of width ``blur`` pixels (edges replicated); a pixel whose blurred value is
  the data's floor -1 is untouched (below);
- ``Rain``: bright synthetic streaks, straight strokes at a common slant drawn from the degradation's seed,
  A(x1) = min(x1 + intensity, 1) on a streak, x1 elsewhere; the pixels off every streak are untouched.

**Why the floor rule is exact.** A blurred pixel is a positive average of clean pixels, x0(p) = sum_q w_q x1(q),
sum_q w_q = 1, w_p > 0, and clean values are >= -1, so x0(p) + 1 >= w_p (x1(p) + 1): x0(p) = -1 forces x1(p) = -1.
The rule reads x0(p) <= -1 + 1e-4 (rounding) and then sets x0(p) = -1; x1(p) + 1 <= 1e-4 / w_p is then below
the data's quantisation step (1/8 for the digits), so x1(p) = -1 = x0(p) to the bit.

The base is x0 = A(x1) + sigma zeta: ``sigma = 0`` (the bridges' setting) makes x0 the degraded image and
sets ``cond.keep`` to the untouched pixels (the residual x1 - x0 is zero there: a residual-modulated
bridge puts no noise there and never moves them); ``sigma > 0`` (the plain coupling) noises every pixel, so no
pixel is kept. ``cond.channels`` = A(x1) is given to the network either way.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from si_lightning.checks import is_finite_number, is_integer, is_number
from si_lightning.condition import Condition
from si_lightning.couplings.base import Batch, Coupling, image_shape, noise

DATA_FLOOR = -1.0  # the smallest pixel value of images in [-1, 1]
FLOOR_TOLERANCE = 1e-4  # rounding allowance of the floor rule (module docstring)


def _non_negative(name: str, value: float) -> float:
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"{name} = {value!r}: expected a finite number >= 0")
    return float(value)


def _positive(name: str, value: float) -> float:
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"{name} = {value!r}: expected a finite number > 0")
    return float(value)


def floor_untouched(degraded: Tensor) -> tuple[Tensor, Tensor]:
    """(degraded with floor pixels set to -1 exactly, untouched (batch, 1, H, W) in {0, 1}) by the floor rule.

    A pixel is untouched when it is at the floor in every channel (module docstring).
    """
    at_floor = degraded <= DATA_FLOOR + FLOOR_TOLERANCE
    snapped = torch.where(at_floor, torch.full_like(degraded, DATA_FLOOR), degraded)
    return snapped, at_floor.all(dim=1, keepdim=True).to(degraded.dtype)


class Degradation(Coupling):
    """x0 = A(x1) + sigma zeta; cond.channels = A(x1); cond.keep = the untouched pixels when sigma = 0.

    Subclasses implement ``degrade(x1, generator) -> (A(x1), untouched or None)``, drawing any randomness of
    A from ``generator`` (so a seed fixes it); the base noise zeta comes from the noise generator.

    Args:
        sigma: the base noise sigma >= 0 on top of the degraded image (0 for the bridges).
    """

    def __init__(self, sigma: float = 0.0) -> None:
        self.sigma = _non_negative("sigma", sigma)

    def cond_channels(self, data_channels: int) -> int:
        return data_channels

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        image_shape(data_shape, type(self).__name__)

    @abstractmethod
    def degrade(self, x1: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """(A(x1) (batch, C, H, W), untouched (batch, 1, H, W) in {0, 1} with A(x1) = x1 there, or None)."""

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        degraded, untouched = self.degrade(x1, generator)
        if self.sigma == 0:
            return Batch(degraded, x1, Condition(channels=degraded, keep=untouched))
        x0 = degraded + self.sigma * noise(x1, noise_generator or generator)
        return Batch(x0, x1, Condition(channels=degraded))

    def degraded(self, batch: Batch) -> Tensor:
        """A(x1), without the base noise."""
        return batch.cond.channels


class Denoising(Degradation):
    """A(x1) = x1 + s zeta_A, zeta_A ~ N(0, I) from the degradation's generator; no pixel is untouched.

    Args:
        noise_std: s > 0, the standard deviation of the noise to remove.
        sigma: the base noise (see ``Degradation``).
    """

    def __init__(self, noise_std: float = 0.2, sigma: float = 0.0) -> None:
        super().__init__(sigma)
        self.noise_std = _positive("noise_std", noise_std)

    def degrade(self, x1: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        return x1 + self.noise_std * noise(x1, generator), None


def gaussian_kernel(width: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-D Gaussian of standard deviation ``width`` pixels on 2 ceil(2 width) + 1 taps."""
    radius = max(1, math.ceil(2 * width))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / width) ** 2)
    return (weights / weights.sum()).to(device=device, dtype=dtype)


def gaussian_filter(images: Tensor, width: float) -> Tensor:
    """Separable Gaussian filter of (batch, C, H, W) images, edges replicated (every weight positive)."""
    kernel = gaussian_kernel(width, images.dtype, images.device)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, rows, groups=channels), columns, groups=channels)


class Blur(Degradation):
    """A(x1) = G_w * x1, a Gaussian filter of standard deviation w pixels; untouched pixels by the floor rule.

    Args:
        blur: w > 0, in pixels.
        sigma: the base noise (see ``Degradation``).
    """

    def __init__(self, blur: float = 0.8, sigma: float = 0.0) -> None:
        super().__init__(sigma)
        self.blur = _positive("blur", blur)

    def degrade(self, x1: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        return floor_untouched(gaussian_filter(x1, self.blur))


class Rain(Degradation):
    """Synthetic rain: ``streaks`` straight bright strokes per image at a common slant, drawn from the generator.

    Each streak starts at a uniform point, runs downwards at the angle ``slant`` (radians from the vertical,
    each streak turned by a uniform +- 0.1 more) for ``length`` x the image side, ``width`` x the side wide
    (pixels whose centre lies within width / 2 of the segment). On a streak A(x1) = min(x1 + intensity, 1);
    off every streak A(x1) = x1 (untouched).

    Args:
        streaks: strokes per image (>= 1).
        length: a streak's length as a fraction of the image side, in (0, 2].
        width: a streak's width as a fraction of the image side, in (0, 1].
        slant: the common angle from the vertical, in [-pi / 2, pi / 2].
        intensity: how much a streak brightens a pixel, in (0, 2].
        sigma: the base noise (see ``Degradation``).
    """

    def __init__(
        self,
        streaks: int = 3,
        length: float = 0.6,
        width: float = 0.12,
        slant: float = 0.35,
        intensity: float = 1.0,
        sigma: float = 0.0,
    ) -> None:
        super().__init__(sigma)
        if not is_integer(streaks) or streaks < 1:
            raise ValueError(f"streaks = {streaks!r}: expected an integer >= 1")
        checks = {"length": (length, 2.0), "width": (width, 1.0), "intensity": (intensity, 2.0)}
        for name, (value, upper) in checks.items():
            if not is_number(value) or not 0 < value <= upper:
                raise ValueError(f"{name} = {value!r}: expected a number in (0, {upper:g}]")
        if not is_number(slant) or not abs(slant) <= math.pi / 2:
            raise ValueError(f"slant = {slant!r}: expected an angle in [-pi/2, pi/2]")
        self.streaks, self.length, self.width = streaks, float(length), float(width)
        self.slant, self.intensity = float(slant), float(intensity)

    def streak_mask(self, batch: int, height: int, width: int, generator, device) -> Tensor:
        """(batch, 1, H, W) in {0, 1}: 1 on a streak."""
        side = float(max(height, width))
        draws = torch.rand(batch, self.streaks, 3, generator=generator, device=device, dtype=torch.float64)
        start = draws[..., :2] * torch.tensor([height, width], device=device, dtype=torch.float64)
        angle = self.slant + 0.2 * (draws[..., 2] - 0.5)
        direction = torch.stack([angle.cos(), angle.sin()], dim=-1) * self.length * side  # (row, column)
        rows = torch.arange(height, device=device, dtype=torch.float64) + 0.5
        columns = torch.arange(width, device=device, dtype=torch.float64) + 0.5
        grid = torch.stack(torch.meshgrid(rows, columns, indexing="ij"), dim=-1).view(1, 1, height * width, 2)
        offset = grid - start[:, :, None, :]
        along = ((offset * direction[:, :, None, :]).sum(-1) / direction.pow(2).sum(-1)[..., None]).clamp(0, 1)
        distance = (offset - along[..., None] * direction[:, :, None, :]).norm(dim=-1)
        on_streak = (distance <= 0.5 * self.width * side).any(dim=1)
        return on_streak.view(batch, 1, height, width)

    def degrade(self, x1: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        batch, _, height, width = x1.shape
        streak = self.streak_mask(batch, height, width, generator, x1.device)
        degraded = torch.where(streak, (x1 + self.intensity).clamp(max=1.0), x1)
        return degraded, (~streak).to(x1.dtype)
