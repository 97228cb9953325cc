"""Decoder layers: SIREN (Sitzmann et al. 2020) and plain activations, built by block factories.

A block is a linear layer followed by an activation. The decoder reads a block's effective
weights (``block.weight_bias()``) so it can split the first layer into a coordinate part and a
latent part; SIREN's w0 is folded into those weights: sin(w0 (W x + b)) = sin((w0 W) x + w0 b),
a (out, in) multiply instead of one over every (batch, pixel, feature) activation.
"""

from __future__ import annotations

from collections.abc import Callable
from math import sqrt

import torch
import torch.nn.functional as F
from torch import nn


class Sine(nn.Module):
    """sin(w0 x)."""

    def __init__(self, w0: float = 1.0) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x if self.w0 == 1.0 else self.w0 * x)


class Swish(nn.Module):
    """x sigmoid(x) (Ramachandran et al. 2017)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "swish": Swish,
}


class LinearBlock(nn.Module):
    """activation(scale * linear(x)); the last block of a decoder has no activation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        linear_cls: type[nn.Linear] = nn.Linear,
        activation: Callable[[], nn.Module] = nn.ReLU,
        bias: bool = True,
        is_first: bool = False,
        is_last: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_f, self.out_f = in_features, out_features
        self.is_first, self.is_last = is_first, is_last
        self.linear = linear_cls(in_features, out_features, bias=bias)
        self.activation = None if is_last else activation()
        self.scale = 1.0 if is_last else float(scale)  # pre-activation gain (SIREN's w0)

    def weight_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.linear.weight, self.linear.bias
        if self.scale != 1.0:
            w = w * self.scale
            b = None if b is None else b * self.scale
        return w, b

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.activation is None else self.activation(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.linear(x, *self.weight_bias()))


class SirenLinear(LinearBlock):
    """sin(w0 (W x + b)) with SIREN's initialisation (paper sec. 3.2, supplement 1.5)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        linear_cls: type[nn.Linear] = nn.Linear,
        w0: float = 30.0,
        bias: bool = True,
        is_first: bool = False,
        is_last: bool = False,
    ) -> None:
        super().__init__(in_features, out_features, linear_cls, Sine, bias, is_first, is_last, w0)
        self.w0 = w0
        self.init_weights()

    def init_weights(self) -> None:
        # first layer U(-1/n, 1/n); later layers U(-sqrt(6/n)/w0, sqrt(6/n)/w0), n = fan-in
        b = 1 / self.in_f if self.is_first else sqrt(6 / self.in_f) / self.w0
        with torch.no_grad():
            self.linear.weight.uniform_(-b, b)
            if self.linear.bias is not None:
                self.linear.bias.uniform_(-b, b)


class BaseBlockFactory:
    """Builds the decoder's layers: ``factory(in_f, out_f, is_first, is_last) -> LinearBlock``."""

    def __call__(
        self, in_f: int, out_f: int, is_first: bool = False, is_last: bool = False
    ) -> LinearBlock:
        raise NotImplementedError


class LinearBlockFactory(BaseBlockFactory):
    """Linear layers with ReLU, LeakyReLU(0.2) or Swish (``activation_cls``: name or class)."""

    def __init__(
        self,
        linear_cls: type[nn.Linear] = nn.Linear,
        activation_cls: str | Callable[[], nn.Module] = nn.ReLU,
        bias: bool = True,
        activation: str | None = None,
    ) -> None:
        act = activation if activation is not None else activation_cls
        if isinstance(act, str):
            if act not in ACTIVATIONS:
                raise ValueError(
                    f"LinearBlockFactory: unknown activation={act!r}; "
                    f"choose one of {sorted(ACTIVATIONS)}"
                )
            act = ACTIVATIONS[act]
        self.linear_cls, self.activation_cls, self.bias = linear_cls, act, bias

    def __call__(
        self, in_f: int, out_f: int, is_first: bool = False, is_last: bool = False
    ) -> LinearBlock:
        return LinearBlock(
            in_f, out_f, self.linear_cls, self.activation_cls, self.bias, is_first, is_last
        )


class SirenBlockFactory(BaseBlockFactory):
    """SIREN layers; ``w0_initial`` (default: ``w0``) is the first layer's frequency."""

    def __init__(
        self,
        linear_cls: type[nn.Linear] = nn.Linear,
        w0: float = 30.0,
        bias: bool = True,
        w0_initial: float | None = None,
    ) -> None:
        if w0 <= 0 or (w0_initial is not None and w0_initial <= 0):
            raise ValueError(
                f"SirenBlockFactory: w0 must be > 0, got w0={w0}, w0_initial={w0_initial}"
            )
        self.linear_cls, self.w0, self.bias = linear_cls, w0, bias
        self.w0_initial = w0 if w0_initial is None else w0_initial

    def __call__(
        self, in_f: int, out_f: int, is_first: bool = False, is_last: bool = False
    ) -> LinearBlock:
        w0 = self.w0_initial if is_first else self.w0
        return SirenLinear(in_f, out_f, self.linear_cls, w0, self.bias, is_first, is_last)
