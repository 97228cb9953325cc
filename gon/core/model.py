"""Gradient Origin Networks (Bond-Taylor & Willcocks, ICLR 2021).

A sample's latent is the negative gradient of the inner loss at the origin (paper eq. 3):
    z = z0 - grad_z L_inner(f(c, z), x) |_{z = z0},   z0 = 0 (or a learned origin)
and the outer loss L(f(c, z), x) is backpropagated through that gradient (second order).

    >>> gon = GON(decoder)
    >>> z, loss_inner = gon.infer_latents(coords, images)  # (1, H, W, 2), (B, H, W, C)
    >>> recon = gon(coords, z)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gon.core.coords import make_grid
from gon.core.decoder import ImplicitDecoder
from gon.core.latents import affine_applies, affine_latents_autograd

LOSSES = ("bce", "mse")
REDUCTIONS = ("sum", "mean")
PIXEL_REDUCTIONS = ("mean", "sum")
STEP_SIZES = ("fixed", "scalar", "per_dim")


class GON(nn.Module):
    """Wraps an :class:`ImplicitDecoder` with the gradient-origin encoder.

    Args:
        latent_updates: k, the gradient steps from the origin z0 to the latent.
        loss, latent_reduction: the loss, and how the inner loss combines the batch ("sum":
            a latent ignores its batch; "mean": the official code's, latents scale with 1/B).
        pixel_reduction: a sample's loss is the "mean" over its pixels and channels (default)
            or their "sum" (the official Implicit-GON code's summed squared error).
        step_size: alpha_i in z_{i+1} = z_i - alpha_i * grad_z L_inner(z_i): "fixed" (1, the
            paper), or learned (meta-SGD): "scalar" (one per step, (k, 1)) or "per_dim" (one
            per step and latent dimension, (k, d)); learned ones start at 1, so a learned
            k=1 GON starts as the fixed one.
        second_order: False cuts the second-order path: z = z0 - alpha * stopgrad(grad), so
            the outer loss reaches the weights only through the decoder at that latent (the
            "detached" baseline).
    """

    amortised = False  # the latent comes from gradients of the decoder, not from an encoder net

    stochastic = False  # True where the latent step draws noise (VariationalGON): autograd only

    has_elbo = False  # True for the models with a Gaussian posterior (GaussianPosterior)

    def set_step(self, step: int) -> None:
        """Training step ``step`` is next; a no-op here (GaussianPosterior's KL warm-up uses it),
        so a training loop calls it on every model."""

    def __init__(
        self,
        decoder: ImplicitDecoder,
        latent_updates: int = 1,
        learn_origin: bool = False,
        loss: str = "bce",
        latent_reduction: str = "sum",
        pixel_reduction: str = "mean",
        step_size: str = "fixed",
        second_order: bool = True,
    ) -> None:
        super().__init__()
        for name, value, choices in [("loss", loss, LOSSES),
                                     ("latent_reduction", latent_reduction, REDUCTIONS),
                                     ("pixel_reduction", pixel_reduction, PIXEL_REDUCTIONS),
                                     ("step_size", step_size, STEP_SIZES)]:
            if value not in choices:
                raise ValueError(f"GON: unknown {name}={value!r}; choose one of {choices}")
        if latent_updates < 1:
            raise ValueError(f"GON: latent_updates must be >= 1, got {latent_updates}")
        self.decoder = decoder
        self.latent_updates = int(latent_updates)
        self.loss_name = loss
        self.latent_reduction = latent_reduction
        self.pixel_reduction = pixel_reduction
        self.step_size = step_size
        self.second_order = bool(second_order)
        origin = torch.zeros(1, decoder.latent_dim)
        if learn_origin:
            self.init_latent = nn.Parameter(origin)
        else:
            self.register_buffer("init_latent", origin)
        if step_size != "fixed":  # alpha (k, 1) or (k, d), meta-SGD's learned step sizes
            width = 1 if step_size == "scalar" else decoder.latent_dim
            self.step_sizes = nn.Parameter(torch.ones(self.latent_updates, width))

    def alpha(self, i: int) -> torch.Tensor | float:
        """Step size of latent step i: 1.0, or the learned (1, 1) or (1, d) row (steps past
        latent_updates, when encoding with more steps than trained, reuse the last row)."""
        if self.step_size == "fixed":
            return 1.0
        i = min(i, self.latent_updates - 1)
        return self.step_sizes[i : i + 1]

    # -- losses --------------------------------------------------------------------------------
    @property
    def sigmoid_logits(self) -> bool:
        """BCE is computed from logits (stable) when the decoder ends in a sigmoid."""
        act = self.decoder.final_activation
        return act is torch.sigmoid or act is F.sigmoid or isinstance(act, nn.Sigmoid)

    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, a mean (or sum) over its pixels and channels: (B, *S, C) -> (B,).
        """
        if self.loss_name == "bce" and self.sigmoid_logits:
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        elif self.loss_name == "bce":
            loss = F.binary_cross_entropy(self.decoder.activate(logits), target, reduction="none")
        else:
            loss = (self.decoder.activate(logits) - target).square()
        loss = loss.flatten(1)
        return loss.sum(1) if self.pixel_reduction == "sum" else loss.mean(1)

    def inner_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed over the batch ("sum": a latent ignores the rest of its batch) or averaged."""
        per_sample = self.per_sample_loss(logits, target)
        return per_sample.sum() if self.latent_reduction == "sum" else per_sample.mean()

    def outer_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the per-sample loss (pixel mean, or sum)."""
        if self.loss_name == "bce" and self.sigmoid_logits and self.pixel_reduction == "mean":
            # every sample has the same pixels: the mean of their means is one mean (one op)
            return F.binary_cross_entropy_with_logits(logits, target)
        return self.per_sample_loss(logits, target).mean()

    def inner_objective(
        self, coords: torch.Tensor, z: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The inner loss at latents z (B, d), whose gradient gives the next latent."""
        return self.inner_loss(self.decoder.logits(coords, z), target)

    def outer_objective(
        self, coords: torch.Tensor, z: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The outer loss at the inferred latents z (B, d): what training minimises."""
        return self.outer_loss(self.decoder.logits(coords, z), target)

    # -- the gradient origin -------------------------------------------------------------------
    def get_init_latent(self, n: int) -> torch.Tensor:
        return self.init_latent.expand(n, -1)

    def check_shapes(self, coords: torch.Tensor, target: torch.Tensor) -> None:
        dec = self.decoder
        spatial = coords.shape[1:-1]
        ok = (
            coords.dim() >= 3
            and coords.shape[-1] == dec.pos_encoder.in_dim
            and target.dim() == coords.dim()
            and coords.shape[0] in (1, target.shape[0])
            and target.shape[1:-1] == spatial
            and target.shape[-1] == dec.out_dim
        )
        if not ok:
            raise ValueError(
                "GON: coords (1 or B, *spatial, in_dim) and target (B, *spatial, out_dim) do not "
                f"fit: coords {tuple(coords.shape)}, target {tuple(target.shape)}, "
                f"in_dim={dec.pos_encoder.in_dim}, out_dim={dec.out_dim}"
            )

    def infer_latents(
        self, coords: torch.Tensor, target: torch.Tensor, steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z after ``steps`` (default latent_updates) gradient steps from the origin, and the
        last inner loss."""
        self.check_shapes(coords, target)
        return self.latent_steps(coords, target, self.get_init_latent(target.shape[0]),
                                 steps=steps)

    def latent_steps(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        z: torch.Tensor,
        first: int = 0,
        loss_inner: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps first .. steps-1 (default latent_updates-1) from z (B, d) (the closed-form
        path passes its first step's latent and first=1); (z, the last step's inner loss)."""
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            for i in range(first, self.latent_updates if steps is None else steps):
                loss_inner = self.inner_objective(coords, z, target)
                # eq. 3; create_graph so the outer loss reaches the weights through grad_z
                (grad,) = torch.autograd.grad(loss_inner, z, create_graph=self.second_order)
                if not self.second_order:  # detached: no path from grad_z to the weights
                    grad = grad.detach()
                z = z - self.alpha(i) * grad
        return z, loss_inner

    def forward(self, coords: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(coords, latent)

    # -- inference helpers ---------------------------------------------------------------------
    def encode(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        batch_size: int = 256,
        train_batch: int | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Latents of ``target`` (N, ...) -> (N, d) without a graph; fine under ``no_grad``.
        ``steps``: latent steps to take (default latent_updates, as trained; more or fewer
        give the encoding curve, learned step sizes extended by their last value).

        With ``latent_reduction="mean"`` a latent is the gradient of a batch mean, so it scales
        with 1/batch: pass ``train_batch`` (the training batch size) to get the latents the
        decoder was trained on, whatever ``batch_size`` (the chunk encoded at once) is.
        Samples do not interact otherwise; with "sum" the chunk size does not matter.
        """
        self.check_shapes(coords, target)
        steps = self.latent_updates if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"GON.encode: steps must be >= 1, got {steps}")
        # one step: the closed form, no autograd graph over the batch needed
        closed_form = affine_applies(self, coords) and steps == 1
        rescale = self.latent_reduction == "mean" and train_batch is not None
        if rescale and not closed_form:
            batch_size = train_batch  # several steps: encode in padded batches of that size

        out = []
        for chunk in target.split(batch_size):
            n = len(chunk)
            with torch.enable_grad():
                if closed_form:
                    z, _ = affine_latents_autograd(self, coords, chunk)
                    if rescale:  # one step: z = z0 - g / n, and training had z0 - g / train_batch
                        z = self.init_latent + (z - self.init_latent) * n / train_batch
                else:
                    if rescale and n < batch_size:
                        pad = chunk.new_zeros(batch_size - n, *chunk.shape[1:])
                        chunk = torch.cat([chunk, pad])
                    z, _ = self.infer_latents(coords, chunk, steps)
            out.append(z[:n].detach())
        return torch.cat(out)

    @torch.no_grad()
    def render(self, latent: torch.Tensor, size: tuple[int, ...] | int) -> torch.Tensor:
        """Images (B, *size, C) at any resolution from latents (B, d)."""
        size = (size,) * self.decoder.pos_encoder.in_dim if isinstance(size, int) else size
        coords = make_grid(*size, device=latent.device, dtype=latent.dtype)
        return self.decoder(coords, latent)
