"""Data-dependent bases for images ([C] section 4): super-resolution and in-painting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from si_lightning.checks import is_integer
from si_lightning.condition import Condition
from si_lightning.couplings.base import Batch, Coupling, gaussian_log_prob, image_shape, noise
from si_lightning.couplings.degradations import floor_untouched
from si_lightning.couplings.masks import MaskGenerator, TileMask

UPSAMPLING_MODES = ("nearest", "bilinear")


class SuperResolution(Coupling):
    """x0 = U(D(x1)) + sigma zeta ([C] section 4): D averages factor x factor blocks, U up-samples back.

    U(D(x1)) (batch, C, H, W) is also given to the network as ``cond.channels``.

    Args:
        factor: the down-sampling factor (an integer >= 2 that divides height and width).
        sigma: the noise level sigma >= 0 added to the up-sampled image.
        mode: the up-sampling U, ``nearest`` or ``bilinear``.
        keep_floor: with sigma = 0, mark as known (``cond.keep``) the pixels the floor rule proves untouched:
            U(D(x1)) = -1 there forces x1 = -1 (couplings/degradations.py); for a residual bridge. With
            sigma > 0 every pixel of x0 is noised and none is marked.
    """

    def __init__(self, factor: int = 4, sigma: float = 0.1, mode: str = "bilinear", keep_floor: bool = False) -> None:
        if not is_integer(factor) or factor < 2:
            raise ValueError(f"super-resolution factor must be an integer >= 2, got {factor!r}")
        if not sigma >= 0:
            raise ValueError(f"super-resolution sigma must be >= 0, got {sigma!r}")
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"unknown up-sampling mode {mode!r}; expected one of: {', '.join(UPSAMPLING_MODES)}")
        if not isinstance(keep_floor, bool):
            raise ValueError(f"super-resolution keep_floor = {keep_floor!r}: expected true or false")
        self.factor, self.sigma, self.mode, self.keep_floor = factor, float(sigma), mode, keep_floor

    def cond_channels(self, data_channels: int) -> int:
        return data_channels

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        _, height, width = image_shape(data_shape, "super-resolution")
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the super-resolution factor {self.factor}"
            )

    def downsample(self, x1: Tensor) -> Tensor:
        """D(x1): (batch, C, H, W) -> (batch, C, H / factor, W / factor), block means."""
        return F.avg_pool2d(x1, self.factor)

    def upsample(self, low: Tensor) -> Tensor:
        """U(low): (batch, C, h, w) -> (batch, C, h factor, w factor) by ``mode``."""
        # align_corners=False keeps bilinear weights non-negative and summing to one (no overshoot).
        options = {"align_corners": False} if self.mode == "bilinear" else {}
        return F.interpolate(low, scale_factor=self.factor, mode=self.mode, **options)

    def low_resolution(self, x1: Tensor) -> Tensor:
        """U(D(x1)): (batch, C, H, W) -> (batch, C, H, W), the blurred image the base is centred on."""
        return self.upsample(self.downsample(x1))

    def bicubic(self, x1: Tensor) -> Tensor:
        """The plain baseline: D(x1) up-sampled bicubically, clipped to the data range [-1, 1]."""
        upsampled = F.interpolate(self.downsample(x1), scale_factor=self.factor, mode="bicubic", align_corners=False)
        return upsampled.clamp(-1.0, 1.0)

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        mean = self.low_resolution(x1)
        if self.keep_floor and self.sigma == 0:
            mean, keep = floor_untouched(mean)
            return Batch(mean, x1, Condition(channels=mean, keep=keep))
        x0 = mean + self.sigma * noise(x1, noise_generator or generator)
        return Batch(x0, x1, Condition(channels=mean))

    def couple_low_resolution(self, low: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Condition]:
        """(x0, cond) from a given low-resolution image low = D(x1) (batch, C, h, w) when x1 itself is unknown.

        x0 = U(low) + sigma zeta, cond.channels = U(low): what ``couple`` gives for an x1 with D(x1) = low,
        the same zeta drawn from the same generator (the noise shape is the high-resolution one).
        """
        if not isinstance(low, Tensor) or not low.is_floating_point() or low.dim() != 4:
            shape = tuple(low.shape) if isinstance(low, Tensor) else type(low).__name__
            raise ValueError(f"low-resolution images must be a floating tensor (batch, C, h, w), got {shape}")
        mean = self.upsample(low)
        return mean + self.sigma * noise(mean, generator), Condition(channels=mean)

    def base_log_prob(self, x0: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """log N(x0; U(D(x1)), sigma^2 I) over all C H W dimensions (U(D(x1)) = cond.channels)."""
        if self.sigma == 0:
            raise ValueError("super-resolution sigma = 0.0: a likelihood needs base noise, expected sigma > 0")
        return gaussian_log_prob(x0 - cond.channels, self.sigma)

    def degraded(self, batch: Batch) -> Tensor:
        """The low-resolution input U(D(x1)) (the centre of the base, without its noise)."""
        return batch.cond.channels


class Inpainting(Coupling):
    """x0 = xi * x1 + (1 - xi) * sigma zeta ([C] section 4): keep the visible pixels, noise the hidden ones.

    xi (batch, 1, H, W) is the keep-mask, shared over channels, drawn by ``masks`` (by default the
    paper's tiles: a sqrt(tiles) x sqrt(tiles) grid, each tile hidden independently with
    ``hide_probability``). ``cond.channels`` = [xi, xi * x1] (batch, 1 + C, H, W): the mask first;
    ``cond.keep`` = xi tells the module to zero the velocity on kept pixels, so sampling never
    moves them.

    Args:
        tiles: the number of tiles, a perfect square whose root divides height and width.
        hide_probability: the probability p in [0, 1] that a tile is hidden.
        sigma: the scale of the noise on hidden pixels (1: the paper's N(0, I); 0: they start at 0, as a
            bridge from the masked image does).
        masks: another mask generator (``BoxMask``, ``StrokeMask``); then tiles and hide_probability are unused.
    """

    def __init__(
        self, tiles: int = 64, hide_probability: float = 0.3, sigma: float = 1.0, masks: MaskGenerator | None = None
    ) -> None:
        side = int(round(tiles**0.5)) if isinstance(tiles, int) and tiles > 0 else 0
        if isinstance(tiles, bool) or side * side != tiles:
            raise ValueError(f"in-painting tiles must be a positive perfect square (64 = 8 x 8), got {tiles!r}")
        if isinstance(hide_probability, bool) or not 0.0 <= hide_probability <= 1.0:
            raise ValueError(f"in-painting hide_probability must be in [0, 1], got {hide_probability!r}")
        if not sigma >= 0:
            raise ValueError(f"in-painting sigma must be >= 0 (0: hidden pixels start at 0), got {sigma!r}")
        if masks is not None and not isinstance(masks, MaskGenerator):
            raise ValueError(f"in-painting masks = {masks!r}: expected a MaskGenerator (TileMask, BoxMask, StrokeMask)")
        self.tiles, self.hide_probability, self.sigma = tiles, float(hide_probability), float(sigma)
        self.masks = TileMask(tiles, hide_probability) if masks is None else masks

    @property
    def tiles_per_side(self) -> int:
        return int(round(self.tiles**0.5))

    def cond_channels(self, data_channels: int) -> int:
        return data_channels + 1

    def check_shape(self, data_shape: tuple[int, ...]) -> None:
        _, height, width = image_shape(data_shape, "in-painting")
        self.masks.check_shape(height, width)

    def keep_mask(self, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        """xi (batch, 1, H, W) in {0, 1}: 1 on kept pixels, 0 on hidden ones."""
        batch, _, height, width = x1.shape
        return self.masks(batch, height, width, generator, x1.device, x1.dtype)

    def couple(
        self,
        x1: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None = None,
    ) -> Batch:
        mask = self.keep_mask(x1, generator)
        kept = mask * x1
        x0 = kept + (1 - mask) * (self.sigma * noise(x1, noise_generator or generator))
        return Batch(x0, x1, Condition(channels=torch.cat([mask, kept], dim=1), keep=mask))

    def base_log_prob(self, x0: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """log N(x0; 0, sigma^2 I) over the hidden dimensions only (kept ones are copies of x1, never moved)."""
        if self.sigma == 0:
            raise ValueError("in-painting sigma = 0.0: a likelihood needs base noise, expected sigma > 0")
        return gaussian_log_prob(x0, self.sigma, 1 - cond.keep)

    def degraded(self, batch: Batch) -> Tensor:
        """The known pixels, hidden ones shown black (-1)."""
        keep = batch.cond.channels[:, :1]
        return torch.where(keep.bool(), batch.x1, torch.full_like(batch.x1, -1.0))


def mask_velocity(velocity: Tensor, cond: Condition) -> Tensor:
    """Zero the velocity on kept pixels: b where xi = 0, exactly 0 where xi = 1.

    xi is ``cond.keep`` (or, for a condition built by hand, ``cond.channels[:, :1]``, in-painting's layout).
    On a kept pixel x0 = x1 (in-painting, docs/math.md section 6), so with gamma = 0 the interpolant
    x_t = alpha x0 + beta x1 = (alpha + beta) x1 does not move for schedules with alpha + beta = 1 (the
    linear one of [C]) and its velocity is exactly zero there. ``torch.where`` (not a product) keeps the
    zero exact even where the network returns inf or NaN. velocity (batch, C, H, W) -> (batch, C, H, W).
    """
    keep = cond.keep
    if keep is None and cond.channels is not None and cond.channels.dim() == velocity.dim():
        keep = cond.channels[:, :1]
    if keep is None or keep.dim() != velocity.dim() or keep.shape[0] != velocity.shape[0]:
        shape = None if cond.channels is None else tuple(cond.channels.shape)
        raise ValueError(
            f"mask_velocity needs in-painting cond.channels (batch, 1 + C, H, W) matching velocity "
            f"{tuple(velocity.shape)}, got {shape}"
        )
    return torch.where(keep.bool(), torch.zeros_like(velocity), velocity)
