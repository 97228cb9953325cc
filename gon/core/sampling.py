"""Sampling and interpolation in latent space: a full-covariance Gaussian and slerp.

>>> dist = fit_gaussian(latents)          # latents (N, d) from GON.encode
>>> imgs = gon.render(dist.sample((64,)), (32, 32))
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal


def fit_gaussian(latents: torch.Tensor, eps: float = 1e-5) -> MultivariateNormal:
    """Maximum-likelihood Gaussian over latents (N, d); ``eps`` * mean variance on the diagonal."""
    if latents.dim() != 2 or latents.shape[0] < 2:
        raise ValueError(f"fit_gaussian: latents must be (N >= 2, d), got {tuple(latents.shape)}")
    x = latents.detach().double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    jitter = eps * cov.diagonal().mean().clamp_min(1e-12)
    cov = cov + jitter * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return MultivariateNormal(mean.to(latents.dtype), cov.to(latents.dtype))


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents (..., d); a (T,) ``t`` gives (T, ..., d).

    Falls back to linear interpolation where the two latents are (nearly) parallel.
    """
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    tt = t.reshape(t.shape + (1,) * z0.dim())  # (T, 1, ..., 1) or scalar
    n0 = z0 / z0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n1 = z1 / z1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    omega = torch.acos((n0 * n1).sum(-1, keepdim=True).clamp(-1.0, 1.0))  # (..., 1)
    so = torch.sin(omega)
    small = so.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(so), so)
    a = torch.where(small, 1 - tt, torch.sin((1 - tt) * omega) / safe)
    b = torch.where(small, tt, torch.sin(tt * omega) / safe)
    return a * z0 + b * z1
