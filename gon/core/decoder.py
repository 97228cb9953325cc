"""The implicit decoder f(c, z): coordinates and a latent in, pixel values out.

Two ways to condition on z:
- concatenation (default): the first layer sees [z, enc(c)]. Its pre-activation is split as
  W [z; e] + b = (W_z z) + (W_e e + b): the coordinate part once per grid (N, H), the latent
  part once per sample (B, H), broadcast-added; z is never copied to every pixel.
- modulation (Mehta et al. 2021): a ReLU MLP on z yields one (B, H) vector per hidden layer,
  which multiplies that layer's activations; the first layer then sees only enc(c). With
  ``linear_modulation`` one linear map z -> all modulations instead (functa's default
  latent-to-modulation map; its maintainers report a deeper map trains worse).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gon.core.blocks import BaseBlockFactory
from gon.core.encoding import CoordinateEncoding, IdentityPositionalEncoding


class Modulator(nn.Module):
    """Batched modulation network: layer i maps [h_{i-1}, z] to m_i = relu(W_i [h_{i-1}; z]);
    with ``linear``, one affine map of z gives every m_i (no activation, no hidden layer)."""

    def __init__(self, latent_dim: int, hidden_dim: int, num_mods: int,
                 linear: bool = False) -> None:
        super().__init__()
        self.num_mods, self.linear = num_mods, linear
        self.layers = nn.ModuleList(
            [nn.Linear(latent_dim, hidden_dim * num_mods)] if linear else
            (nn.Linear(latent_dim + (hidden_dim if i else 0), hidden_dim)
             for i in range(num_mods))
        )

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        if self.linear:
            return list(self.layers[0](z).chunk(self.num_mods, dim=-1))  # num_mods x (B, H)
        mods, h = [], z  # z (B, d)
        for layer in self.layers:
            m = F.relu(layer(h))  # (B, H)
            mods.append(m)
            h = torch.cat([m, z], dim=-1)
        return mods


class ImplicitDecoder(nn.Module):
    """f(c, z) as in gon-pytorch: an MLP of ``num_layers`` blocks from ``block_factory``."""

    def __init__(
        self,
        latent_dim: int,
        out_dim: int,
        hidden_dim: int,
        num_layers: int,
        block_factory: BaseBlockFactory,
        pos_encoder: CoordinateEncoding | None = None,
        modulation: bool = False,
        linear_modulation: bool = False,
        dropout: float = 0.0,
        final_activation: Callable[[torch.Tensor], torch.Tensor] | None = torch.sigmoid,
    ) -> None:
        super().__init__()
        for name, value, low in [
            ("latent_dim", latent_dim, 1),
            ("out_dim", out_dim, 1),
            ("hidden_dim", hidden_dim, 1),
            ("num_layers", num_layers, 1),
        ]:
            if int(value) < low:
                raise ValueError(f"ImplicitDecoder: {name} must be >= {low}, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ImplicitDecoder: dropout must be in [0, 1), got {dropout}")
        if modulation and num_layers < 2:
            raise ValueError(
                "ImplicitDecoder: modulation needs num_layers >= 2 (hidden layers "
                f"to modulate), got num_layers={num_layers}"
            )
        self.pos_encoder = (
            pos_encoder if pos_encoder is not None else IdentityPositionalEncoding(2)
        )
        self.latent_dim, self.out_dim = latent_dim, out_dim
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.modulation, self.dropout = modulation, dropout
        self.final_activation = final_activation
        in_dim = self.pos_encoder.out_dim + (0 if modulation else latent_dim)
        self.blocks = nn.ModuleList(
            block_factory(
                in_dim if i == 0 else hidden_dim,
                out_dim if i == num_layers - 1 else hidden_dim,
                is_first=i == 0,
                is_last=i == num_layers - 1,
            )
            for i in range(num_layers)
        )
        self.mod_network = (
            Modulator(latent_dim, hidden_dim, num_layers - 1, linear=linear_modulation)
            if modulation else None
        )

    def first_layer(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the first layer: e (Bc, N, E), z (B, d) -> (B or Bc, N, H)."""
        w, b = self.blocks[0].weight_bias()
        if self.mod_network is not None:
            return F.linear(e, w, b)
        d = self.latent_dim  # columns [0, d) of W act on z, the rest on enc(c) (seed order)
        return F.linear(e, w[:, d:], b) + F.linear(z, w[:, :d]).unsqueeze(1)

    def logits(self, coords: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs: coords (1 or B, *S, in), latent (B, d) -> (B, *S, out)."""
        if latent.dim() != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(
                f"latent must have shape (B, latent_dim={self.latent_dim}), "
                f"got {tuple(latent.shape)}"
            )
        if coords.dim() < 2 or coords.shape[0] not in (1, latent.shape[0]):
            raise ValueError(
                f"coords must have shape (1 or B={latent.shape[0]}, *spatial, "
                f"{self.pos_encoder.in_dim}), got {tuple(coords.shape)}"
            )
        spatial = coords.shape[1:-1]
        e = self.pos_encoder(coords.flatten(1, -2))  # (Bc, N, E): once per grid
        mods = self.mod_network(latent) if self.mod_network is not None else None
        h = self.first_layer(e, latent)
        for i, block in enumerate(self.blocks):
            if i:
                h = F.linear(h, *block.weight_bias())
            if i == self.num_layers - 1:
                break
            h = block.act(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
            if mods is not None:
                h = h * mods[i].unsqueeze(1)  # (B, N, H) * (B, 1, H)
        return h.reshape(latent.shape[0], *spatial, self.out_dim)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.final_activation is None else self.final_activation(logits)

    def forward(self, coords: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Pixel values: coords (1 or B, *S, in), latent (B, d) -> (B, *S, out)."""
        return self.activate(self.logits(coords, latent))
