"""The variational GON (cwkx/GON, Variational-GON.py): a GON whose inner loss is a negative ELBO.

The latent is still the negative gradient at the origin, but of the whole negative ELBO. Two
linear heads map that latent z to the posterior q(c | x) = N(mu(z), diag exp(logvar(z))) over
the decoder's input c ("the code"), c = mu + sigma * eps is reparameterised inside the decoder:
    NELBO(z; x) = -log p(x | c) + beta * KL(q(c | x) || N(0, I)),   eps ~ N(0, I)
    z = z0 - grad_z sum_b NELBO(z0; x_b)    (inner: at the origin; "mean" divides by B)
    loss_outer = mean_b NELBO(z_b; x_b)      (outer: at the inferred latent, second order)
with p(x | c) a Bernoulli per pixel (BCE from the decoder's logits, summed per image: nats per
image). Samples come from the prior: c ~ N(0, I) straight into the decoder (after the heads).
``VAE`` is its baseline: the same heads, reparameterisation and decoder behind an amortised
encoder h = E(x) (the autoencoder baseline's), trained on the same negative ELBO.

    >>> vgon = VariationalGON(decoder)                   # the decoder ends in a sigmoid
    >>> z, loss_inner = vgon.infer_latents(coords, images)  # (B, d): -grad_z NELBO at z0
    >>> mu, logvar = vgon.heads(z)                        # q(c | x)
    >>> loss = vgon.outer_objective(coords, z, images)    # mean NELBO (nats / image)
    >>> samples = vgon.render(vgon.prior_sample(16), 8)    # (16, 8, 8, C), c ~ N(0, I)

Two latent spaces: ``infer_latents`` returns z (the heads' input; ``forward(coords, z)`` decodes
its mean), while ``encode`` returns the posterior mean mu, a code, which is what ``render``,
``prior_sample``, slerp and the probes use. In ``eval()`` mode the latent step uses eps = 0 and
is deterministic, as the official code's reparameterisation returns mu outside training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gon.core.decoder import ImplicitDecoder
from gon.core.encoders import Autoencoder
from gon.core.model import GON

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in nats: (B, d) -> (B,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag exp(logvar)) in nats, summed over the last dim: (..., d) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).square() * torch.exp(-logvar)).sum(-1)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(x | c) of independent Bernoulli pixels, summed per image: (B, *S, C) -> (B,).

    A true (discrete) negative log-likelihood only for binary targets; on grey levels it is
    the BCE, which is not a normalised distribution over grey images.
    """
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def kl_warmup(step: int, kl_weight: float, warmup_steps: int) -> float:
    """beta at training step ``step`` (1, 2, ...): linear from 0 to kl_weight over warmup_steps."""
    if warmup_steps <= 0:
        return float(kl_weight)
    return float(kl_weight) * min(1.0, max(0, step) / warmup_steps)


class GaussianHeads(nn.Module):
    """Two linear heads, latent (B, d) -> (mu, logvar), each (B, d) (official fc21, fc22)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"GaussianHeads: latent_dim must be >= 1, got {latent_dim}")
        self.mu = nn.Linear(latent_dim, latent_dim)
        self.logvar = nn.Linear(latent_dim, latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), self.logvar(h)


class GaussianPosterior:
    """The ELBO of a model whose latent h feeds ``self.heads`` (a :class:`GaussianHeads`) and
    whose codes feed ``self.decoder``: shared by the variational GON and the VAE baseline.

    A mixin for :class:`GON` subclasses (listed before GON); ``encode`` calls the next class's
    ``encode`` for h. ``beta`` is the current KL weight (``set_step`` applies the warm-up).
    """

    stochastic = True  # the latent draws noise: TrainStep runs plain autograd only
    has_elbo = True  # likelihood_bounds, prior_sample and the KL warm-up (set_step) apply
    heads: GaussianHeads
    decoder: ImplicitDecoder
    latent_reduction: str
    kl_weight: float
    kl_warmup_steps: int
    beta: float

    def init_posterior(self, kl_weight: float, kl_warmup_steps: int) -> None:
        """Check the model and the KL settings; add the heads (called by the constructors)."""
        check_variational(self, kl_weight, kl_warmup_steps)
        self.heads = GaussianHeads(self.decoder.latent_dim)
        self.kl_weight, self.kl_warmup_steps = float(kl_weight), int(kl_warmup_steps)
        self.set_step(0)

    def set_step(self, step: int) -> None:
        """Use the KL weight of training step ``step`` (the linear warm-up, if any)."""
        self.beta = kl_warmup(step, self.kl_weight, self.kl_warmup_steps)

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """eps for the reparameterisation: N(0, I) in training, 0 (the mean) in eval mode."""
        return torch.randn_like(like) if self.training else torch.zeros_like(like)

    def nelbo_parts(
        self, coords: torch.Tensor, h: torch.Tensor, target: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log p(x | c), KL) per image (B,), c = mu + sigma * eps, (mu, logvar) = heads(h)."""
        mu, logvar = self.heads(h)  # (B, d) each
        code = mu + torch.exp(0.5 * logvar) * eps  # reparameterised inside the decoder
        return bernoulli_nll(self.decoder.logits(coords, code), target), gaussian_kl(mu, logvar)

    def per_sample_nelbo(
        self, coords: torch.Tensor, h: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """recon + beta * KL per image (B,), with fresh noise (zero in eval mode)."""
        recon, kl = self.nelbo_parts(coords, h, target, self.noise(h))
        return recon + self.beta * kl

    def inner_objective(
        self, coords: torch.Tensor, h: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The NELBO at h (the KL term included), summed or averaged over the batch: the inner
        loss whose gradient at the origin is the variational GON's latent (eq. 3 of GON)."""
        per_sample = self.per_sample_nelbo(coords, h, target)  # (B,)
        return per_sample.sum() if self.latent_reduction == "sum" else per_sample.mean()

    def outer_objective(
        self, coords: torch.Tensor, h: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The outer loss: the batch's mean negative ELBO (nats per image) at the latent h."""
        return self.per_sample_nelbo(coords, h, target).mean()

    def forward(self, coords: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Reconstructions decoded at the posterior mean: h (B, d) -> (B, *S, C)."""
        return self.decoder(coords, self.heads(h)[0])

    def posterior(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        batch_size: int = 256,
        train_batch: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(c | x) of images (N, ...): (mu, logvar), each (N, d), without a graph."""
        h = super().encode(coords, target, batch_size, train_batch)  # type: ignore[misc]
        with torch.no_grad():
            return self.heads(h)

    def encode(
        self,
        coords: torch.Tensor,
        target: torch.Tensor,
        batch_size: int = 256,
        train_batch: int | None = None,
    ) -> torch.Tensor:
        """The posterior means mu (N, d): the codes that ``render`` decodes (eval: deterministic).
        """
        return self.posterior(coords, target, batch_size, train_batch)[0]

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes from the prior N(0, I): (n, d), on the model's device."""
        w = self.heads.mu.weight
        return torch.randn(n, w.shape[0], generator=generator, device=w.device, dtype=w.dtype)


class VariationalGON(GaussianPosterior, GON):
    """The variational GON: the gradient origin of the negative ELBO (see the module docstring).

    Args:
        decoder: an implicit decoder ending in a sigmoid (the Bernoulli likelihood's logits).
        latent_updates, learn_origin, latent_reduction: as for :class:`GON`; "mean" is the
            official code's (the inner NELBO averaged over the batch).
        kl_weight: the KL term's weight beta (1.0: the ELBO; the metrics always use 1.0).
        kl_warmup_steps: beta rises linearly from 0 to kl_weight over this many training steps
            (0: no warm-up); call ``set_step`` before each step.
    """

    def __init__(
        self,
        decoder: ImplicitDecoder,
        latent_updates: int = 1,
        learn_origin: bool = False,
        latent_reduction: str = "sum",
        kl_weight: float = 1.0,
        kl_warmup_steps: int = 0,
    ) -> None:
        super().__init__(decoder, latent_updates=latent_updates, learn_origin=learn_origin,
                         loss="bce", latent_reduction=latent_reduction)
        self.init_posterior(kl_weight, kl_warmup_steps)


class VAE(GaussianPosterior, Autoencoder):
    """The variational GON's baseline: the autoencoder's encoder h = E(x), the same two heads
    and reparameterisation, the same decoder, trained end to end on the negative ELBO (amortised
    inference: no gradient origin, no second-order term).

    ``infer_latents`` returns h = E(x) and, without a graph, the batch's summed NELBO at h
    (nothing trains on it; it is logged as ``loss_inner``).
    """

    def __init__(
        self,
        decoder: ImplicitDecoder,
        encoder: nn.Module,
        kl_weight: float = 1.0,
        kl_warmup_steps: int = 0,
    ) -> None:
        super().__init__(decoder, encoder, loss="bce")
        self.init_posterior(kl_weight, kl_warmup_steps)


def check_variational(model: GON, kl_weight: float, kl_warmup_steps: int) -> None:
    """Raise ValueError unless the model can carry a Bernoulli ELBO with these settings."""
    name = type(model).__name__
    if not model.sigmoid_logits:
        raise ValueError(f"{name}: the decoder must end in a sigmoid (the Bernoulli "
                         "likelihood's logits); final_activation=torch.sigmoid")
    if not (math.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(f"{name}: kl_weight must be a number >= 0, got {kl_weight}")
    if int(kl_warmup_steps) != kl_warmup_steps or kl_warmup_steps < 0:
        raise ValueError(f"{name}: kl_warmup_steps must be an integer >= 0, got "
                         f"{kl_warmup_steps}")
