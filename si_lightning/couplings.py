"""Couplings nu(x0, x1): how the base point x0 is paired with a data point x1 (MATH.md section 6).

A coupling turns a batch of data x1 (and its class labels) into ``Batch(x0, x1, cond)``:

    x0 = m(x1) + sigma zeta,   zeta ~ N(0, I)

with m = 0, sigma = 1 for the independent Gaussian base and a data-dependent m for
super-resolution and in-painting ([C]). ``cond`` (a ``Condition``) carries what the network sees
besides (x_t, t): extra input channels and class labels. Each coupling declares

- ``gaussian_base``: x0 ~ N(0, I) independently of x1 (the interpolant's conversions need it);
- ``cond_channels(data_channels)``: how many channels ``cond.channels`` has;
- ``num_classes``: the number of class labels (0 if none; ``num_classes`` itself is the null label),

so data and backbone can be linked by the CLI. Plain PyTorch: no Lightning here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from si_lightning.condition import Condition
from si_lightning.registry import lookup

__all__ = [
    "COUPLINGS",
    "Batch",
    "ClassLabels",
    "Coupling",
    "IndependentCoupling",
    "Inpainting",
    "SuperResolution",
    "get_coupling",
    "mask_velocity",
]

UPSAMPLING_MODES = ("nearest", "bilinear")


class Batch(NamedTuple):
    """One coupled batch: x0 (batch, ...) base points, x1 (batch, ...) data, cond their condition."""

    x0: Tensor
    x1: Tensor
    cond: Condition

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x0.to(device), self.x1.to(device), self.cond.to(device))


def _check_data(x1: Tensor, labels: Tensor | None) -> None:
    if not isinstance(x1, Tensor) or not x1.is_floating_point() or x1.dim() < 2:
        shape = tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__
        raise ValueError(f"x1 must be a floating tensor of shape (batch, ...), got {shape}")
    if labels is not None and (labels.shape != (x1.shape[0],) or labels.is_floating_point()):
        raise ValueError(
            f"labels must be an integer tensor of shape ({x1.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )


def _noise(x1: Tensor, generator: torch.Generator | None) -> Tensor:
    """zeta ~ N(0, I) shaped like x1, drawn from ``generator`` (which must live on x1's device)."""
    return torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)


def _image_shape(data_shape: tuple[int, ...], kind: str) -> tuple[int, int, int]:
    if len(data_shape) != 3:
        raise ValueError(f"{kind} needs image data of shape (channels, height, width), got data shape {data_shape}")
    return data_shape  # type: ignore[return-value]


class Coupling(ABC):
    """Base class: ``coupling(x1, labels=None, generator=None) -> Batch(x0, x1, cond)``.

    Subclasses implement ``couple``; ``__call__`` checks the input first.
    """

    gaussian_base: bool = False
    num_classes: int = 0

    def cond_channels(self, data_channels: int) -> int:
        """Channels of ``cond.channels`` for data with ``data_channels`` channels (0: none)."""
        return 0

    def check_shape(self, data_shape: tuple[int, ...]) -> None:  # noqa: B027 (a hook: no check by default)
        """Raise a ValueError if data of shape (channels, ...) cannot be coupled this way."""

    def __call__(self, x1: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Batch:
        _check_data(x1, labels)
        self.check_shape(tuple(x1.shape[1:]))
        return self.couple(x1, labels, generator)

    @abstractmethod
    def couple(self, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Batch: ...

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({settings})"


class IndependentCoupling(Coupling):
    """x0 ~ N(0, I) independent of x1; no condition (labels are ignored: wrap in ClassLabels to use them)."""

    gaussian_base = True

    def couple(self, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Batch:
        return Batch(_noise(x1, generator), x1, Condition())


class SuperResolution(Coupling):
    """x0 = U(D(x1)) + sigma zeta ([C] section 4): D averages factor x factor blocks, U up-samples back.

    U(D(x1)) (batch, C, H, W) is also given to the network as ``cond.channels``.

    Args:
        factor: the down-sampling factor (an integer >= 2 that divides height and width).
        sigma: the noise level sigma >= 0 added to the up-sampled image.
        mode: the up-sampling U, ``nearest`` or ``bilinear``.
    """

    def __init__(self, factor: int = 4, sigma: float = 0.1, mode: str = "bilinear") -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise ValueError(f"super-resolution factor must be an integer >= 2, got {factor!r}")
        if not sigma >= 0:
            raise ValueError(f"super-resolution sigma must be >= 0, got {sigma!r}")
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"unknown up-sampling mode {mode!r}; expected one of: {', '.join(UPSAMPLING_MODES)}")
        self.factor, self.sigma, self.mode = factor, float(sigma), mode

    def cond_channels(self, data_channels: int) -> int:
        return data_channels

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        _, height, width = _image_shape(data_shape, "super-resolution")
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the super-resolution factor {self.factor}"
            )

    def low_resolution(self, x1: Tensor) -> Tensor:
        """U(D(x1)): (batch, C, H, W) -> (batch, C, H, W), the blurred image the base is centred on."""
        small = F.avg_pool2d(x1, self.factor)
        # align_corners=False keeps bilinear weights non-negative and summing to one (no overshoot).
        options = {"align_corners": False} if self.mode == "bilinear" else {}
        return F.interpolate(small, scale_factor=self.factor, mode=self.mode, **options)

    def couple(self, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Batch:
        mean = self.low_resolution(x1)
        return Batch(mean + self.sigma * _noise(x1, generator), x1, Condition(channels=mean))


class Inpainting(Coupling):
    """x0 = xi * x1 + (1 - xi) * sigma zeta ([C] section 4): keep the visible pixels, noise the hidden ones.

    xi (batch, 1, H, W) is the keep-mask, shared over channels: the image is cut into a
    sqrt(tiles) x sqrt(tiles) grid and each tile is hidden (xi = 0) independently with
    ``hide_probability``. ``cond.channels`` = [xi, xi * x1] (batch, 1 + C, H, W): the mask first.

    Args:
        tiles: the number of tiles, a perfect square whose root divides height and width.
        hide_probability: the probability p in [0, 1] that a tile is hidden.
        sigma: the scale of the noise on hidden pixels (1: the paper's N(0, I)).
    """

    def __init__(self, tiles: int = 64, hide_probability: float = 0.3, sigma: float = 1.0) -> None:
        side = int(round(tiles**0.5)) if isinstance(tiles, int) and tiles > 0 else 0
        if isinstance(tiles, bool) or side * side != tiles:
            raise ValueError(f"in-painting tiles must be a positive perfect square (64 = 8 x 8), got {tiles!r}")
        if not 0.0 <= hide_probability <= 1.0:
            raise ValueError(f"in-painting hide_probability must be in [0, 1], got {hide_probability!r}")
        if not sigma > 0:
            raise ValueError(f"in-painting sigma must be > 0, got {sigma!r}")
        self.tiles, self.hide_probability, self.sigma = tiles, float(hide_probability), float(sigma)

    @property
    def tiles_per_side(self) -> int:
        return int(round(self.tiles**0.5))

    def cond_channels(self, data_channels: int) -> int:
        return data_channels + 1

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        _, height, width = _image_shape(data_shape, "in-painting")
        side = self.tiles_per_side
        if height % side or width % side:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the {side}x{side} grid of {self.tiles} tiles"
            )

    def keep_mask(self, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        """xi (batch, 1, H, W) in {0, 1}: 1 on kept tiles, 0 on hidden ones."""
        side = self.tiles_per_side
        batch, _, height, width = x1.shape
        uniform = torch.rand(batch, 1, side, side, generator=generator, device=x1.device, dtype=x1.dtype)
        tile_mask = (uniform >= self.hide_probability).to(x1.dtype)
        return tile_mask.repeat_interleave(height // side, dim=2).repeat_interleave(width // side, dim=3)

    def couple(self, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Batch:
        mask = self.keep_mask(x1, generator)
        kept = mask * x1
        x0 = kept + (1 - mask) * (self.sigma * _noise(x1, generator))
        return Batch(x0, x1, Condition(channels=torch.cat([mask, kept], dim=1)))


def mask_velocity(velocity: Tensor, cond: Condition) -> Tensor:
    """Zero the velocity on kept pixels: b * (1 - xi), xi = cond.channels[:, :1] (in-painting's layout).

    On a kept pixel x0 = x1, so with gamma = 0 the interpolant x_t = alpha x0 + beta x1 = (alpha + beta) x1
    does not move for schedules with alpha + beta = 1 (the linear one of [C]) and its velocity is exactly
    zero there (MATH.md section 6). Masking the network's output enforces this and keeps the loss on the
    hidden pixels only. velocity (batch, C, H, W) -> (batch, C, H, W).
    """
    if cond.channels is None or cond.channels.dim() != velocity.dim() or cond.channels.shape[0] != velocity.shape[0]:
        shape = None if cond.channels is None else tuple(cond.channels.shape)
        raise ValueError(
            f"mask_velocity needs in-painting cond.channels (batch, 1 + C, H, W) matching velocity "
            f"{tuple(velocity.shape)}, got {shape}"
        )
    return velocity * (1 - cond.channels[:, :1])


class ClassLabels(Coupling):
    """Class labels as ``cond.labels`` on top of an inner coupling; labels dropped for classifier-free guidance.

    Each label is replaced by the null label ``num_classes`` independently with ``drop_probability``
    (MATH.md section 6), so one network learns b(t, x | label) and b(t, x | null).

    Args:
        drop_probability: the probability p in [0, 1] of dropping a label during training.
        num_classes: the number of classes K (labels in 0..K-1; K is the null label).
        inner: the coupling that draws x0 (IndependentCoupling by default).
    """

    def __init__(self, drop_probability: float = 0.1, num_classes: int = 10, inner: Coupling | None = None) -> None:
        if not 0.0 <= drop_probability <= 1.0:
            raise ValueError(f"label drop_probability must be in [0, 1], got {drop_probability!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if isinstance(inner, ClassLabels):
            raise ValueError("ClassLabels cannot wrap another ClassLabels coupling; give one label source")
        self.drop_probability, self.num_classes = float(drop_probability), num_classes
        self.inner = IndependentCoupling() if inner is None else inner

    @property
    def gaussian_base(self) -> bool:  # type: ignore[override]
        return self.inner.gaussian_base

    def cond_channels(self, data_channels: int) -> int:
        return self.inner.cond_channels(data_channels)

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        self.inner.check_shape(data_shape)

    def drop(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """labels (batch,) with each entry replaced by the null label num_classes with probability p."""
        uniform = torch.rand(labels.shape, generator=generator, device=labels.device)
        return torch.where(uniform < self.drop_probability, torch.full_like(labels, self.num_classes), labels)

    def couple(self, x1: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Batch:
        if labels is None:
            raise ValueError("ClassLabels needs labels, got None (is the data set labelled?)")
        # The range of the labels is checked once where the data enters (the datamodule), not here:
        # a per-batch check would synchronise the device with the host at every step.
        inner = self.inner.couple(x1, None, generator)
        return Batch(inner.x0, inner.x1, inner.cond.with_labels(self.drop(labels.long(), generator)))


COUPLINGS: dict[str, type[Coupling]] = {
    "independent": IndependentCoupling,
    "super-resolution": SuperResolution,
    "inpainting": Inpainting,
    "class-labels": ClassLabels,
}


def get_coupling(name: str, **settings) -> Coupling:
    """The coupling registered as ``name`` (see COUPLINGS), built with ``settings``."""
    return lookup(COUPLINGS, name, "coupling")(**settings)
