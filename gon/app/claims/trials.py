"""Short in-process training trials, scored at a step budget and at a wall-clock budget.

The claims table (gon.app.claims) and the quality benchmark (benchmarks/quality.py) compare
variants at equal steps and at equal training time; one trial gives both: it trains until it
has done ``steps`` steps *and* spent ``seconds`` of training time (``CLOCK``: CPU time, which
stops while it evaluates), and scores the test set when it passes each budget.

    cfg = compose_config(["block=modulated"])          # any gon.train config
    result = run_trial(cfg, train, test, steps=300, seconds=4.0)
    result["at_steps"]["psnr"], result["at_time"]["steps"], result["params"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from gon import GON, make_grid
from gon.app.build import count_params
from gon.app.config import validate_config
from gon.app.metrics import likelihood_metrics, psnr
from gon.app.train.loop import build_training, divergence, seed_all, train_steps

NELBO_SAMPLES = 16  # Monte Carlo samples of the reconstruction term per test image

# The training clock: this process's CPU time. With one torch thread (the claims' workers,
# benchmarks/quality.py --threads 1) it is the wall time the step would take on an idle core,
# and other processes sharing the machine do not slow it down, as they slow the wall clock.
CLOCK = time.process_time


@torch.no_grad()
def score(model: GON, coords: torch.Tensor, test: torch.Tensor, train_batch: int) -> dict:
    """Test MSE (over all pixels) and mean per-image PSNR (dB) of the reconstructions, and for
    a variational model its test negative ELBO ("nelbo", nats per image) and its KL part."""
    was_training = model.training
    model.eval()
    try:
        z = model.encode(coords, test, batch_size=256, train_batch=train_batch)
        recon = torch.cat([model.render(c, tuple(test.shape[1:3])) for c in z.split(256)])
        likelihood = likelihood_metrics(model, coords, test, NELBO_SAMPLES, 256, train_batch) \
            if model.has_elbo else {}
    finally:
        model.train(was_training)
    recon = recon.clamp(0, 1)
    out = {"mse": F.mse_loss(recon, test).item(), "psnr": psnr(recon, test)}
    return out | ({"nelbo": likelihood["nelbo"], "kl": likelihood["nelbo_kl"]}
                  if likelihood else {})


def run_trial(
    cfg: DictConfig,
    train: torch.Tensor,
    test: torch.Tensor,
    steps: int,
    seconds: float | None = None,
    probe: Callable[[GON, torch.Tensor], dict[str, Any]] | None = None,
    val: torch.Tensor | None = None,
    curve_every: int = 0,
    score_at: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Train cfg's model from seed cfg.seed on ``train`` (N, H, W, C); score ``test`` after
    ``steps`` steps ("at_steps") and after ``seconds`` of training time ("at_time", when
    given). Both record the step, the training seconds so far, the test mse/psnr and
    "diverged": None or why (train.loop.divergence of the losses so far and the budgets'
    PSNRs); a non-finite loss ends the trial, its budgets not reached scored nan.
    ``probe(model, coords)``, if given, measures the trained model at the end (merged in).
    With ``val`` images and ``curve_every`` > 0: "val_curve", the validation PSNR every
    ``curve_every`` steps up to ``steps`` ({step, seconds, psnr}; the clock stops meanwhile).
    ``score_at``: earlier steps at which the test split is also scored ("at_<n>_steps")."""
    validate_config(cfg)
    seed_all(cfg.seed)
    n, h, w, c = train.shape
    coords = make_grid(h, w, device=train.device, dtype=train.dtype)
    model, opt, step_fn = build_training(cfg, coords, channels=c, image_size=(h, w),
                                         compile=False)
    b = cfg.train.batch_size
    out: dict[str, Any] = {"params": count_params(model), "path": step_fn.path}
    step, clock, seen, psnrs = 0, 0.0, [], []  # seen: the training losses so far
    early = {f"at_{n}_steps": n for n in score_at if n < steps}  # key -> its step
    budgets = ["at_steps"] + (["at_time"] if seconds is not None else []) + list(early)
    trained = train_steps(model, opt, step_fn, train, b, cfg.seed,  # lr schedule over `steps`
                          schedule=cfg.train.lr_schedule, horizon=steps)
    while step < steps or (seconds is not None and clock < seconds):
        tic = CLOCK()
        step, losses = next(trained)
        seen.append(losses["loss_outer"].item())  # a sync: the clock holds the step's work
        clock += CLOCK() - tic
        if not math.isfinite(seen[-1]):  # no score: every budget not reached is diverged
            nan = {k: math.nan for k in ("mse", "psnr", *(("nelbo", "kl") if model.has_elbo
                                                          else ()))}
            for key in budgets:
                out.setdefault(key, {"step": step, "seconds": clock, **nan,
                                     "diverged": divergence(seen)})
            return out | ({"batch_dependence": math.nan} if probe is not None else {})
        if curve_every and val is not None and step <= steps and (
                step % curve_every == 0 or step == steps):
            out.setdefault("val_curve", []).append(
                {"step": step, "seconds": clock, "psnr": score(model, coords, val, b)["psnr"]})
        for key, reached in (*((key, step == n) for key, n in early.items()),
                             ("at_steps", step >= steps),
                             ("at_time", seconds is not None and clock >= seconds)):
            if reached and key not in out:
                out[key] = {"step": step, "seconds": clock, **score(model, coords, test, b)}
                psnrs.append(out[key]["psnr"])  # the budgets' scores in step order
                out[key]["diverged"] = divergence(seen, psnrs)
    return out | (probe(model, coords) if probe is not None else {})
