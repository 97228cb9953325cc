"""The one training loop: seeding, the batch order, and the steps, shared by the training job
(gon.app.train.job) and the budgeted trials (gon.app.claims.trials, benchmarks/quality.py).

Usage:
    seed_all(cfg.seed)
    model, optimizer, step_fn = build_training(cfg, coords, channels=c, image_size=(h, w))
    for step, losses in train_steps(model, optimizer, step_fn, images, cfg.train.batch_size,
                                    cfg.seed, start=0):
        ...  # the caller logs, evaluates, checkpoints and decides when to stop (break)

Each step of number s (1, 2, ...): the model's KL weight for s (set_step), one TrainStep on the
batch of step s, the learning rates of step s (train.lr_schedule: ``lr_factor``), one optimizer
step. The batches of an epoch are a function of (seed, epoch)
alone, so a resumed run draws exactly the batches of an uninterrupted one.

``divergence(losses, psnrs)`` is the one rule for a run that diverged (the claims leave such a
seed out of their intervals and count it; a run's metrics.json flags it for the evaluation).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from gon import GON, TrainStep
from gon.app.build import build_model, build_optimizer
from gon.app.config import LR_SCHEDULES
from gon.app.train.compiling import build_step

# A run diverged if a training loss is not finite, if its latest loss is this many times its
# lowest (an Adam step that blew the weights up: a trained GON's loss stays within ~2x of its
# best from batch to batch), or if its latest PSNR lies this many dB below its own earlier best
# (3 dB: the MSE doubled; the issue-23 case fell 6 dB between two seeds of one recipe).
DIVERGED_LOSS_FACTOR = 10.0
DIVERGED_PSNR_DROP_DB = 3.0
LOSS_WINDOW = 10  # losses are compared as means over windows of this many consecutive values


def divergence(losses: Sequence[float], psnrs: Sequence[float] = (),
               window: int = LOSS_WINDOW) -> str | None:
    """Why a run diverged, or None: `losses` are its training losses in step order (per step,
    or means per logging interval with window=1), `psnrs` its PSNRs (dB) in step order (a
    validation curve, or the scores at its budgets). The rule: a non-finite loss; the mean of
    the last window of losses above DIVERGED_LOSS_FACTOR x the lowest window mean; the last
    PSNR more than DIVERGED_PSNR_DROP_DB below the best before it (or not finite)."""
    if bad := [i for i, x in enumerate(losses) if not math.isfinite(x)]:
        return f"non-finite loss at value {bad[0] + 1} of {len(losses)}"
    means = [math.fsum(losses[i:i + window]) / len(losses[i:i + window])
             for i in range(0, len(losses), window)]
    if means and means[-1] > DIVERGED_LOSS_FACTOR * min(means) and min(means) > 0:
        return (f"loss exploded: last {means[-1]:.4g} > {DIVERGED_LOSS_FACTOR:g} x its lowest "
                f"{min(means):.4g}")
    if psnrs and not math.isfinite(psnrs[-1]):
        return f"PSNR {psnrs[-1]}"
    best = max((x for x in psnrs[:-1] if math.isfinite(x)), default=-math.inf)
    if psnrs and psnrs[-1] < best - DIVERGED_PSNR_DROP_DB:
        return (f"PSNR fell to {psnrs[-1]:.2f} dB from its best {best:.2f} dB "
                f"(> {DIVERGED_PSNR_DROP_DB:g} dB)")
    return None


def lr_factor(schedule: str, step: int, horizon: int) -> float:
    """The factor of every learning rate at training step `step` (1, 2, ...): 1 ("constant"),
    or a half cosine from 1 at step 1 towards 0 at step `horizon` (train.max_steps), held at
    its last value past it ("cosine": SGDR's annealing without restarts; MAML++ anneals its
    meta-optimizer so, for the oscillation of meta-learned inner steps). A function of the
    step alone: a resumed run gets exactly the rates of an uninterrupted one."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (min(step, horizon) - 1) / max(horizon, 1)))
    raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {LR_SCHEDULES}")


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in `epoch`: a function of (seed, epoch) alone, so a
    resumed run draws exactly the batches of an uninterrupted one."""
    return torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))


def batches(images: torch.Tensor, batch_size: int, seed: int,
            start: int = 0) -> Iterator[torch.Tensor]:
    """The batches (B, H, W, C) of steps start+1, start+2, ...; an epoch's last partial batch
    is dropped."""
    n, b = len(images), batch_size
    per_epoch = n // b
    epoch, perm = -1, None
    for i in itertools.count(start):
        if i // per_epoch != epoch:
            epoch = i // per_epoch
            perm = epoch_permutation(n, seed, epoch).to(images.device)
        j = i % per_epoch
        yield images[perm[j * b : (j + 1) * b]]


def build_training(cfg: DictConfig, coords: torch.Tensor, channels: int,
                   image_size: tuple[int, int], compile: bool | None = None,
                   state: dict | None = None, sweep_dir: Path | None = None,
                   ) -> tuple[GON, torch.optim.Adam, TrainStep]:
    """cfg's model (on coords' device), its optimizer and its TrainStep (train.step_path;
    compiled per train.compile unless `compile` says otherwise: compiling.build_step, with
    the sweep's compile cache in a multirun's `sweep_dir`); `state` (a checkpoint's "model"
    and "optimizer") is loaded into them."""
    t = cfg.train
    model = build_model(cfg, channels=channels, image_size=image_size).to(coords.device)
    optimizer = build_optimizer(cfg, model)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    step_fn = build_step(model, coords, t, sweep_dir, compile)
    return model, optimizer, step_fn


def train_steps(model: GON, optimizer: torch.optim.Optimizer, step_fn: TrainStep,
                images: torch.Tensor, batch_size: int, seed: int, start: int = 0,
                pixels: Callable[[torch.Tensor], torch.Tensor] | None = None,
                schedule: str = "constant", horizon: int = 1,
                ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Train step start+1, start+2, ... for as long as the caller iterates; yields (step,
    losses) after each optimizer step (the losses as tensors: reading them syncs a device).
    `pixels(batch)` turns a batch into what is trained on (a binarisation draw); every param
    group's lr is its "initial_lr" (build_optimizer's) x lr_factor(schedule, step, horizon)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    for step, batch in enumerate(batches(images, batch_size, seed, start), start + 1):
        model.set_step(step)  # e.g. the KL weight of this step (a warm-up); a no-op for most
        losses = step_fn(batch if pixels is None else pixels(batch))  # writes p.grad
        if schedule != "constant":
            factor = lr_factor(schedule, step, horizon)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
        optimizer.step()
        yield step, losses
