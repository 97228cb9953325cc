"""Train one GON job and return its validation objective (`optimized_metric`).

Usage:
    python -m gon.train                                   # digits, SIREN, about a minute on a CPU
    python -m gon.train block=modulated encoding=nerf loss=mse train.max_steps=3000
    python -m gon.train -m block=siren,modulated          # one job per value
    python -m gon.train hydra.run.dir=outputs/a           # rerun: resumes, or returns if finished

The run dir gets checkpoint.pt (plain dict, atomic, every train.ckpt_every steps and at the end),
metrics.json, recon.png, samples.png, and wandb/ (offline unless WANDB_MODE says otherwise).
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gon import TrainStep, make_grid
from gon.builders import ConfigError, build_model, resolve_device, validate_config
from gon.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_json,
    set_rng_state,
)
from gon.data import DatasetError, load_dataset, prepare
from gon.metrics import evaluate, is_better, save_png
from gon.tracking import tracking

log = logging.getLogger(__name__)

# a checkpoint resumes only a run with the same values here (other keys may change between calls)
RESUME_KEYS = ("seed", "dataset", "block", "encoding", "loss", "latent_reduction", "model",
               "train.batch_size", "train.lr")


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


def _multirun_job() -> int | None:
    """This job's number in a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get().job.num
    return None


def load_images(cfg: DictConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) images (N, H, W, C) on `device`, preparing the dataset on first use."""
    d, root = cfg.dataset, Path(cfg.paths.data_dir)
    extra = {"source": d.source, "size": d.image_size} if d.name == "image_folder" else {}
    prepare(d.name, raw_root=root / "raw", out_root=root / "prepared", **extra)
    train, test = (
        load_dataset(d.name, split, root / "prepared", d.image_size, device)[0]
        for split in ("train", "test")
    )
    return train, test


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of step `step`'s batch (1-based): a function of (seed, step) alone, so resume is
    exact. Each epoch is a fresh permutation; its last partial batch is dropped."""
    per_epoch = n // batch_size
    epoch, j = divmod(step - 1, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return torch.from_numpy(perm[j * batch_size : (j + 1) * batch_size])


def _changed_keys(old: dict, new: dict) -> list[str]:
    old_c, new_c = OmegaConf.create(old), OmegaConf.create(new)
    return [
        f"{k}: {OmegaConf.select(old_c, k)} -> {OmegaConf.select(new_c, k)}"
        for k in RESUME_KEYS
        if OmegaConf.select(old_c, k) != OmegaConf.select(new_c, k)
    ]


def train(cfg: DictConfig) -> float:
    """Run (or resume, or skip if finished) one training job; return cfg.optimized_metric."""
    validate_config(cfg)
    t, metric = cfg.train, cfg.optimized_metric
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.json"
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)

    ckpt = load_checkpoint(ckpt_path) if t.resume else None
    if ckpt is not None:
        if changed := _changed_keys(ckpt["config"], config):
            raise ConfigError(
                f"{ckpt_path} belongs to a different run ({'; '.join(changed)}); use another "
                "hydra.run.dir, or train.resume=false to start over"
            )
        done = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        step_done = ckpt["step"]
        if done.get("step") == step_done >= t.max_steps and metric in done:
            log.info("%s is finished at step %d: %s=%.4f", run_dir, step_done, metric, done[metric])
            return float(done[metric])

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, _multirun_job())
    train_images, val_images = load_images(cfg, device)
    n, h, w, c = train_images.shape
    if t.batch_size > n:
        raise ConfigError(f"train.batch_size={t.batch_size} exceeds the {n} training images")
    val_images, fit_images = val_images[: cfg.eval.num_images], train_images[: cfg.eval.fit_images]
    coords = make_grid(h, w, device=device)  # (1, H, W, 2)
    model = build_model(cfg, channels=c).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    step, best, last_train = 0, None, {}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best, last_train = ckpt["step"], ckpt["best"], ckpt["last_train"]
        set_rng_state(ckpt["rng"])
        log.info("resuming %s from step %d", run_dir, step)
    train_step = TrainStep(model, coords, compile=t.compile)
    log.info("training %s on %s (%d images %dx%dx%d) on %s, %d params", " ".join(
        f"{a}={cfg[a].name}" for a in ("block", "encoding", "loss", "latent_reduction")),
        cfg.dataset.name, n, h, w, c, device, sum(p.numel() for p in model.parameters()))

    def checkpoint(wandb_id: str | None) -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "rng": rng_state(), "config": config, "best": best, "last_train": last_train,
            "wandb_id": wandb_id})

    def run_eval(tracker) -> dict[str, float]:
        nonlocal best
        metrics, grids = evaluate(model, coords, val_images, fit_images, rows=cfg.eval.grid_rows)
        if not math.isfinite(metrics[metric]):
            raise DivergenceError(f"{metric} is {metrics[metric]} at step {step}; stopping")
        if is_better(metric, metrics[metric], best):
            best = metrics[metric]
        for name, grid in grids.items():
            save_png(grid, run_dir / f"{name}.png")
        tracker.log({**metrics, f"{metric}_best": best}, step=step)
        tracker.log_images(grids, step=step)
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    report_every = t.log_every * max(1, t.max_steps // (10 * t.log_every))  # ~10 lines a run
    tty = sys.stderr.isatty()
    with tracking(cfg, ckpt.get("wandb_id") if ckpt else None) as tracker, logging_redirect_tqdm():
        bar = tqdm(total=t.max_steps, initial=step, disable=not tty, unit="step",
                   dynamic_ncols=True, desc=f"{cfg.block.name}/{cfg.dataset.name}")
        pending: list[torch.Tensor] = []  # per-step losses, read at most once per log interval
        tic, tic_step = time.perf_counter(), step
        while step < t.max_steps:
            step += 1
            batch = train_images[batch_indices(n, t.batch_size, cfg.seed, step).to(device)]
            losses = train_step(batch)
            optimizer.step()
            pending.append(torch.stack([losses["loss_inner"], losses["loss_outer"]]))
            bar.update(1)
            end = step == t.max_steps
            if not (step % t.log_every == 0 or step % t.eval_every == 0
                    or step % t.ckpt_every == 0 or end):
                continue
            window = torch.stack(pending).cpu()  # (K, 2): one device sync per interval
            pending.clear()
            bad = (~torch.isfinite(window)).any(1).nonzero().flatten().tolist()
            if bad:
                inner, outer = window[bad[0]].tolist()
                raise DivergenceError(
                    f"loss became non-finite at step {step - len(window) + 1 + bad[0]} "
                    f"(loss_inner={inner}, loss_outer={outer}); stopping. Try a lower train.lr "
                    f"(now {t.lr})")
            speed = (step - tic_step) * t.batch_size / (time.perf_counter() - tic)
            tic, tic_step = time.perf_counter(), step
            last_train = {"train/loss_inner": window[:, 0].mean().item(),
                          "train/loss_outer": window[:, 1].mean().item()}
            tracker.log({**last_train, "images_per_s": speed}, step=step)
            bar.set_postfix(loss=f"{last_train['train/loss_outer']:.4f}", img_s=f"{speed:.0f}")
            if not tty and (step % report_every == 0 or end):
                log.info("step %d/%d loss_outer=%.4f loss_inner=%.4f %.0f img/s", step,
                         t.max_steps, last_train["train/loss_outer"],
                         last_train["train/loss_inner"], speed)
            if step % t.eval_every == 0 and not end:
                run_eval(tracker)
            if step % t.ckpt_every == 0 and not end:
                checkpoint(tracker.id)
        bar.close()
        metrics = run_eval(tracker)
        checkpoint(tracker.id)
        result = {**last_train, **metrics, f"{metric}_best": best, "step": step,
                  "optimized_metric": metric, "objective": metrics[metric]}
        save_json(metrics_path, result)
        tracker.summary(result)
    return float(metrics[metric])


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: the objective for sweepers, or one clear error line and exit 1."""
    try:
        return train(cfg)
    except (ConfigError, CheckpointError, DatasetError, DivergenceError) as e:
        log.error("%s", e)
        if _multirun_job() is None:
            sys.exit(1)
        raise  # in a multirun the job is recorded as failed and the sweep carries on


if __name__ == "__main__":
    main()
