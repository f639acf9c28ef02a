"""Zigzag scan orders of a token grid (ZigMa, Hu et al. 2024): eight paths that keep neighbours together.

Tokens of a height x width grid are numbered row-major (token r * width + c sits at row r, column c). A
path is a permutation ``path`` of those numbers: the scan reads ``tokens[:, path]``, and
``tokens[:, inverse]`` with ``inverse = argsort(path)`` puts a scanned sequence back in row-major order.

The eight paths are the boustrophedon ("snake") along rows and along columns, each started from the four
corners (the start corner is a flip of rows and/or columns). In every path consecutive tokens are
4-neighbours in the grid: within a row (column) they are side by side, and the snake turns at the grid's
edge into the next row (column) at the same column (row).
"""

from __future__ import annotations

import torch
from torch import Tensor

NUM_ZIGZAG_PATHS = 8

# (along rows?, flip rows?, flip columns?) for path 0..7: the two orientations alternate, so consecutive
# layers read the image along different axes; the corners go top-left, bottom-right, top-right, bottom-left.
PATH_LAYOUT: tuple[tuple[bool, bool, bool], ...] = (
    (True, False, False),
    (False, False, False),
    (True, True, True),
    (False, True, True),
    (True, False, True),
    (False, False, True),
    (True, True, False),
    (False, True, False),
)


def snake(height: int, width: int, along_rows: bool) -> list[tuple[int, int]]:
    """(row, column) of the boustrophedon from the top-left corner: every other row (column) reversed."""
    if along_rows:
        return [
            (row, column if row % 2 == 0 else width - 1 - column) for row in range(height) for column in range(width)
        ]
    return [(row if column % 2 == 0 else height - 1 - row, column) for column in range(width) for row in range(height)]


def zigzag_path(height: int, width: int, index: int) -> Tensor:
    """Path ``index`` (0..7) on a height x width grid: a permutation of the row-major token numbers, (h * w,)."""
    if not 0 <= index < NUM_ZIGZAG_PATHS:
        raise ValueError(f"zigzag path index must be in [0, {NUM_ZIGZAG_PATHS - 1}], got {index!r}")
    along_rows, flip_rows, flip_columns = PATH_LAYOUT[index]
    order = []
    for row, column in snake(height, width, along_rows):
        row = height - 1 - row if flip_rows else row
        column = width - 1 - column if flip_columns else column
        order.append(row * width + column)
    return torch.tensor(order, dtype=torch.long)


def zigzag_paths(height: int, width: int) -> tuple[Tensor, Tensor]:
    """All eight paths and their inverses: (paths (8, h * w), inverses (8, h * w)), inverses[k][paths[k]] = arange."""
    if height < 1 or width < 1:
        raise ValueError(f"a zigzag path needs a grid of at least 1 x 1, got {height} x {width}")
    paths = torch.stack([zigzag_path(height, width, index) for index in range(NUM_ZIGZAG_PATHS)])
    return paths, torch.argsort(paths, dim=1)
