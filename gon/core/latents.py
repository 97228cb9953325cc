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


def logit_gradient(
    model: nn.Module,
    f0: torch.Tensor,
    grad: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(r0, dr): the gradient of a sample's loss w.r.t. its logits f0 (1, *S, C) is r0 + dr * x,
    elementwise, for a target x (affine in x for BCE and MSE).

    BCE on logits, in closed form: (sigmoid(f) - x) / M (M = pixels times channels; 1 under a
    pixel sum), so dr is the constant -1 / M. Any other loss: two gradients at the targets 0 and
    1, taken with ``grad(fn, f0)`` (``torch.func`` or autograd, as the caller runs).
    """
    if model.loss_name == "bce" and model.sigmoid_logits:
        scale = 1.0 if model.pixel_reduction == "sum" else 1.0 / f0.numel()
        return torch.sigmoid(f0) * scale, -scale
    r0, r1 = (
        grad(lambda f, t=t: model.per_sample_loss(f, torch.full_like(f, t)).sum(), f0)
        for t in (0.0, 1.0)
    )
    return r0, r1 - r0


def _affine_from_jacobian(
    model: nn.Module,
    jac: torch.Tensor,
    f0: torch.Tensor,
    r0: torch.Tensor,
    dr: torch.Tensor | float,
    target: torch.Tensor,
    z0: torch.Tensor,
    alpha: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z = z0 - alpha J^T r(x) (/ B under "mean") for the batch: jac (M, d), f0/r0 (1, *S, C),
    dr (1, *S, C) or a number (``logit_gradient``), alpha 1.0 or the learned step size (1, 1)
    or (1, d). The inner loss is returned as a value (no graph: training never differentiates
    it)."""
    b, m = target.shape[0], f0.numel()
    # dl/df is elementwise affine in the target: r(x) = r(0) + dr x
    if isinstance(dr, float):
        resid = torch.add(r0.reshape(1, m), target.reshape(b, m), alpha=dr)  # (B, M)
    else:
        resid = r0.reshape(1, m) + dr.reshape(1, m) * target.reshape(b, m)
    g = resid @ jac  # (B, d); per_sample_loss already divides by M (or sums over pixels)
    if not model.second_order:  # detached: z = z0 - alpha * stopgrad(grad)
        g = g.detach()
    if model.latent_reduction == "mean":
        g = g / b
    if not (isinstance(alpha, float) and alpha == 1.0):
        g = alpha * g
    with torch.no_grad():
        loss_inner = model.inner_loss(f0.expand_as(target), target)
    return z0 - g, loss_inner


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
    r0, dr = logit_gradient(model, f0, lambda fn, f: grad(fn)(f))
    jac = jac.reshape(f0.numel(), -1)
    return _affine_from_jacobian(model, jac, f0, r0, dr, target, z0, alpha)


def _autograd_grad(fn: Callable[[torch.Tensor], torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(fn(f), f, create_graph=True)[0]


def affine_latents_autograd(
    model: nn.Module,
    coords: torch.Tensor,
    target: torch.Tensor,
    weights: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    part: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``affine_latents`` with plain autograd: far fewer dispatcher layers in eager mode.

    Every pixel gets its own copy of the origin, v (N, d), and the grid is run as N pixels each
    paired with its own latent, so d(sum_n f_c(c_n, v_n))/dv_n is row n of J for channel c.
    The graph is kept (``create_graph``): the outer backward runs through J, f0 and r.
    ``weights`` and ``part`` (``decoder.block_weights()`` and the grid's ``coordinate_part``,
    (N, H)) are computed here unless the caller, which reuses them, passes them.
    """
    dec = model.decoder
    z0 = model.init_latent  # (1, d)
    with torch.enable_grad():
        weights = dec.block_weights() if weights is None else weights
        if part is None:
            part = dec.coordinate_part(coords.reshape(-1, coords.shape[-1]), weights)  # (N, H)
        v = z0.expand(part.shape[0], -1)  # (N, d): a graph node when the origin is learned
        if not v.requires_grad:
            v = v.requires_grad_(True)  # a leaf view of the buffer, no copy
        out = dec.logits_from(part, v, weights, paired=True)  # (N, C)
        if out.shape[-1] == 1:
            (jac,) = torch.autograd.grad(out, v, torch.ones_like(out), create_graph=True)
        else:  # one backward per channel: (N, C, d) -> (N C, d), pixel-major like f0
            jac = torch.stack(
                [torch.autograd.grad(out[:, c].sum(), v, create_graph=True)[0]
                 for c in range(out.shape[-1])],
                dim=1,
            ).flatten(0, 1)
        f0 = out.reshape(1, *target.shape[1:])  # (1, *S, C)
        r0, dr = logit_gradient(model, f0, _autograd_grad)
        return _affine_from_jacobian(model, jac, f0, r0, dr, target, z0, model.alpha(0))
