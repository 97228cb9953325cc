"""Validation metrics (torchmetrics) and image grids for a trained GON.

Usage:
    metrics, grids = evaluate(model, coords, val_images, fit_images, rows=8)
    save_png(grids["recon"], run_dir / "recon.png")
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gon import GON, fit_gaussian, likelihood_bounds
from gon.core.bounds import bits_per_dim
from gon.core.variational import GaussianPosterior

# metric name -> True if higher is better; the objectives that `optimized_metric` may name
HIGHER_IS_BETTER = {"val/mse": False, "val/psnr": True, "val/ssim": True, "val/bce": False,
                    "val/nelbo": False}
SAMPLE_SEED = 1234  # fixed noise, so sample grids of successive evaluations are comparable
# the likelihood metrics of a model with an ELBO (nats per image; bpd: bits per dimension)
LIKELIHOOD = ("nelbo", "nelbo_bpd", "nelbo_recon", "nelbo_kl", "iw_nelbo", "iw_bpd")
SSIM_SIGMA = 1.5  # torchmetrics' Gaussian SSIM window: sigma 1.5, 11 px (pads 5 px each side)


def ssim_sigma(side: int) -> float:
    """The SSIM window's sigma for images whose shorter side is `side` px: torchmetrics' 1.5
    (an 11 px window, which its reflection padding allows from 6 px up); below that, the sigma
    whose window is the largest odd size that fits (1 px on 2 px images, 3 px on 3-4, 5 px on 5).
    torchmetrics sizes a Gaussian window 2 * int(3.5 sigma + 0.5) + 1 and ignores kernel_size."""
    if side >= 6:
        return SSIM_SIGMA
    window = side if side % 2 else side - 1
    return (window - 1) / 7 + 0.01  # 2 * int(3.5 sigma + 0.5) + 1 == window


def is_better(metric: str, new: float, old: float | None) -> bool:
    """Whether `new` improves on `old` (None: nothing yet) for `metric`."""
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if HIGHER_IS_BETTER[metric] else new < old


@torch.no_grad()
def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """The PSNR (dB, data range 1) of each image (N, H, W, C), averaged over the images: the
    one PSNR of the project (validation, evaluation, the claims' trials)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio  # slow import: see below

    x, y = recon.permute(0, 3, 1, 2).float(), target.permute(0, 3, 1, 2).float()
    return peak_signal_noise_ratio(x, y, data_range=1.0, dim=(1, 2, 3)).item()


@torch.no_grad()
def image_metrics(recon: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MSE, PSNR and SSIM (per image, averaged) and BCE of images (N, H, W, C) in [0, 1]."""
    # imported here: torchmetrics' image package pulls in scipy and torchvision (seconds)
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = recon.permute(0, 3, 1, 2).float(), target.permute(0, 3, 1, 2).float()
    eps = 1e-6
    return {
        "val/mse": F.mse_loss(x, y).item(),
        "val/psnr": psnr(recon, target),
        "val/ssim": structural_similarity_index_measure(
            x, y, data_range=1.0, sigma=ssim_sigma(min(x.shape[-2:]))
        ).item(),
        "val/bce": F.binary_cross_entropy(x.clamp(eps, 1 - eps), y).item(),
    }


def image_grid(images: torch.Tensor, rows: int, min_px: int = 32) -> np.ndarray:
    """Tile images (N, H, W, C) in [0, 1] into a uint8 RGB array, `rows` images a row, each
    upscaled (nearest) to at least min_px and framed by a 2-pixel grey border."""
    x = images.detach().float().clamp(0, 1).permute(0, 3, 1, 2).cpu()  # (N, C, H, W)
    scale = max(1, math.ceil(min_px / min(x.shape[-2:])))
    x = F.interpolate(x, scale_factor=scale, mode="nearest").expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    cols, lines = min(rows, n), math.ceil(n / rows)
    grid = torch.full((3, lines * (h + 2) + 2, cols * (w + 2) + 2), 0.5)
    for i in range(n):
        top, left = (i // cols) * (h + 2) + 2, (i % cols) * (w + 2) + 2
        grid[:, top : top + h, left : left + w] = x[i]
    return grid.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()


RECON_LAYOUT = "rows 1, 3, 5, ...: originals; the row below each: their reconstructions"


def recon_grid(originals: torch.Tensor, recons: torch.Tensor, rows: int) -> np.ndarray:
    """The one recon grid (training's recon.png, evaluation's, the page's): `rows` images a
    row, a row of originals (N, H, W, C) above the row of their reconstructions (RECON_LAYOUT),
    rows // 2 such pairs of rows (at least one)."""
    cols = min(rows, len(originals))
    n = min(max(1, rows // 2) * cols, len(originals)) // cols * cols
    pairs = torch.stack([originals[:n], recons[:n]])  # (2, n, H, W, C)
    pairs = pairs.unflatten(1, (-1, cols)).transpose(0, 1).flatten(0, 2)  # alternate rows
    return image_grid(pairs, cols)


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write a uint8 (H, W, C) array as a PNG."""
    Image.fromarray(array).save(path)


def render(model: GON, z: torch.Tensor, size: tuple[int, ...], batch: int = 256) -> torch.Tensor:
    """Images (N, *size, C) from latents (N, d), ``batch`` at a time."""
    return torch.cat([model.render(chunk, size) for chunk in z.split(batch)])


def _generator(device: torch.device) -> torch.Generator:
    """A generator seeded with SAMPLE_SEED: the same noise for every model, global RNG untouched.
    """
    return torch.Generator(device=device).manual_seed(SAMPLE_SEED)


@torch.no_grad()
def likelihood_metrics(model: GaussianPosterior, coords: torch.Tensor, images: torch.Tensor,
                       samples: int = 64, batch_size: int = 256,
                       train_batch: int | None = None) -> dict[str, float]:
    """The negative ELBO (nats per image and bits per dimension), its reconstruction and KL
    parts, and the importance-weighted bound with ``samples`` codes, averaged over images."""
    b = likelihood_bounds(model, coords, images, samples, batch_size, train_batch,
                          generator=_generator(images.device))
    nelbo, iw, dims = b["nelbo"].mean().item(), b["iw_nelbo"].mean().item(), images[0].numel()
    return {"nelbo": nelbo, "nelbo_bpd": bits_per_dim(nelbo, dims),
            "nelbo_recon": b["recon"].mean().item(), "nelbo_kl": b["kl"].mean().item(),
            "iw_nelbo": iw, "iw_bpd": bits_per_dim(iw, dims)}


def sample_codes(model: GON, z_fit: torch.Tensor, n: int) -> torch.Tensor:
    """n decoder inputs for the sample grid, with SAMPLE_SEED: from the prior N(0, I) of a model
    that has one (the variational GON), else from a Gaussian fitted to the latents z_fit."""
    if model.has_elbo:
        return model.prior_sample(n, generator=_generator(z_fit.device)).to(z_fit.dtype)
    return sample_latents(z_fit, n)


def sample_latents(z_fit: torch.Tensor, n: int) -> torch.Tensor:
    """n latents from a Gaussian fitted to z_fit (N, d), drawn with SAMPLE_SEED (the same
    noise for every model) without touching the global RNG."""
    gauss = fit_gaussian(z_fit)
    with torch.random.fork_rng(devices=[z_fit.device.index or 0] if z_fit.is_cuda else []):
        torch.manual_seed(SAMPLE_SEED)
        return gauss.sample((n,)).to(z_fit.dtype)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    coords: torch.Tensor,
    val_images: torch.Tensor,
    fit_images: torch.Tensor,
    rows: int = 8,
    batch_size: int = 256,
    train_batch: int | None = None,
    grids: bool = True,
    iw_samples: int = 64,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Score reconstructions of held-out images; grid them and samples (from a Gaussian fit,
    or the prior of a variational model, which also gets the ``LIKELIHOOD`` metrics).

    Returns (metrics, {"recon": recon_grid (originals and reconstructions in alternate rows),
    "samples": ...});
    with grids=False the metrics only (and {}).
    Does not touch the global RNG, so evaluating does not change the training that follows.
    """
    was_training = model.training
    model.eval()
    try:
        size = tuple(val_images.shape[1:3])
        z = model.encode(coords, val_images, batch_size, train_batch)
        recon = render(model, z, size, batch_size)
        metrics = image_metrics(recon, val_images)
        if model.has_elbo:
            metrics |= {f"val/{k}": v for k, v in likelihood_metrics(
                model, coords, val_images, iw_samples, batch_size, train_batch).items()}
        if not grids:
            return metrics, {}
        z_fit = model.encode(coords, fit_images, batch_size, train_batch)
        samples = model.render(sample_codes(model, z_fit, rows * rows), size)
        grids = {"recon": recon_grid(val_images, recon, rows),
                 "samples": image_grid(samples, rows)}
    finally:
        model.train(was_training)
    return metrics, grids
