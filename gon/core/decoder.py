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

    def block_weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Every block's effective (weight, bias), w0 folded in: a step computes them once and
        passes them to each decoder pass (``coordinate_part``, ``logits_from``)."""
        return [block.weight_bias() for block in self.blocks]

    def coordinate_part(
        self, coords: torch.Tensor, weights: list[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> torch.Tensor:
        """The first layer's pre-activation from the coordinates alone, bias included, once per
        grid: coords (..., in) -> (..., H), e.g. (Bc, N, in) or (N, in) pixels. Concatenation:
        columns [d, d + E) of W act on enc(c) (the seed's order: [z, enc(c)]); modulation: all
        of W."""
        e = self.pos_encoder(coords)  # (..., E)
        w, b = weights[0]
        return F.linear(e, w if self.mod_network is not None else w[:, self.latent_dim :], b)

    def logits_from(
        self,
        part: torch.Tensor,
        latent: torch.Tensor,
        weights: list[tuple[torch.Tensor, torch.Tensor | None]],
        paired: bool = False,
    ) -> torch.Tensor:
        """Pre-activation outputs from ``coordinate_part`` ((Bc, N, H) or one grid's (N, H))
        and latents (B, d): every pixel with every latent, (B N, out) (concatenation) or
        (B, N, out) (modulation); ``paired``: part (N, H) and latents (N, d), pixel n with
        latent n only, (N, out).

        Without modulation the batch runs as rows of 2-d matrices (one addmm a layer, no
        reshapes around it): after the first layer pixels do not mix.
        """
        mods = self.mod_network(latent) if self.mod_network is not None else None
        if mods is None:  # W [z; e] + b = (W_z z) + (W_e e + b): z once per sample (B, H)
            lat = F.linear(latent, weights[0][0][:, : self.latent_dim])  # (B, H)
            h = part + lat if paired else (part + lat.unsqueeze(1)).flatten(0, 1)
        else:
            h = part
        for i, block in enumerate(self.blocks):
            if i:
                h = F.linear(h, *weights[i])
            if i == self.num_layers - 1:
                break
            h = block.act(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
            if mods is not None:  # (N, H) * (N, H) paired, else (B, N, H) * (B, 1, H)
                h = h * (mods[i] if paired else mods[i].unsqueeze(1))
        return h

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
        weights = self.block_weights()
        part = self.coordinate_part(coords.flatten(1, -2), weights)  # (Bc, N, H): once per grid
        h = self.logits_from(part, latent, weights)
        return h.reshape(latent.shape[0], *coords.shape[1:-1], self.out_dim)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.final_activation is None else self.final_activation(logits)

    def forward(self, coords: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Pixel values: coords (1 or B, *S, in), latent (B, d) -> (B, *S, out)."""
        return self.activate(self.logits(coords, latent))
