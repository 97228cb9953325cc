"""One GON training step: latents from the origin, outer loss, gradients of every parameter.

    >>> step = TrainStep(gon, coords, compile=True)   # coords (1, H, W, 2)
    >>> losses = step(images)                         # fills p.grad; then optimizer.step()

Three ways to the same gradients, chosen per model (``TrainStep.path`` says which runs):
- ``autograd``: ``GON.infer_latents`` with ``create_graph=True``, then a double backward. It is
  the reference, handles every configuration and is the one to debug with.
- ``functional``: the step written with ``torch.func``: the latent is ``-grad(inner)(z0)`` and
  the outer gradient ``grad(outer)`` over the parameters. Unlike autograd's double backward this
  form can be compiled with ``torch.compile``.
- ``affine`` (a shared origin, no dropout, one coordinate grid; any step size alpha, and
  detached too, z = z0 - alpha * J^T r / M): the first latent step in closed form (with k > 1
  steps, the other k - 1 then run as in ``autograd`` from it). The
  inner gradient of sample b is J^T r(x_b) / M, with J = d logits / dz at the origin, the same
  for every image, and r the loss's gradient w.r.t. the logits, elementwise affine in the
  target for BCE and MSE. The batch's latents are then one product R J (R: (B, M)). Since the
  decoder maps each pixel on its own, J's rows are per-pixel gradients: one backward pass per
  output channel through a single image, instead of a forward and a backward over the whole
  batch; the outer backward then runs through that small graph. Eager, it runs on plain
  autograd (``affine_latents_autograd``); compiled, on ``torch.func`` (``affine_latents``,
  ``vmap(jacrev)``), whose nested transforms cost more per operation when not compiled.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from gon.core.latents import affine_applies, affine_latents, affine_latents_autograd
from gon.core.model import GON

log = logging.getLogger(__name__)


def gon_step(
    model: GON, coords: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, loss_inner, loss_outer) for a batch; loss_outer's graph runs through grad_z (eq. 3)."""
    z, loss_inner = model.infer_latents(coords, target)
    return z, loss_inner, model.outer_objective(coords, z, target)


class _Logits(nn.Module):
    """``forward = decoder.logits``, so ``functional_call`` can run it with given weights."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, coords: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.logits(coords, z)


def functional_losses(
    model: GON,
    view: _Logits,
    state: dict[str, torch.Tensor],
    coords: torch.Tensor,
    target: torch.Tensor,
    affine: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_outer, loss_inner) as a pure function of the module state (names as in the GON).

    ``view`` is ``_Logits(model.decoder)``, made once outside: building a module inside a
    compiled function breaks the graph.
    """
    dec_state = {k: v for k, v in state.items() if k.startswith("decoder.")}

    def logits(z: torch.Tensor, c: torch.Tensor = coords) -> torch.Tensor:  # (B, d) -> (B, *S, C)
        return functional_call(view, dec_state, (c, z))

    steps = state.get("step_sizes")  # (k, 1) or (k, d) when learned

    def alpha(i: int) -> torch.Tensor | float:
        return 1.0 if steps is None else steps[i : i + 1]

    if affine:  # the first step in closed form
        z, loss_inner = affine_latents(model, logits, coords, target, state["init_latent"],
                                       alpha(0))
    else:
        z = state["init_latent"].expand(target.shape[0], -1)  # (B, d): the origin
    for i in range(1 if affine else 0, model.latent_updates):
        # eq. 3 in torch.func form: grad is differentiable w.r.t. the closed-over weights
        g, loss_inner = grad_and_value(lambda v: model.inner_loss(logits(v), target))(z)
        if not model.second_order:  # detached: no path from grad_z to the weights
            g = g.detach()
        z = z - alpha(i) * g
    return model.outer_loss(logits(z), target), loss_inner


class TrainStep:
    """Computes a batch's losses and writes the outer loss's gradient into every ``p.grad``.

    Args:
        compile: run the functional step through ``torch.compile`` (first call compiles).
        path: "auto" (affine where it applies, else functional if compiling, else autograd),
            or one of "autograd", "functional", "affine".
        compile_mode: ``torch.compile``'s mode. "reduce-overhead" replays the step as a CUDA
            graph (one launch instead of hundreds: for small, launch-bound GPU steps); its
            outputs are then copied out, since the next replay overwrites them.
    """

    PATHS = ("auto", "autograd", "functional", "affine")
    COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

    def __init__(
        self,
        model: GON,
        coords: torch.Tensor,
        compile: bool = False,
        path: str = "auto",
        compile_mode: str = "default",
    ) -> None:
        if path not in self.PATHS:
            raise ValueError(f"TrainStep: unknown path={path!r}; choose one of {self.PATHS}")
        if compile_mode not in self.COMPILE_MODES:
            raise ValueError(
                f"TrainStep: unknown compile_mode={compile_mode!r}; choose one of "
                f"{self.COMPILE_MODES}"
            )
        if compile_mode != "default" and not compile:
            raise ValueError(
                f"TrainStep: compile_mode={compile_mode!r} needs compile=True "
                "(train.compile=true)"
            )
        if (model.amortised or model.stochastic) and (path in ("functional", "affine")
                                                      or compile):
            why = ("an amortised encoder (autoencoder)" if model.amortised
                   else f"{type(model).__name__} (its latent step draws noise)")
            raise ValueError(
                f"TrainStep: {why} trains on path='autograd' only, uncompiled; got "
                f"path={path!r}, compile={compile}"
            )
        affine = affine_applies(model, coords)
        if path == "affine" and not affine:
            raise ValueError(
                "TrainStep: path='affine' needs a gradient origin, no dropout and "
                "one coordinate grid shared by the batch"
            )
        if path == "auto":
            path = "affine" if affine else ("functional" if compile else "autograd")
        if compile and path == "autograd":
            raise ValueError(
                "TrainStep: autograd's double backward cannot be compiled; "
                "use path='functional' or 'affine' with compile=True"
            )
        self.model, self.coords, self.path, self.compile = model, coords, path, compile
        self.pixels = coords.reshape(-1, coords.shape[-1])  # (N, in) when one grid (affine)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.view = _Logits(model.decoder)
        fn = grad_and_value(self._losses, has_aux=True)
        self._fn = torch.compile(fn, mode=compile_mode) if compile else fn
        # CUDA graphs (inductor uses them on CUDA only) reuse their output memory on each replay
        self.cuda_graphs = (
            compile and compile_mode in ("reduce-overhead", "max-autotune") and coords.is_cuda
        )
        log.info("GON step: path=%s compiled=%s%s", path, compile,
                 f" mode={compile_mode}" if compile else "")

    def _losses(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        coords: torch.Tensor,
        target: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_losses(
            self.model, self.view, {**buffers, **params}, coords, target, self.path == "affine"
        )

    def autograd_grads(
        self, target: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor | None], torch.Tensor, torch.Tensor]:
        """(grads by name, loss_outer, loss_inner) with plain autograd (the eager engine)."""
        if self.path == "affine":
            self._check_affine()
            model, dec = self.model, self.model.decoder
            model.check_shapes(self.coords, target)
            # the weights (w0 folded in) and the grid's first-layer part, once for both passes
            weights = dec.block_weights()
            part = dec.coordinate_part(self.pixels, weights)  # (N, H)
            z, loss_inner = affine_latents_autograd(model, self.coords, target, weights, part)
            if model.latent_updates > 1:
                z, loss_inner = model.latent_steps(self.coords, target, z, 1, loss_inner)
            logits = dec.logits_from(part, z, weights).reshape(target.shape)  # (B, *S, C)
            loss_outer = model.outer_loss(logits, target)
        else:
            _, loss_inner, loss_outer = gon_step(self.model, self.coords, target)
        grads = torch.autograd.grad(loss_outer, self.params, allow_unused=True)
        return dict(zip(self.names, grads, strict=True)), loss_outer, loss_inner

    def functional_grads(
        self, target: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor | None], torch.Tensor, torch.Tensor]:
        """(grads by name, loss_outer, loss_inner) with ``torch.func`` (compiled if asked)."""
        self.model.check_shapes(self.coords, target)
        if self.path == "affine":
            self._check_affine()
        params = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}
        buffers = dict(self.model.named_buffers())
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        grads, (loss_outer, loss_inner) = self._fn(params, buffers, self.coords, target)
        if self.cuda_graphs:  # copy out of the graph's pool before the next replay reuses it
            grads = {k: None if g is None else g.clone() for k, g in grads.items()}
            loss_outer, loss_inner = loss_outer.clone(), loss_inner.clone()
        return grads, loss_outer, loss_inner

    def _check_affine(self) -> None:
        if not affine_applies(self.model, self.coords):
            raise RuntimeError("TrainStep: the affine path was chosen for a deterministic "
                               "model, but dropout is now active (model.train()); build the "
                               "TrainStep after switching modes")

    def __call__(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.path == "autograd" or (self.path == "affine" and not self.compile):
            grads, loss_outer, loss_inner = self.autograd_grads(target)
        else:
            grads, loss_outer, loss_inner = self.functional_grads(target)
        for n, p in zip(self.names, self.params, strict=True):
            g = grads[n]
            p.grad = torch.zeros_like(p) if g is None else g
        # values, no graph (the closed form's inner loss has none to cut)
        return {"loss_inner": loss_inner.detach() if loss_inner.requires_grad else loss_inner,
                "loss_outer": loss_outer.detach()}
