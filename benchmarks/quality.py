"""Test PSNR of GON configurations at a step budget and at the baseline's training time, side
by side in one run (issue 13's quality targets).

    python benchmarks/quality.py                      # baseline + experiment=digits_best
    python benchmarks/quality.py --steps 1000 --seeds 0 1 2 \\
        --candidate "block=modulated model.latent_updates=3 model.step_size=per_dim"
    python benchmarks/quality.py --threads 1 --candidate experiment=digits_best \\
        --candidate experiment=digits_fast --json benchmarks/results/quality-digits.json

The baseline (default: `block=modulated`, one fixed step, the closed-form path) trains first;
its mean training time over the seeds (gon.app.trials.CLOCK, the process's CPU time: not
start-up or evaluation; use --threads 1, so that it is the wall time on an idle core) is the
time budget every candidate then gets. Each candidate trains until it
has done --steps steps and spent that time, and is scored at both points: mean test PSNR over
the seeds (and the t-interval, gon.app.stats.ci95) at --steps, and at the time budget.
Timings are only comparable within one run; say the machine's load (`uptime`).

On real data (`--dataset mnist --data-dir <dir with prepared/mnist>`) `--baseline none` skips
the baseline and the time budget: the targets there are step budgets (1,875 steps: two epochs
at batch 64), and the validation curve (`--curve-every`) is printed against steps and CPU
seconds next to the published anchor's points (ANCHORS). `--jobs N` trains N seeds at once,
each in its own process (the five-epoch MNIST run: `--jobs 3 --threads 1`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from omegaconf import DictConfig

from gon.app.build import load_images
from gon.app.claims.trials import run_trial
from gon.app.config import compose
from gon.app.stats import ci95

# published curves to set a dataset's validation curve against: (epoch, steps at batch 64, dB)
ANCHORS: dict[str, dict] = {
    "mnist": {"source": "the Julia port of the official implicit GON (SIREN 34-256x4-1, "
                        "206,593 parameters, batch 64, 937 steps an epoch), test PSNR",
              "points": [[1, 937, 12.9], [5, 4685, 16.4], [10, 9370, 18.2],
                         [30, 28110, 21.4], [100, 93700, 22.7]]},
}


def config(overrides: list[str]) -> DictConfig:
    return compose(["logger=none", "device=cpu", *overrides])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="the baseline's steps, which set the time budget (default: --steps; "
                   "--steps 1 then scores the candidates at the time budget only)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--baseline", default="block=modulated", help="its Hydra overrides; none: "
                   "no baseline and no time budget (the candidates at --steps only)")
    p.add_argument("--dataset", default=None, help="a dataset group for every config "
                   "(default: the config's, digits)")
    p.add_argument("--data-dir", default=None, help="paths.data_dir for every config (the "
                   "prepared datasets under <dir>/prepared)")
    p.add_argument("--candidate", action="append", help="Hydra overrides, space-separated "
                   "(repeatable); default: experiment=digits_best")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each in its own "
                   "process (with --threads 1: one core each; the figures are the same as "
                   "one after the other)")
    p.add_argument("--budget-s", type=float, default=None, help="a time budget given instead "
                   "of measured (skips the baseline; for scans, not for the targets)")
    p.add_argument("--curve-every", type=int, default=0, help="also score the validation "
                   "split every N steps (the curve, and its largest fall after its first "
                   "quarter)")
    p.add_argument("--target", action="append", default=[], metavar="STEPS:DB", help="say "
                   "whether the candidates' mean test PSNR at STEPS (<= --steps: an earlier one "
                   "is scored on the way) meets DB (repeatable: 1875:23 --target 4685:26)")
    p.add_argument("--target-db", type=float, default=None, help="say whether the mean test "
                   "PSNR at --steps meets this")
    p.add_argument("--json", type=Path, default=None, help="also write the figures there "
                   "(benchmarks/results/quality-*.json: docs/results.md is drawn from it)")
    args = p.parse_args()
    targets = {int(t.split(":")[0]): float(t.split(":")[1]) for t in args.target}
    if args.target_db is not None:
        targets[args.steps] = args.target_db
    if late := [n for n in targets if n > args.steps]:
        p.error(f"--target at {late} steps: past --steps {args.steps}")
    score_at = tuple(sorted(n for n in targets if n < args.steps))  # also scored on the way
    budget_steps = {f"at_{n}_steps": n for n in score_at} | {"at_steps": args.steps}
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"load: {load:.1f} (1-min average), torch threads {torch.get_num_threads()}")
    common = ([f"dataset={args.dataset}"] if args.dataset else []) + (
        [f"paths.data_dir={args.data_dir}"] if args.data_dir else [])
    no_base = args.baseline == "none"
    data = [*common, *([] if no_base else args.baseline.split())]  # the images' config
    base_cfg = config(data)
    images = None if args.jobs > 1 else split_images(base_cfg)  # workers load their own

    def trials(overrides: str, seconds: float | None, steps: int = args.steps,
               at: tuple[int, ...] = ()) -> list[dict]:
        jobs = [([*common, *overrides.split(), f"seed={s}"], steps, seconds, at)
                for s in args.seeds]
        if args.jobs > 1:  # spawned: each process loads the images itself and sets its threads
            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(one_seed, *job, data, args.curve_every, args.threads)
                           for job in jobs]
                rows = [f.result() for f in futures]
        else:
            rows = [one_seed(*job, data, args.curve_every, 0, images) for job in jobs]
        for row in rows:
            if "val_curve" in row:
                row["val_fall_db"] = fall_after_first_quarter(row["val_curve"])
        return rows

    def line(name: str, rows: list[dict], key: str, target: bool = True) -> str:
        psnr = [r[key]["psnr"] for r in rows]
        lo, hi = ci95(psnr)
        steps = statistics.mean(r[key]["step"] for r in rows)
        secs = statistics.mean(r[key]["seconds"] for r in rows)
        falls = [r["val_fall_db"] for r in rows if "val_fall_db" in r]
        return (f"{name:<70s} {key:<8s} psnr {statistics.mean(psnr):6.2f} dB "
                f"[{lo:6.2f}, {hi:6.2f}] (seeds: {', '.join(f'{p:.2f}' for p in psnr)})  "
                f"steps {steps:7.0f}  train {secs:6.1f} CPU-s  "
                f"wall {sum(r['wall_s'] for r in rows):6.1f} s  "
                f"params {rows[0]['params']}  path {rows[0]['path']}"
                + (f"  val curve falls {', '.join(f'{f:.2f}' for f in falls)} dB"
                   if falls else "")
                + ("" if (db := targets.get(budget_steps.get(key))) is None or not target else
                   f"\n  target {db:g} dB at {steps:.0f} steps: "
                   f"{'met' if statistics.mean(psnr) >= db else 'NOT met'} by "
                   f"the mean of {len(psnr)} seeds"))

    budget = args.budget_s
    figures = []
    if budget is None and not no_base:
        base_steps = args.baseline_steps or args.steps
        base = trials(args.baseline, None, base_steps)
        budget = statistics.mean(r["at_steps"]["seconds"] for r in base)
        print(line(f"baseline: {args.baseline}", base, "at_steps", target=False))
        print(f"time budget: {budget:.2f} s of training (the baseline's {base_steps} steps)")
        figures.append(summary(args.baseline, "baseline", base, ("at_steps",)))
    for cand in args.candidate or ["experiment=digits_best"]:
        rows = trials(cand, budget, at=score_at)
        keys = (*budget_steps, *(("at_time",) if budget is not None else ()))
        for key in keys:
            print(line(cand, rows, key))
        figures.append(summary(cand, "candidate", rows, keys))
        if figures[-1].get("val_curve_mean"):
            print(curve_text(figures[-1]["val_curve_mean"], ANCHORS.get(base_cfg.dataset.name)))
    if args.json:
        setup = {"dataset": base_cfg.dataset.name, "steps": args.steps, "seeds": args.seeds,
                 "targets_db": {str(n): db for n, db in sorted(targets.items())},
                 "threads": torch.get_num_threads(), "jobs": args.jobs,
                 "time_budget_cpu_s": None if budget is None else round(budget, 3),
                 "load_avg_1min_at_start": round(load, 2), "clock": "process CPU time"}
        args.json.write_text(json.dumps(
            {"kind": "quality", "title": "Quality: test PSNR at equal steps and equal time"
             if budget is not None else f"Quality on {base_cfg.dataset.name}: test PSNR at "
             f"{args.steps} steps, the validation curve",
             "command": " ".join(["python", *sys.argv]), "setup": setup, "rows": figures,
             "anchor": ANCHORS.get(base_cfg.dataset.name)},
            indent=1) + "\n")


def one_seed(overrides: list[str], steps: int, seconds: float | None, score_at: tuple[int, ...],
             data: list[str],
             curve_every: int, threads: int,
             images: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict:
    """One seed's trial (run_trial's figures and its "wall_s": start-up and scoring included);
    without ``images`` (train, val, test: a worker process) it loads them from ``data``'s
    config."""
    if threads:
        torch.set_num_threads(threads)
    train, val, test = images or split_images(config(data))
    wall = time.perf_counter()
    row = run_trial(config(overrides), train, test, steps, seconds, val=val,
                    curve_every=curve_every, score_at=score_at)
    row["wall_s"] = time.perf_counter() - wall
    return row


def split_images(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cfg's train, validation (its first eval.num_images, as training scores it) and test
    images, on the CPU."""
    train, val, test = load_images(cfg, torch.device("cpu"))
    return train, val[:cfg.eval.num_images], test


def fall_after_first_quarter(curve: list[dict]) -> float:
    """The largest fall (dB) of a validation curve below its own best so far, at the points
    past its first quarter of steps (0: it never fell back there)."""
    last = curve[-1]["step"]
    best, fall = -math.inf, 0.0
    for point in curve:
        best = max(best, point["psnr"])
        if point["step"] > last / 4:
            fall = max(fall, best - point["psnr"])
    return fall


def summary(config: str, role: str, rows: list[dict], keys: tuple[str, ...]) -> dict:
    """One config's figures over the seeds for --json: per-seed PSNR, mean, 95 % interval."""
    out: dict = {"config": config, "role": role, "params": rows[0]["params"], "at_time": None}
    for key in keys:
        psnr = [r[key]["psnr"] for r in rows]
        out[key] = {"psnr": psnr, "psnr_mean": statistics.mean(psnr),
                    "ci95": list(ci95(psnr)),
                    "steps_mean": statistics.mean(r[key]["step"] for r in rows),
                    "seconds_mean": statistics.mean(r[key]["seconds"] for r in rows)}
    out["wall_s"] = [r["wall_s"] for r in rows]
    if all("val_curve" in r for r in rows):
        out["val_curves"] = [r["val_curve"] for r in rows]
        out["val_fall_db"] = [r["val_fall_db"] for r in rows]
        out["val_curve_mean"] = mean_curve(out["val_curves"])
    return out


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """The seeds' validation curves averaged point by point (the steps they share): step,
    mean training CPU-s, mean PSNR and its 95 % interval."""
    shared = set.intersection(*({p["step"] for p in c} for c in curves))
    out = []
    for step in sorted(shared):
        points = [next(p for p in c if p["step"] == step) for c in curves]
        psnr = [p["psnr"] for p in points]
        out.append({"step": step, "seconds": statistics.mean(p["seconds"] for p in points),
                    "psnr": statistics.mean(psnr), "ci95": list(ci95(psnr))})
    return out


def curve_text(curve: list[dict], anchor: dict | None) -> str:
    """The mean validation curve, one line per point, and the anchor's points up to its end."""
    lines = ["  validation curve (mean of the seeds): step, training CPU-s, PSNR dB [95 % CI]"]
    lines += [f"    {p['step']:6d} {p['seconds']:8.1f} {p['psnr']:6.2f} "
              f"[{p['ci95'][0]:6.2f}, {p['ci95'][1]:6.2f}]" for p in curve]
    if anchor:
        last = curve[-1]["step"]
        shown = [pt for pt in anchor["points"] if pt[1] <= last] or anchor["points"][:1]
        lines.append(f"  anchor, {anchor['source']}: " + ", ".join(
            f"epoch {e} ({n} steps) {db} dB" for e, n, db in shown))
    return "\n".join(lines)

if __name__ == "__main__":
    main()
