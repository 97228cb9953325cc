"""Bounds on log p(x) of a model with a Gaussian posterior (VariationalGON, the VAE baseline).

For each image x, with q = q(c | x) = N(mu, diag sigma^2) from the model's posterior and k codes
c_i ~ q drawn with ``generator``:
    recon    = -(1/k) sum_i log p(x | c_i)                  (Monte Carlo, nats per image)
    kl       = KL(q || N(0, I))                              (closed form)
    nelbo    = recon + kl                                    (-ELBO; ELBO <= log p(x))
    iw_nelbo = -log (1/k) sum_i p(x | c_i) p(c_i) / q(c_i)  (IWAE, Burda et al. 2016; tighter,
                                                              ELBO <= IW_k <= log p(x))
in nats per image; divide by D ln 2 (D = pixels x channels) for bits per dimension. They bound
the log-likelihood of a discrete distribution only for binary images (``bernoulli_nll``).

    >>> b = likelihood_bounds(vgon.eval(), coords, test_images, samples=64)   # dict of (N,)
    >>> bits_per_dim(b["nelbo"].mean().item(), test_images[0].numel())
"""

from __future__ import annotations

import math

import torch

from gon.core.variational import GaussianPosterior, bernoulli_nll, gaussian_kl, log_normal

PIXEL_SAMPLES = 2**20  # decoder pixel evaluations per chunk (memory ~ this x hidden width)


def bits_per_dim(nats: float, dims: int) -> float:
    """Nats per image -> bits per dimension."""
    return nats / (dims * math.log(2))


@torch.no_grad()
def likelihood_bounds(
    model: GaussianPosterior,
    coords: torch.Tensor,
    images: torch.Tensor,
    samples: int = 64,
    batch_size: int = 256,
    train_batch: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image recon, kl, nelbo and iw_nelbo (each (N,), nats) with ``samples`` codes each.

    ``batch_size`` and ``train_batch`` are passed to the model's ``posterior`` (its encoder);
    the codes are drawn from ``generator`` (on the images' device), else the global RNG.
    """
    if samples < 1:
        raise ValueError(f"likelihood_bounds: samples must be >= 1, got {samples}")
    mu, logvar = model.posterior(coords, images, batch_size, train_batch)  # (N, d) each
    k, d = samples, mu.shape[1]
    chunk = max(1, PIXEL_SAMPLES // (k * images[0].numel()))
    out: dict[str, list[torch.Tensor]] = {"recon": [], "kl": [], "nelbo": [], "iw_nelbo": []}
    for x, m, lv in zip(images.split(chunk), mu.split(chunk), logvar.split(chunk), strict=True):
        n = len(x)
        eps = torch.randn(k, n, d, generator=generator, device=m.device, dtype=m.dtype)
        code = m + torch.exp(0.5 * lv) * eps  # (k, n, d)
        logits = model.decoder.logits(coords, code.flatten(0, 1))  # (k n, *S, C)
        log_px = -bernoulli_nll(logits, x.expand(k, *x.shape).flatten(0, 1)).view(k, n)
        log_w = log_px + log_normal(code, torch.zeros_like(code), torch.zeros_like(code)) \
            - log_normal(code, m, lv)  # (k, n): log p(x, c_i) - log q(c_i | x)
        recon, kl = -log_px.mean(0), gaussian_kl(m, lv)
        out["recon"].append(recon)
        out["kl"].append(kl)
        out["nelbo"].append(recon + kl)
        out["iw_nelbo"].append(math.log(k) - torch.logsumexp(log_w, 0))
    return {name: torch.cat(parts) for name, parts in out.items()}
