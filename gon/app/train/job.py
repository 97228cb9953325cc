"""Train one GON job and return its validation objective (`optimized_metric`).

Usage:
    python -m gon.train                                   # digits, SIREN, about a minute on a CPU
    python -m gon.train block=modulated encoding=nerf loss=mse train.max_steps=3000
    python -m gon.train -m block=siren,modulated          # one job per value
    python -m gon.train hydra.run.dir=outputs/a           # rerun: resumes, or returns if finished

The run dir gets checkpoint.pt (plain dict, atomic, every train.ckpt_every steps and at the end),
metrics.json (with `val_curve`: the validation metrics at train.curve_points budgets, and
`diverged`/`divergence`: train.loop.divergence of its losses and curve), timing.json
(`first_step_s`, compilation included), recon.png, samples.png, and wandb/ (offline unless
WANDB_MODE says otherwise)."""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from pathlib import Path

import optuna
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gon import make_grid
from gon.app.build import count_params, load_images
from gon.app.config import ConfigError, resolve_device, validate_config
from gon.app.data.datasets import DatasetError, binarize
from gon.app.metrics import evaluate, is_better, save_png
from gon.app.reliability.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_json,
    set_rng_state,
)
from gon.app.reliability.faults import Fault
from gon.app.reliability.lifecycle import RunDirBusy, hold_run_dir
from gon.app.tracking import Tracker, tracking
from gon.app.train.loop import build_training, divergence, seed_all, train_steps
from gon.app.train.resume import changed_keys, finished_objective, set_aside
from gon.app.train.slots import trial_device
from gon.app.trial_link import TrialLink, curve_steps
from gon.app.variants import variant_tags

log = logging.getLogger(__name__)


# a job of a sweep waits this long for another process to let go of its run dir (a trial
# re-queued after its sweeper died, while the old job is still winding down); a single run
# refuses at once
LOCK_WAIT_S = 600.0


EXPECTED = (ConfigError, CheckpointError, DatasetError, RunDirBusy, Fault)


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


def _multirun_job() -> int | None:
    """This job's number in a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return HydraConfig.get().job.num
    return None


def _sweep() -> tuple[Path | None, int | None]:
    """(sweep dir, hydra.sweeper.trials_per_gpu) of this multirun's job, else (None, None)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get() if _multirun_job() is not None else None
    return (None, None) if hc is None else (
        Path(hc.sweep.dir), OmegaConf.select(hc, "sweeper.trials_per_gpu", default=None))


def _synced(t: torch.Tensor) -> float:
    """perf_counter() once `t` (and the work before it) is computed."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)
    return time.perf_counter()


def _mean_losses(pending: list[torch.Tensor], step: int, lr: float) -> dict[str, float]:
    """Mean losses of the steps since the last call (one device sync); stop on a non-finite one."""
    window = torch.stack(pending).view(-1, 2).cpu()  # (K, 2): inner, outer of steps step-K+1..
    pending.clear()
    bad = (~torch.isfinite(window)).any(1).nonzero().flatten().tolist()
    if bad:
        inner, outer = window[bad[0]].tolist()
        raise DivergenceError(
            f"loss became non-finite at step {step - len(window) + 1 + bad[0]} (loss_inner="
            f"{inner}, loss_outer={outer}); stopping. Try a lower train.lr (now {lr})"
        )
    inner, outer = window.mean(0).tolist()
    return {"train/loss_inner": inner, "train/loss_outer": outer}


class _Job:
    """One training job's state: data, model, optimizer, step, best objective, tracker."""

    def __init__(self, cfg: DictConfig, ckpt: dict | None, link: TrialLink | None = None,
                 device: torch.device | None = None) -> None:  # None: resolve cfg.device
        self.cfg, self.t, self.metric, self.link = cfg, cfg.train, cfg.optimized_metric, link
        self.run_dir = Path(cfg.paths.output_dir)
        seed_all(cfg.seed)
        self.device = device = resolve_device(cfg.device) if device is None else device
        torch.set_float32_matmul_precision(self.t.matmul_precision)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # so libraries that use "the current GPU" use this one
        self.images, val, _ = load_images(cfg, device)  # the test split is not read here
        n, h, w, c = self.images.shape
        if self.t.batch_size > n:
            raise ConfigError(f"train.batch_size={self.t.batch_size} exceeds the {n} train images")
        self.dynamic = cfg.dataset.get("binarize", False) == "dynamic"  # a draw per batch
        self.val, self.fit = val[: cfg.eval.num_images], self.images[: cfg.eval.fit_images]
        if self.dynamic:  # the sampling fit sees binary images too (one fixed draw)
            self.fit = binarize(self.fit, "train")
        self.coords = make_grid(h, w, device=device)  # (1, H, W, 2)
        self.model, self.optimizer, self.train_step = build_training(
            cfg, self.coords, channels=c, image_size=(h, w), state=ckpt, sweep_dir=_sweep()[0])
        self.step, self.best, self.last_train = 0, None, {}
        self.history: list[dict[str, float]] = []  # step + train losses, for the curves
        self.val_curve: list[dict[str, float]] = []  # step + val/* at the curve points
        if ckpt is not None:
            self.step, self.best, self.last_train = ckpt["step"], ckpt["best"], ckpt["last_train"]
            if ckpt["config"].get("optimized_metric") != self.metric:  # another metric's best
                self.best = None
            self.history, self.val_curve = ckpt.get("history", []), ckpt.get("val_curve", [])
            # a run extended to more steps keeps only the points of its new curve (a resumed
            # run's curve is the uninterrupted one's)
            self.val_curve = [r for r in self.val_curve if r["step"] in self.curve_steps()]
            set_rng_state(ckpt["rng"])
            log.info("resuming %s from step %d", self.run_dir, self.step)
        self.first_step_s: float | None = None  # this process's first step (with compilation)
        variant = " ".join(variant_tags(cfg))
        log.info("training %s (%d images %dx%dx%d, %d held out for validation) on %s, %d params",
                 variant, n, h, w, c, len(val), device,
                 count_params(self.model))

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """The batch as trained on: with dataset.binarize=dynamic a fresh Bernoulli draw of its
        grey levels, from the global RNG (restored on resume; drawn only for a step that runs,
        so a resumed run draws what an uninterrupted one does)."""
        return torch.bernoulli(batch) if self.dynamic else batch

    def checkpoint(self, tracker: Tracker) -> None:
        save_checkpoint(self.run_dir / "checkpoint.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": self.step, "rng": rng_state(), "best": self.best, "wandb_id": tracker.id,
            "last_train": self.last_train, "history": self.history, "val_curve": self.val_curve,
            "config": OmegaConf.to_container(self.cfg, resolve=True)})

    def curve_steps(self) -> set[int]:
        """The learning curve's budgets (gon.app.trial_link.curve_steps)."""
        return curve_steps(self.t.max_steps, self.t.curve_points)

    def evaluate(self, tracker: Tracker, grids: bool = True) -> dict[str, float]:
        """Validation metrics (and, with grids, the PNG grids); a point of the curve if the
        step is one of its budgets or the last."""
        metric, step = self.metric, self.step
        metrics, images = evaluate(self.model, self.coords, self.val, self.fit,
                                   rows=self.cfg.eval.grid_rows, train_batch=self.t.batch_size,
                                   grids=grids, iw_samples=self.cfg.eval.iw_samples)
        if not math.isfinite(metrics[metric]):
            raise DivergenceError(f"{metric} is {metrics[metric]} at step {step}; stopping")
        if is_better(metric, metrics[metric], self.best):
            self.best = metrics[metric]
        if step in self.curve_steps() and not any(r["step"] == step for r in self.val_curve):
            self.val_curve.append({"step": step, **metrics})
        for name, grid in images.items():
            save_png(grid, self.run_dir / f"{name}.png")
        tracker.log({**metrics, f"{metric}_best": self.best}, step=step)
        tracker.log_images(images, step=step)
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    def run(self, tracker: Tracker) -> dict[str, float]:
        """Train to train.max_steps, evaluating and checkpointing on the way; final metrics."""
        t, tty = self.t, sys.stderr.isatty()
        report_every = t.log_every * max(1, t.max_steps // (10 * t.log_every))  # ~10 log lines
        bar = tqdm(total=t.max_steps, initial=self.step, disable=not tty, unit="step",
                   dynamic_ncols=True, desc=f"{self.cfg.block.name}/{self.cfg.dataset.name}")
        pending: list[torch.Tensor] = []  # loss_inner, loss_outer of each step, read per interval
        curve = self.curve_steps()
        tic, tic_step = time.perf_counter(), self.step
        steps = train_steps(self.model, self.optimizer, self.train_step, self.images,
                            t.batch_size, self.cfg.seed, self.step, self.pixels,
                            t.lr_schedule, t.max_steps)
        first = time.perf_counter()
        for step, losses in itertools.islice(steps, max(0, t.max_steps - self.step)):
            self.step = step
            if self.first_step_s is None:  # one host sync, once: compiling (or a first step)
                self.first_step_s = _synced(losses["loss_outer"]) - first
            pending += [losses["loss_inner"], losses["loss_outer"]]  # no kernel launch per step
            bar.update(1)
            end = step == t.max_steps
            if end or step in curve or not (step % t.log_every and step % t.eval_every
                                            and step % t.ckpt_every):  # losses checked first
                self.last_train = _mean_losses(pending, step, t.lr)
                self.history.append({"step": step, **self.last_train})
                speed = (step - tic_step) * t.batch_size / (time.perf_counter() - tic)
                tic, tic_step = time.perf_counter(), step
                tracker.log({**self.last_train, "images_per_s": speed}, step=step)
                loss = self.last_train["train/loss_outer"]
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{speed:.0f}")
                if not tty and (step % report_every == 0 or end):
                    log.info("step %d/%d loss_outer=%.4f %.0f img/s", step, t.max_steps, loss,
                             speed)
            if not end and (step % t.eval_every == 0 or step in curve):
                value = self.evaluate(tracker, grids=step % t.eval_every == 0)[self.metric]
                if step in curve and self.link and self.link.report(step, value):
                    self.checkpoint(tracker)  # the Optuna trial's pruner stops it here
                    raise optuna.TrialPruned(f"at step {step}: {self.metric}={value:.4f}")
            if step % t.ckpt_every == 0 and not end:
                self.checkpoint(tracker)
        bar.close()
        metrics = self.evaluate(tracker)
        if self.link:
            self.link.report(self.step, metrics[self.metric])  # the curve's last point
        self.checkpoint(tracker)
        return metrics


def _clean_leftovers(run_dir: Path) -> None:
    """Remove the temporary files of atomic writes that a killed process left (.checkpoint.pt.
    *.tmp, ...); called with the run dir's lock held, so none of them is being written."""
    for tmp in run_dir.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write", tmp.name)


def train(cfg: DictConfig) -> float:
    """Run (or resume, or skip if finished) one training job; return cfg.optimized_metric.
    One process at a time trains a run dir (lifecycle.hold_run_dir)."""
    validate_config(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sweep_dir, per_gpu = _sweep()
    device = resolve_device(cfg.device)
    with hold_run_dir(run_dir, wait_s=0.0 if sweep_dir is None else LOCK_WAIT_S), \
            trial_device(device, cfg.device not in ("auto", "cuda"), sweep_dir, per_gpu) as device:
        _clean_leftovers(run_dir)
        return _train(cfg, run_dir, device)


def _train(cfg: DictConfig, run_dir: Path, device: torch.device) -> float:
    metric = cfg.optimized_metric
    if not cfg.train.resume:
        set_aside(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt") if cfg.train.resume else None
    if ckpt is not None:
        config = OmegaConf.to_container(cfg, resolve=True)
        if changed := changed_keys(ckpt["config"], config):
            raise ConfigError(
                f"{run_dir / 'checkpoint.pt'} belongs to a different run ({'; '.join(changed)});"
                " use another hydra.run.dir, or train.resume=false to start over"
            )
        if (objective := finished_objective(cfg, ckpt, run_dir / "metrics.json")) is not None:
            return objective
    link = TrialLink.from_env()  # the Optuna trial of a gon_optuna sweep's job
    job = _Job(cfg, ckpt, link, device)
    trial = {"optuna_trial": link.number, "optuna_study": link.study.study_name} if link else {}
    with tracking(cfg, ckpt.get("wandb_id") if ckpt else None, trial) as tracker, \
            logging_redirect_tqdm():
        if link:
            link.set_user_attrs({"run_dir": str(run_dir.resolve()), "wandb_run": tracker.path})
        metrics = job.run(tracker)
        why = divergence([r["train/loss_outer"] for r in job.history],  # interval means
                         [r["val/psnr"] for r in job.val_curve if "val/psnr" in r], window=1)
        if why:
            log.warning("the run diverged: %s", why)
        result = {**job.last_train, **metrics, f"{metric}_best": job.best, "step": job.step,
                  "optimized_metric": metric, "objective": metrics[metric],
                  "diverged": why is not None, "divergence": why, "val_curve": job.val_curve}
        save_json(run_dir / "metrics.json", result)
        save_json(run_dir / "timing.json", {"first_step_s": job.first_step_s})  # with compiling
        tracker.summary({k: v for k, v in result.items() if k != "val_curve"})
    return float(metrics[metric])
