"""The closed-form latent of one gradient step from a shared origin (the "affine" fast path;
with k > 1 steps it gives the first step, and the others run on autograd from it).

With one latent step from the origin z0, a deterministic decoder and one coordinate grid, the
inner gradient of sample b is J^T r(x_b) / M: J = d logits / dz at the origin is the same for
every image, and r, the loss's gradient w.r.t. the logits, is elementwise affine in the target
for BCE and MSE. The batch's latents are one product R J (R: (B, M)). Since the decoder maps
each pixel on its own, J's rows are per-pixel gradients: one backward per output channel
through a single image instead of a forward and a backward over the whole batch.

``model`` below is a :class:`gon.core.model.GON` (typed as a module: that class imports this
one for ``GON.encode``, and ``TrainStep`` imports both).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, jacrev, vmap


def affine_applies(model: nn.Module, coords: torch.Tensor) -> bool:
    """The first latent step is an affine map of the image (a gradient origin, deterministic
    decoder, no noise, one grid): with one step that is the latent; with k > 1 the other
    k - 1 steps start from it."""
    deterministic = not (model.decoder.dropout and model.training)
    return not (model.amortised or model.stochastic) and deterministic and coords.shape[0] == 1


def _affine_from_jacobian(
    model: nn.Module,
    jac: torch.Tensor,
    f0: torch.Tensor,
    r0: torch.Tensor,
    r1: torch.Tensor,
    target: torch.Tensor,
    z0: torch.Tensor,
    alpha: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z = z0 - alpha J^T r(x) (/ B under "mean") for the batch: jac (M, d), f0/r0/r1
    (1, *S, C), alpha 1.0 or the learned step size (1, 1) or (1, d)."""
    b, m = target.shape[0], f0.numel()
    # dl/df is elementwise affine in the target for BCE and MSE: r(x) = r(0) + (r(1) - r(0)) x
    resid = r0.reshape(1, m) + (r1 - r0).reshape(1, m) * target.reshape(b, m)  # (B, M)
    g = resid @ jac  # (B, d); per_sample_loss already divides by M (or sums over pixels)
    if not model.second_order:  # detached: z = z0 - alpha * stopgrad(grad)
        g = g.detach()
    z = z0 - alpha * (g if model.latent_reduction == "sum" else g / b)
    return z, model.inner_loss(f0.expand_as(target), target)


def affine_latents(
    model: nn.Module,
    logits: Callable[..., torch.Tensor],
    coords: torch.Tensor,
    target: torch.Tensor,
    z0: torch.Tensor,
    alpha: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, loss_inner) of one gradient step from the shared origin z0 (1, d), in closed form,
    written with ``torch.func`` (composes with ``grad`` and ``torch.compile``); alpha is the
    step size (1.0, or the learned (1, 1) or (1, d) row).

    ``logits(z, c)`` is the decoder's pre-activation output for latents z (B, d) at coords c.
    """
    # J[n] = d f(c_n, z) / dz: every pixel's output depends on z only through its own path
    # through the MLP, so one backward per channel through a single image gives all rows
    pixels = coords.reshape(-1, coords.shape[-1])  # (N, in): one grid shared by the batch

    def pixel(c: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = logits(v.view(1, -1), c.view(1, 1, -1)).reshape(-1)  # (in,), (d,) -> (C,)
        return out, out

    jac, f0 = vmap(jacrev(pixel, argnums=1, has_aux=True), in_dims=(0, None))(pixels, z0[0])
    f0 = f0.reshape(1, *target.shape[1:])  # (1, *S, C): the output at the origin, for every image
    r0, r1 = (
        grad(lambda f, t=t: model.per_sample_loss(f, torch.full_like(f, t)).sum())(f0)
        for t in (0.0, 1.0)
    )
    jac = jac.reshape(f0.numel(), -1)
    return _affine_from_jacobian(model, jac, f0, r0, r1, target, z0, alpha)


def affine_latents_autograd(
    model: nn.Module, coords: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``affine_latents`` with plain autograd: far fewer dispatcher layers in eager mode.

    Every pixel gets its own copy of the origin, v (N, d), and the grid is run as a batch of N
    one-pixel images, so d(sum_n f_c(c_n, v_n))/dv_n is row n of J for channel c. The graph is
    kept (``create_graph``): the outer backward runs through J, f0 and r.
    """
    z0 = model.init_latent  # (1, d)
    n = coords[0].numel() // coords.shape[-1]
    pixels = coords.reshape(n, 1, coords.shape[-1])  # (N, 1, in)
    with torch.enable_grad():
        v = z0.expand(n, -1)  # (N, d): a graph node when the origin is learned
        if not v.requires_grad:
            v = v.clone().requires_grad_(True)
        out = model.decoder.logits(pixels, v)  # (N, 1, C)
        channels = out.shape[-1]
        jac = torch.stack(
            [
                torch.autograd.grad(out[:, 0, c].sum(), v, create_graph=True)[0]  # (N, d)
                for c in range(channels)
            ],
            dim=1,
        )  # (N, C, d)
        f0 = out.reshape(1, *target.shape[1:])  # (1, *S, C)
        r0, r1 = (
            torch.autograd.grad(
                model.per_sample_loss(f0, torch.full_like(f0, t)).sum(), f0, create_graph=True
            )[0]
            for t in (0.0, 1.0)
        )
        jac = jac.reshape(-1, jac.shape[-1])
        return _affine_from_jacobian(model, jac, f0, r0, r1, target, z0, model.alpha(0))
