"""Score every trained variant of a sweep on the test split: reconstructions, samples,
interpolations, super-resolution, a linear probe, likelihoods and the encoding curve
(gon.app.evaluate.cli runs it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from gon import GON, make_grid, slerp
from gon.app.build import build_model, folder_args
from gon.app.config import ConfigError, stored_config
from gon.app.data.datasets import binarize, data_key, load_splits
from gon.app.metrics import (
    image_grid,
    image_metrics,
    likelihood_metrics,
    psnr,
    recon_grid,
    render,
    sample_codes,
)
from gon.app.reliability.checkpoint import CheckpointError, load_checkpoint, save_json
from gon.app.stats import interval
from gon.app.train.resume import ASIDE
from gon.app.variants import Variant, run_name, variant_name

log = logging.getLogger(__name__)


SUPER_RES = 4  # the super-resolution grid renders at 4x the native size


CHUNK = 1024  # images encoded at once (the per-chunk cost is mostly one Jacobian)


def unfinished(run_dir: Path, ckpt: dict, cfg: DictConfig) -> str | None:
    """Why the run is not a finished one, or None: its metrics.json and checkpoint must agree
    on a step that reached train.max_steps (an extension killed midway leaves a newer
    checkpoint beside the old metrics.json)."""
    try:
        step = json.loads((run_dir / "metrics.json").read_text()).get("step")
    except (OSError, ValueError, AttributeError) as e:
        return f"metrics.json unreadable ({e})"
    if step != ckpt["step"] or ckpt["step"] < cfg.train.max_steps:
        return (f"metrics.json is at step {step}, the checkpoint at {ckpt['step']}, of "
                f"train.max_steps={cfg.train.max_steps}; resume its training to finish it")
    return None


# the encoding curve is measured on the first this many test images (2k encodings of each)
ENCODING_CURVE_IMAGES = 1024
ENCODING_CURVE_FILE = "encoding_curve.json"


def find_runs(sweep_dir: Path) -> list[Path]:
    """The run dirs (holding checkpoint.pt and metrics.json) under a sweep dir, in order; not
    the runs that train.resume=false set aside."""
    runs = [p.parent for p in sweep_dir.rglob("checkpoint.pt")
            if (p.parent / "metrics.json").exists() and ASIDE not in p.parent.name]
    # numbered trial dirs in numeric order (2 before 10)
    return sorted(runs, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s)
                                       for s in p.parts])


def encode(model: GON, coords: torch.Tensor, images: torch.Tensor, batch: int,
           steps: int | None = None) -> torch.Tensor:
    """Latents (N, d) as training made them, `batch` being the training batch size (`steps`
    latent steps: default as trained)."""
    if steps is None:  # amortised and variational models take no `steps`
        return model.encode(coords, images, batch_size=CHUNK, train_batch=batch)
    return model.encode(coords, images, batch_size=CHUNK, train_batch=batch, steps=steps)


def encoding_curve(model: GON, coords: torch.Tensor, images: torch.Tensor, batch: int,
                   trained: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Test PSNR of `images` (N, H, W, C) encoded with k' = 1 .. 2k latent steps, k the trained
    model.latent_updates (learned step sizes extended by their last value; fixed: 1): the
    COIN++ table for a GON. [] for a model without latent steps (amortised or variational).
    `trained`: the renders of `images` encoded as trained (k' = k), if already made (the same
    call, so the same values): not made again."""
    if model.amortised or model.has_elbo:
        return []
    size = tuple(images.shape[1:3])

    def renders(k: int) -> torch.Tensor:
        if k == model.latent_updates and trained is not None:
            return trained
        return render(model, encode(model, coords, images, batch, k), size)

    return [{"steps": k, "psnr": psnr(renders(k), images)}
            for k in range(1, 2 * model.latent_updates + 1)]


def encoding_rows(variants: list[Variant]) -> list[dict]:
    """One row per (variant, k') of the runs that did not diverge: the trained k, the mean test
    PSNR over seeds with its 95 % interval, n and the per-seed values."""
    by: dict[str, list[Variant]] = {}
    for v in variants:
        if v.encoding_curve and not v.metrics.get("diverged"):
            by.setdefault(v.name, []).append(v)
    rows = []
    for name, runs in sorted(by.items()):
        for i, point in enumerate(runs[0].encoding_curve):
            values = [r.encoding_curve[i]["psnr"] for r in runs]
            iv = interval(values)
            rows.append({"variant": name, "trained_steps": runs[0].config["model"][
                "latent_updates"], "steps": point["steps"], "psnr_mean": iv["mean"],
                "psnr_ci95_low": iv["ci95_low"], "psnr_ci95_high": iv["ci95_high"],
                "n": iv["n"], "seeds": [r.seed for r in runs], "psnr_per_seed": values,
                "images": int(runs[0].metrics.get("encoding_curve_images", 0))})
    return rows


def write_encoding_curve(variants: list[Variant], out_dir: Path) -> Path:
    """<out_dir>/encoding_curve.json: ``encoding_rows`` (a DVC plot: x steps, y psnr_mean)."""
    path = out_dir / ENCODING_CURVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, encoding_rows(variants), sort_keys=False)  # atomic, as every report file
    return path


def linear_probe(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor,
                 y_test: torch.Tensor) -> float:
    """Test accuracy of a logistic regression fitted on standardised train latents."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(z_train.cpu().double().numpy(), y_train.cpu().numpy())
    return float(probe.score(z_test.cpu().double().numpy(), y_test.cpu().numpy()))


def upscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of images (N, H, W, C), to show the native pixels."""
    x = F.interpolate(images.permute(0, 3, 1, 2), scale_factor=factor, mode="nearest")
    return x.permute(0, 2, 3, 1)


def make_grids(model: GON, test: torch.Tensor, recon: torch.Tensor, z_test: torch.Tensor,
               z_train: torch.Tensor, rows: int) -> dict[str, np.ndarray]:
    """The four PNG grids of a variant (uint8 RGB arrays), and the cross-variant strip's rows:
    the first `rows` test images ("originals", the same for every variant of a sweep) and this
    variant's reconstructions of them ("strip")."""
    size, n = tuple(test.shape[1:3]), min(rows, len(test))
    z_samples = sample_codes(model, z_train, rows * rows).to(z_test.dtype)
    # slerp: a line per pair (image i -> image i + n): original, `rows` renders, original
    a, b = z_test[:n], z_test[n : 2 * n]
    m = len(b)
    path = slerp(a[:m], b, torch.linspace(0, 1, rows)).transpose(0, 1)  # (m, rows, d)
    lines = render(model, path.flatten(0, 1), size).unflatten(0, (m, rows))
    slerp_rows = torch.cat([test[:m, None], lines, test[n : n + m, None]], 1).flatten(0, 1)
    # super-resolution: originals and native renders (pixels enlarged), then renders at 4x
    hi = tuple(SUPER_RES * s for s in size)
    sr = torch.cat([upscale(test[:n], SUPER_RES), upscale(recon[:n], SUPER_RES),
                    model.render(z_test[:n], hi)])
    return {
        "recon": recon_grid(test, recon, rows),
        "samples": image_grid(render(model, z_samples, size), rows),
        "slerp": image_grid(slerp_rows, rows + 2),
        "superres": image_grid(sr, n),
        "originals": image_grid(test[:n], n),
        "strip": image_grid(recon[:n], n),
    }


def load_test_train(cfg: DictConfig, device: torch.device, cache: dict) -> list[tuple]:
    """[(test images, labels or None), (train, ...)] of the trial's dataset, read once each;
    with dataset.binarize, both splits binarised by the fixed draw (as the test split in
    training; a dynamic run's probe and sampling fit see that one draw of the train split)."""
    d = cfg.dataset
    mode = d.get("binarize", False)
    key = (d.name, d.image_size, d.get("source"), cfg.paths.data_dir, bool(mode))
    if key not in cache:
        root = Path(cfg.paths.data_dir)
        expect = data_key(d.name, root / "raw", **folder_args(cfg))  # what the run trained on
        splits = load_splits(d.name, ("test", "train"), root / "prepared", d.image_size, device,
                             expect=expect)
        if mode:
            splits = [(binarize(x, s), y) for (x, y), s in zip(splits, ("test", "train"),
                                                               strict=True)]
        cache[key] = splits
    return cache[key]


@torch.no_grad()
def evaluate_run(run_dir: Path, device: torch.device, probe_images: int, rows: int,
                 cache: dict, drawn: set[str] | None = None,
                 iw_samples: int = 64) -> Variant | None:
    """Load a trial's checkpoint and score it on the test split; draw its grids unless its
    variant is in `drawn` (then add it there); None for an unfinished run (warned)."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    if ckpt is None or "config" not in ckpt:
        raise FileNotFoundError(f"{run_dir}: no checkpoint.pt with a config")
    try:
        cfg = stored_config(ckpt["config"], f"{run_dir / 'checkpoint.pt'}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if (why := unfinished(run_dir, ckpt, cfg)) is not None:
        log.warning("%s: not scored: %s", run_dir, why)
        return None
    torch.manual_seed(cfg.seed)
    (test, y_test), (train, y_train) = load_test_train(cfg, device, cache)
    model = build_model(cfg, channels=test.shape[-1], image_size=test.shape[1:3]).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    coords, batch = make_grid(*test.shape[1:3], device=device), cfg.train.batch_size
    tic = time.perf_counter()
    z_test = encode(model, coords, test, batch)
    z_train = encode(model, coords, train[:probe_images], batch)
    recon = render(model, z_test, tuple(test.shape[1:3]))
    metrics = {k.removeprefix("val/"): v for k, v in image_metrics(recon, test).items()}
    if model.has_elbo:  # nats per image, bits per dim, the IW bound
        metrics |= likelihood_metrics(model, coords, test, iw_samples, CHUNK, batch)
    if y_test is not None and y_train is not None:
        metrics["probe_acc"] = linear_probe(z_train, y_train[:probe_images], z_test, y_test)
    name, drawn = variant_name(cfg), set() if drawn is None else drawn
    images = {} if name in drawn else make_grids(model, test, recon, z_test, z_train, rows)
    drawn.add(name)
    curve_images = test[:ENCODING_CURVE_IMAGES]  # the whole test split: its renders are known
    encodings = encoding_curve(model, coords, curve_images, batch,
                               recon if len(curve_images) == len(test) else None)
    if encodings:
        metrics["encoding_curve_images"] = len(curve_images)
    metrics |= {"steps": int(ckpt["step"]), "params": sum(p.numel() for p in model.parameters()),
                "diverged": float(bool(json.loads((run_dir / "metrics.json").read_text())
                                       .get("diverged")))}  # 1.0: left out of the comparison
    log.debug("%s evaluated in %.1f s", run_dir, time.perf_counter() - tic)
    curve = [{"step": r["step"], "loss_outer": r["train/loss_outer"],
              "loss_inner": r["train/loss_inner"]}
             for r in ckpt.get("history", []) if "train/loss_outer" in r]
    if not curve and ckpt.get("last_train"):  # no history stored: the final training losses
        last = ckpt["last_train"]
        curve = [{"step": ckpt["step"], "loss_outer": last["train/loss_outer"],
                  "loss_inner": last["train/loss_inner"]}]
    return Variant(name, run_dir, OmegaConf.to_container(cfg), metrics, images, curve,
                   list(ckpt.get("val_curve", [])), encodings)


def evaluate_sweep(sweep_dir: Path, device: torch.device, probe_images: int = 5000,
                   rows: int = 8, iw_samples: int = 64) -> list[Variant]:
    """Every run of the sweep, scored; the grids are drawn for the first run of each variant
    (its lowest trial number), the one the report shows."""
    runs = find_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs (checkpoint.pt + metrics.json) in {sweep_dir}")
    cache: dict = {}
    variants: list[Variant] = []
    seen: dict[str, set[int]] = {}
    drawn: set[str] = set()
    for run_dir in runs:
        v = evaluate_run(run_dir, device, probe_images, rows, cache, drawn, iw_samples)
        if v is None:  # unfinished (warned)
            continue
        if v.seed in seen.setdefault(v.name, set()):
            log.warning("%s: a second run of %s with seed %d (pooled as a replicate)", run_dir,
                        v.name, v.seed)
        seen[v.name].add(v.seed)
        bad = [k for k, x in v.metrics.items() if not math.isfinite(x)]
        log.info("%s (%s): %s%s", run_name(v.config), run_dir, " ".join(
            f"{k}={x:.4g}" for k, x in v.metrics.items()), f"  NON-FINITE: {bad}" if bad else "")
        variants.append(v)
    if not variants:
        raise FileNotFoundError(f"no finished runs in {sweep_dir} (see the warnings above)")
    # by name, not by trial number: the numbers a variant gets differ between a sweep that ran
    # through and one that was resumed, and the report's order must not
    return sorted(variants, key=lambda v: (v.name, v.seed))
