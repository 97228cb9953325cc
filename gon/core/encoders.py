"""Amortised encoders: the autoencoder baseline that GON is compared against.

An autoencoder replaces the gradient origin by an encoder network E in front of the same
implicit decoder: z = E(x), trained end to end on the outer loss only (no inner loss, no
second-order term). The paper claims GONs reach a lower reconstruction error than such
autoencoders "while requiring half the parameters".

    >>> ae = Autoencoder(decoder, MLPEncoder(image_shape=(8, 8, 1), latent_dim=32, hidden_dim=64))
    >>> z, _ = ae.infer_latents(coords, images)   # z = E(images), (B, d)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gon.core.decoder import ImplicitDecoder
from gon.core.model import GON


class MLPEncoder(nn.Module):
    """E(x) for small images: flatten, ``num_layers`` linear layers (ReLU between), to d.

    image_shape (H, W, C); hidden_dim is the width of the hidden layers.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden_dim < 1 or latent_dim < 1:
            raise ValueError(
                f"MLPEncoder: num_layers, hidden_dim and latent_dim must be >= 1, got "
                f"{num_layers}, {hidden_dim}, {latent_dim}"
            )
        self.image_shape = tuple(image_shape)
        widths = [math.prod(image_shape)] + [hidden_dim] * (num_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], latent_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, H, W, C) -> z (B, d)."""
        return self.net(images.flatten(1))


class ConvEncoder(nn.Module):
    """E(x) for 28 px and up: stride-2 3x3 convolutions (ReLU) of ``hidden_dim`` channels
    until the map is at most 4 px, then a linear layer to d (DCGAN-style, no normalisation)."""

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int
    ) -> None:
        super().__init__()
        h, w, c = image_shape
        if hidden_dim < 1 or latent_dim < 1:
            raise ValueError(
                f"ConvEncoder: hidden_dim and latent_dim must be >= 1, got {hidden_dim}, "
                f"{latent_dim}"
            )
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        while max(h, w) > 4:
            layers += [nn.Conv2d(c, hidden_dim, 3, stride=2, padding=1), nn.ReLU()]
            c, h, w = hidden_dim, (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, H, W, C) -> z (B, d)."""
        return self.head(self.features(images.permute(0, 3, 1, 2)).flatten(1))


class Autoencoder(GON):
    """z = E(x) and the GON's decoder and losses: the amortised baseline.

    It keeps the GON's interface (``infer_latents``, ``encode``, ``render``, the losses), so
    training, evaluation and the reports treat it as one more variant; it trains on the plain
    autograd path only (``TrainStep`` refuses the others). ``loss_inner`` reported by
    ``infer_latents`` is the inner loss at z = E(x), without a graph (nothing trains on it).
    """

    amortised = True

    def __init__(self, decoder: ImplicitDecoder, encoder: nn.Module, loss: str = "bce",
                 pixel_reduction: str = "mean") -> None:
        super().__init__(decoder, loss=loss, latent_reduction="sum",
                         pixel_reduction=pixel_reduction)
        self.encoder = encoder

    def infer_latents(
        self, coords: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_shapes(coords, target)
        z = self.encoder(target)  # (B, d)
        with torch.no_grad():
            loss_inner = self.inner_objective(coords, z, target)
        return z, loss_inner

    def encode(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        batch_size: int = 256,
        train_batch: int | None = None,
    ) -> torch.Tensor:
        """E(target) (N, d) in chunks, without a graph (a latent never depends on its batch)."""
        self.check_shapes(coords, target)
        with torch.no_grad():
            return torch.cat([self.encoder(chunk) for chunk in target.split(batch_size)])
