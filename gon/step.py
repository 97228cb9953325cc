"""One GON training step: latents from the origin, outer loss, gradients of every parameter.

    >>> step = TrainStep(gon, coords)          # coords (1, H, W, 2)
    >>> losses = step(images)                  # fills p.grad; then optimizer.step()
"""

from __future__ import annotations

import torch

from gon.model import GON


def gon_step(
    model: GON, coords: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, loss_inner, loss_outer) for a batch; loss_outer's graph runs through grad_z (eq. 3)."""
    z, loss_inner = model.infer_latents(coords, target)
    loss_outer = model.outer_loss(model.decoder.logits(coords, z), target)
    return z, loss_inner, loss_outer


class TrainStep:
    """Computes the losses of a batch and writes the gradient of the outer loss into ``p.grad``."""

    def __init__(self, model: GON, coords: torch.Tensor, compile: bool = False) -> None:
        self.model, self.coords, self.compile = model, coords, compile
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        _, loss_inner, loss_outer = gon_step(self.model, self.coords, target)
        grads = torch.autograd.grad(loss_outer, self.params, allow_unused=True)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = torch.zeros_like(p) if g is None else g
        return {"loss_inner": loss_inner.detach(), "loss_outer": loss_outer.detach()}
