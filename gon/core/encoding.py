"""Coordinate encodings: identity, NeRF positional encoding, Gaussian Fourier features.

Each maps coordinates (..., in_dim) to features (..., out_dim). They act on one grid, never on a
per-sample copy of it, so their cost does not grow with the batch size.
"""

from __future__ import annotations

from math import pi

import torch
from torch import nn


class CoordinateEncoding(nn.Module):
    """sin/cos of a linear projection of the coordinates (Tancik et al. 2020)."""

    def __init__(self, proj_matrix: torch.Tensor, is_trainable: bool = False) -> None:
        super().__init__()
        if is_trainable:
            self.proj_matrix = nn.Parameter(proj_matrix)
        else:
            self.register_buffer("proj_matrix", proj_matrix)
        self.in_dim = proj_matrix.size(0)
        self.out_dim = proj_matrix.size(1) * 2

    def check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__}: coords must have last dim in_dim={self.in_dim}, "
                f"got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        x = (2 * pi) * (x @ self.proj_matrix)  # (..., mapping_size)
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class IdentityPositionalEncoding(CoordinateEncoding):
    """Raw coordinates."""

    def __init__(self, in_dim: int) -> None:
        _check_in_dim(in_dim)
        super().__init__(torch.eye(in_dim))
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return x


class NeRFPositionalEncoding(CoordinateEncoding):
    """sin/cos(2^k pi x) for k < n, per coordinate (Mildenhall et al. 2020)."""

    def __init__(self, in_dim: int, n: int = 10) -> None:
        _check_in_dim(in_dim)
        if n < 1:
            raise ValueError(f"NeRFPositionalEncoding: n must be >= 1, got {n}")
        super().__init__((2.0 ** torch.arange(n, dtype=torch.float32))[None, :])
        self.in_dim = in_dim
        self.n = n
        self.out_dim = n * 2 * in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        y = pi * x.unsqueeze(-1) * self.proj_matrix  # (..., in_dim, n)
        y = torch.cat([torch.sin(y), torch.cos(y)], dim=-1)  # (..., in_dim, 2n)
        return y.flatten(-2)


class GaussianFourierFeatureTransform(CoordinateEncoding):
    """Random Fourier features with B ~ N(0, sigma^2), shape (in_dim, mapping_size)."""

    def __init__(
        self,
        in_dim: int,
        mapping_size: int = 32,
        sigma: float = 1.0,
        seed: int | None = None,
        trainable: bool = False,
    ) -> None:
        _check_in_dim(in_dim)
        if mapping_size < 1 or sigma <= 0:
            raise ValueError(
                "GaussianFourierFeatureTransform: mapping_size must be >= 1 and sigma > 0, "
                f"got mapping_size={mapping_size}, sigma={sigma}"
            )
        super().__init__(self.get_transform_matrix(in_dim, mapping_size, sigma, seed), trainable)
        self.mapping_size, self.sigma, self.seed = mapping_size, sigma, seed

    @staticmethod
    def get_transform_matrix(
        in_dim: int, mapping_size: int, sigma: float, seed: int | None = None
    ) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.normal(0.0, sigma, size=(in_dim, mapping_size), generator=gen)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, mapping_size={self.mapping_size}, sigma={self.sigma}"


def _check_in_dim(in_dim: int) -> None:
    if in_dim < 1:
        raise ValueError(f"in_dim must be >= 1, got {in_dim}")
