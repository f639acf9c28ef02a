"""Keep-masks for in-painting: xi (batch, 1, H, W) in {0, 1}, 1 on known pixels, drawn from a generator.

Three families, each a small class with ``__call__(batch, height, width, generator, device, dtype)``:

- ``TileMask``: the image cut into a grid of tiles, each hidden independently with probability p
  ([C]: 64 tiles, p = 0.3);
- ``BoxMask``: a few axis-aligned rectangles hidden, sides a uniform fraction of the image's;
- ``StrokeMask``: free-form brush strokes (polylines of random direction and length, a given width).

Every draw reads ``generator`` only, so a seed fixes the mask on any device and batch size.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from si_lightning.checks import is_integer, is_number, lookup


def _probability(name: str, value: float) -> float:
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} = {value!r}: expected a probability in [0, 1]")
    return float(value)


def _fraction(name: str, value: float) -> float:
    if not is_number(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} = {value!r}: expected a fraction of the image side in (0, 1]")
    return float(value)


def _count(name: str, value: int, minimum: int = 1) -> int:
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} = {value!r}: expected an integer >= {minimum}")
    return value


class MaskGenerator(ABC):
    """``mask(batch, height, width, generator, device, dtype) -> xi`` (batch, 1, height, width) in {0, 1}."""

    def check_shape(self, height: int, width: int) -> None:  # noqa: B027 (a hook: no check by default)
        """Raise a ValueError if masks of this size cannot be drawn."""

    @abstractmethod
    def __call__(
        self, batch: int, height: int, width: int, generator: torch.Generator | None, device, dtype
    ) -> Tensor: ...

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({settings})"


class TileMask(MaskGenerator):
    """A sqrt(tiles) x sqrt(tiles) grid; each tile hidden independently with ``hide_probability``.

    Args:
        tiles: the number of tiles, a perfect square whose root divides height and width (64 in [C]).
        hide_probability: p in [0, 1] (0.3 in [C]).
    """

    def __init__(self, tiles: int = 64, hide_probability: float = 0.3) -> None:
        side = int(round(tiles**0.5)) if is_integer(tiles) and tiles > 0 else 0
        if side * side != tiles:
            raise ValueError(f"tiles = {tiles!r}: expected a positive perfect square (64 = 8 x 8)")
        self.tiles = tiles
        self.hide_probability = _probability("hide_probability", hide_probability)

    @property
    def side(self) -> int:
        return int(round(self.tiles**0.5))

    def check_shape(self, height: int, width: int) -> None:
        if height % self.side or width % self.side:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the {self.side}x{self.side} grid "
                f"of {self.tiles} tiles"
            )

    def __call__(self, batch, height, width, generator, device, dtype) -> Tensor:
        side = self.side
        uniform = torch.rand(batch, 1, side, side, generator=generator, device=device, dtype=dtype)
        tile_mask = (uniform >= self.hide_probability).to(dtype)
        return tile_mask.repeat_interleave(height // side, dim=2).repeat_interleave(width // side, dim=3)


class BoxMask(MaskGenerator):
    """``boxes`` rectangles hidden, each side a uniform fraction in [min_size, max_size] of the image's.

    Args:
        boxes: rectangles per image (they may overlap).
        min_size, max_size: bounds on a side as a fraction of the image side, 0 < min <= max <= 1.
    """

    def __init__(self, boxes: int = 1, min_size: float = 0.25, max_size: float = 0.5) -> None:
        self.boxes = _count("boxes", boxes)
        self.min_size, self.max_size = _fraction("min_size", min_size), _fraction("max_size", max_size)
        if self.min_size > self.max_size:
            raise ValueError(f"min_size = {min_size!r}: expected at most max_size = {max_size!r}")

    def __call__(self, batch, height, width, generator, device, dtype) -> Tensor:
        draws = torch.rand(batch, self.boxes, 4, generator=generator, device=device, dtype=torch.float64)
        sizes = self.min_size + (self.max_size - self.min_size) * draws[..., :2]  # fractions of (H, W)
        box_height = (sizes[..., 0] * height).round().clamp(1, height)
        box_width = (sizes[..., 1] * width).round().clamp(1, width)
        top = (draws[..., 2] * (height - box_height + 1)).floor()
        left = (draws[..., 3] * (width - box_width + 1)).floor()
        rows = torch.arange(height, device=device, dtype=torch.float64).view(1, 1, height, 1)
        columns = torch.arange(width, device=device, dtype=torch.float64).view(1, 1, 1, width)
        inside_rows = (rows >= top[..., None, None]) & (rows < (top + box_height)[..., None, None])
        inside_columns = (columns >= left[..., None, None]) & (columns < (left + box_width)[..., None, None])
        hidden = (inside_rows & inside_columns).any(dim=1, keepdim=True)  # (batch, 1, H, W)
        return (~hidden).to(dtype)


class StrokeMask(MaskGenerator):
    """Free-form strokes: polylines of ``vertices`` points, each segment of random direction and length.

    A stroke starts at a uniform point; each next vertex turns by an angle uniform in
    [-max_turn, max_turn] and moves a length uniform in [0.1, max_length] x the image side. Pixels whose
    centre lies within width / 2 of a segment are hidden.

    Args:
        strokes: strokes per image.
        vertices: points per stroke (>= 2).
        width: the brush width as a fraction of the image side.
        max_length: the longest segment as a fraction of the image side.
        max_turn: the largest turn between segments, in radians.
    """

    def __init__(
        self, strokes: int = 2, vertices: int = 4, width: float = 0.15, max_length: float = 0.4, max_turn: float = 1.5
    ) -> None:
        self.strokes, self.vertices = _count("strokes", strokes), _count("vertices", vertices, minimum=2)
        self.width, self.max_length = _fraction("width", width), _fraction("max_length", max_length)
        if not 0.0 <= max_turn <= math.pi:
            raise ValueError(f"max_turn = {max_turn!r}: expected an angle in [0, pi]")
        self.max_turn = float(max_turn)

    def __call__(self, batch, height, width, generator, device, dtype) -> Tensor:
        size = float(max(height, width))
        shape = (batch, self.strokes)
        start = torch.rand(*shape, 2, generator=generator, device=device, dtype=torch.float64) * torch.tensor(
            [height, width], device=device, dtype=torch.float64
        )
        heading = 2 * math.pi * torch.rand(*shape, generator=generator, device=device, dtype=torch.float64)
        points = [start]
        for _ in range(self.vertices - 1):
            turns = torch.rand(*shape, 2, generator=generator, device=device, dtype=torch.float64)
            heading = heading + self.max_turn * (2 * turns[..., 0] - 1)
            length = size * (0.1 + (self.max_length - 0.1) * turns[..., 1]).clamp_min(0.1)
            step = torch.stack([heading.sin(), heading.cos()], dim=-1) * length[..., None]
            points.append(points[-1] + step)
        rows = torch.arange(height, device=device, dtype=torch.float64) + 0.5
        columns = torch.arange(width, device=device, dtype=torch.float64) + 0.5
        grid = torch.stack(torch.meshgrid(rows, columns, indexing="ij"), dim=-1).view(1, 1, height * width, 2)
        radius = 0.5 * self.width * size
        hidden = torch.zeros(batch, height * width, dtype=torch.bool, device=device)
        for begin, end in zip(points[:-1], points[1:], strict=True):
            direction = (end - begin)[:, :, None, :]  # (batch, strokes, 1, 2)
            offset = grid - begin[:, :, None, :]
            along = ((offset * direction).sum(-1) / direction.pow(2).sum(-1).clamp_min(1e-12)).clamp(0, 1)
            distance = (offset - along[..., None] * direction).norm(dim=-1)  # (batch, strokes, H W)
            hidden |= (distance <= radius).any(dim=1)
        return (~hidden).view(batch, 1, height, width).to(dtype)


MASKS: dict[str, type[MaskGenerator]] = {"tiles": TileMask, "boxes": BoxMask, "strokes": StrokeMask}


def get_mask(name: str, **settings) -> MaskGenerator:
    """The mask generator registered as ``name`` (see MASKS), built with ``settings``."""
    return lookup(MASKS, name, "mask")(**settings)
