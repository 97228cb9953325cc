"""Pruning on this CPU: the same TPE sweep with a pruner (hydra.sweeper.pruner=median or
hyperband) and without, for each sampler seed, all sweeps started at once in one invocation
(interleaved, so machine load hits both arms alike); per sweep the CPU time (user + system of
the sweep process and every job it waited for) and the best validation PSNR (COMPLETE trials).

The trials are trained as in real use: the default budget (train.max_steps=1500, curve points
at 250, 500, ..., 1500: where a pruner may stop a trial), default evaluation; only the model is
fixed small (hidden 64, latent 8, 2 layers, batch 32: ~6 CPU-s per trial) so that 6 sweeps of 16
trials fit in ~15 minutes on 2 cores, and TPE searches train.lr and block.w0.

The seed noise is the sd of the no-pruning arm's best PSNR over the sampler seeds. The curve
check: over the no-pruning trials, the Spearman rank correlation of each curve point with the
final PSNR (how safely a trial can be judged at that point).

Writes benchmarks/results/pruning-<pruner>.json ("title", "command", "setup", "note", "rows":
one row per sweep, one per arm with the means; tools/results_page.py draws it). Its "note"
is the one-line headline that docs/experiments.md and the README quote (tests/test_docs.py
checks they match).

Usage:
    python benchmarks/pruning.py                     # median, 16 trials, seeds 0 1 2
    python benchmarks/pruning.py --pruner hyperband --trials 16 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import linear_regression, mean, stdev

import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gon.app.config import compose  # noqa: E402
from gon.app.trial_link import hyperband_steps, make_pruner  # noqa: E402  (the product's)

FIXED = ("hparams_search=tpe", "logger=none", "device=cpu", "model.hidden_dim=64",
         "model.latent_dim=8", "model.num_layers=2", "train.batch_size=32")


def start(pruner: str, seed: int, a: argparse.Namespace) -> tuple[subprocess.Popen, Path]:
    sweep_dir = a.out / f"{pruner}-seed{seed}"
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a finished sweep would train nothing
    args = [sys.executable, "-m", "gon.train", *FIXED, f"train.max_steps={a.steps}",
            f"hydra.sweeper.n_trials={a.trials}", f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.pruner={pruner}", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # CPU time without idle spinning
    log = (a.out / f"{pruner}-seed{seed}.log").open("w")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), \
        sweep_dir


def load(sweep_dir: Path) -> optuna.Study:
    name = json.loads((sweep_dir / "study.json").read_text())["study_name"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def result(pruner: str, seed: int, study: optuna.Study, cpu_s: float, wall_s: float,
           code: int) -> dict:
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    steps = sum(max(t.intermediate_values, default=0) for t in study.trials)
    return {"pruner": pruner, "sampler_seed": seed, "returncode": code,
            "best_val_psnr": round(study.best_value, 3), "cpu_s": round(cpu_s, 1),
            "wall_s": round(wall_s), "steps_trained": steps, "trials": states}


def curve_check(studies: list[optuna.Study], last: int) -> str:
    """Spearman rank correlation, over the complete trials, of each curve point with the last."""
    done = [t.intermediate_values for s in studies for t in s.trials
            if t.state == TrialState.COMPLETE and last in t.intermediate_values]
    steps = sorted({k for c in done for k in c if k != last})
    return ", ".join(f"step {k}: {spearmanr([c[k] for c in done], [c[last] for c in done])[0]:.2f}"
                     for k in steps)


def settings(pruner: str, max_steps: int) -> str:
    """The product's pruner settings (gon.app.trial_link.make_pruner), as Optuna holds them;
    hyperband's steps from the sweeps' config (its curve points), as the sweeper sets them."""
    points = compose([*FIXED[1:], f"train.max_steps={max_steps}"]).train.curve_points
    p = make_pruner(pruner, hyperband_steps(max_steps, points))
    keys = {"median": ("_n_startup_trials", "_n_warmup_steps", "_interval_steps"),
            "hyperband": ("_min_resource", "_max_resource", "_reduction_factor")}[pruner]
    return f"{type(p).__name__}(" + ", ".join(f"{k[1:]}={getattr(p, k)}" for k in keys) + ")"


def figures(rows: list[dict], pruners: tuple[str, str]) -> dict:
    """The arms' means and the derived figures (their rules in "rule") from the sweeps' rows."""
    arms = {p: [r for r in rows if r["pruner"] == p] for p in pruners}
    means = [{"pruner": p, "sampler_seed": "mean",
              "best_val_psnr": round(mean(r["best_val_psnr"] for r in rs), 3),
              "cpu_s": round(mean(r["cpu_s"] for r in rs), 1),
              "steps_trained": round(mean(r["steps_trained"] for r in rs))}
             for p, rs in arms.items()]
    none, pruned = means
    noise = stdev(r["best_val_psnr"] for r in arms["none"])
    gap = none["best_val_psnr"] - pruned["best_val_psnr"]
    fit = linear_regression([r["steps_trained"] for r in rows], [r["cpu_s"] for r in rows])
    return {"means": means, "none": none, "pruned": pruned, "setup": {
        "cpu_saving": round(1 - pruned["cpu_s"] / none["cpu_s"], 3),
        "steps_cut": round(1 - pruned["steps_trained"] / none["steps_trained"], 3),
        "cpu_ms_per_step": round(1e3 * fit.slope, 2),
        "fixed_cpu_s_per_sweep": round(fit.intercept, 1),
        "fixed_share_none": round(fit.intercept / none["cpu_s"], 3),
        "psnr_gap_db": round(gap, 3), "seed_noise_sd_db": round(noise, 3),
        "within_noise": gap <= noise,
        "rule": f"cpu_saving = 1 - mean CPU ({pruners[1]}) / mean CPU (none); steps_cut "
                "likewise for the steps trained; cpu_ms_per_step, fixed_cpu_s_per_sweep: "
                "least squares of CPU on steps trained over all sweeps (fixed: what does "
                "not scale with the steps, such as start-up and each trial's set-up), "
                "fixed_share_none: that over the mean CPU without pruning; "
                f"psnr_gap_db = mean best PSNR (none) - ({pruners[1]}); "
                "seed_noise_sd_db = the sd of the best PSNR over sampler seeds without "
                "pruning; within_noise: psnr_gap_db <= seed_noise_sd_db"}}


def headline(fig: dict, pruner: str, trials: int, steps: int, seeds: int) -> str:
    """The one line the docs quote."""
    none, pruned, f = fig["none"], fig["pruned"], fig["setup"]
    return (f"{pruner} pruning, {trials} TPE trials of {steps} steps, {seeds} sampler seeds: "
            f"{none['cpu_s']:.0f} -> {pruned['cpu_s']:.0f} CPU-s per sweep "
            f"({f['cpu_saving']:.0%} less; it cut {f['steps_cut']:.0%} of the training steps, "
            f"and {f['fixed_share_none']:.0%} of a sweep's CPU is fixed cost); best validation "
            f"PSNR {none['best_val_psnr']:.2f} (none) vs {pruned['best_val_psnr']:.2f} dB "
            f"({pruner}), seed noise (sd, none) {f['seed_noise_sd_db']:.2f} dB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruner", choices=["median", "hyperband"], default="median")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_pruning")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    a.json = a.json or ROOT / "benchmarks" / "results" / f"pruning-{a.pruner}.json"
    pruners = ("none", a.pruner)
    a.out.mkdir(parents=True, exist_ok=True)
    load_avg, wall = os.getloadavg()[0], time.perf_counter()
    running = {}
    for seed in a.seeds:  # interleaved: none, pruned, none, pruned, ...
        for pruner in pruners:
            proc, sweep_dir = start(pruner, seed, a)
            running[proc.pid] = (pruner, seed, sweep_dir)
    rows, studies = [], {p: [] for p in pruners}
    while running:  # wait4: the CPU time of each sweep and everything it waited for
        pid, status, usage = os.wait4(-1, 0)
        if pid in running:
            pruner, seed, sweep_dir = running.pop(pid)
            study = load(sweep_dir)
            studies[pruner].append(study)
            rows.append(result(pruner, seed, study, usage.ru_utime + usage.ru_stime,
                               time.perf_counter() - wall, os.waitstatus_to_exitcode(status)))
    rows.sort(key=lambda r: (pruners.index(r["pruner"]), r["sampler_seed"]))
    fig = figures(rows, pruners)
    out = {
        "title": f"Pruning a TPE sweep ({a.pruner} pruner vs none), CPU",
        "command": "python benchmarks/pruning.py " + " ".join(sys.argv[1:]),
        "setup": {"trials": a.trials, "max_steps": a.steps, "sampler_seeds": a.seeds,
                  "overrides": list(FIXED), "pruner_settings": settings(a.pruner, a.steps),
                  "threads_per_sweep": 1, "load_avg_1min_at_start": round(load_avg, 2),
                  "wall_s": round(time.perf_counter() - wall, 1), **fig["setup"],
                  "curve_rank_corr_with_final": curve_check(studies["none"], a.steps)},
        "note": headline(fig, a.pruner, a.trials, a.steps, len(a.seeds)),
        "rows": rows + fig["means"],
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
