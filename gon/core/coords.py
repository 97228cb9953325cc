"""Coordinate grids in [-1, 1] for implicit decoders.

>>> make_grid(32, 32).shape   # (1, 32, 32, 2): one grid, broadcast over a batch of images
"""

from __future__ import annotations

import torch


def make_grid(
    *sizes: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A grid of shape (1, *sizes, len(sizes)); coordinate i runs over linspace(-1, 1, sizes[i]).

    The last axis follows the order of ``sizes`` ('ij' indexing): for an image of shape (H, W)
    the coordinates are (row, column). Rendering at a larger size samples the same square
    [-1, 1]^n more densely, which is what makes implicit super-resolution work.
    """
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not sizes or any(int(s) < 1 for s in sizes):
        raise ValueError(f"make_grid: sizes must be one or more positive ints, got {sizes}")
    axes = [torch.linspace(-1.0, 1.0, int(s), device=device, dtype=dtype) for s in sizes]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*sizes, n)
    return grid.unsqueeze(0)


def get_xy_grid(width: int, height: int) -> torch.Tensor:
    """Seed-compatible grid (1, width, height, 2), as ``gon_pytorch.utils.get_xy_grid``."""
    return make_grid(width, height)
