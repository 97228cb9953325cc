"""Pruning on this CPU: the same TPE sweep with a pruner (hydra.sweeper.pruner=median or
hyperband) and without, side by side (run at the same time, so both see the same machine
load), for each sampler seed; the best validation PSNR and the CPU time (user + system of the
sweep process and its jobs) of each.

Writes benchmarks/results/pruning-<pruner>.json ("title", "command", "setup", "rows": one row
per sweep and one per pruner with the means; tools/results_page.py draws it).

Usage:
    python benchmarks/pruning.py [--pruner hyperband] [--trials 16] [--steps 200] [--seeds 0 1]
    # ~10 CPU-minutes
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
from statistics import mean

import optuna

ROOT = Path(__file__).resolve().parents[1]
# a small model and a 2-axis search (lr, w0): trials of a few seconds each
FIXED = ("debug=tiny", "hparams_search=tpe", "model.hidden_dim=64", "model.latent_dim=8",
         "model.num_layers=2", "train.batch_size=32", "train.curve_points=6", "logger=none")


def start(pruner: str, seed: int, a: argparse.Namespace) -> tuple[subprocess.Popen, Path]:
    sweep_dir = a.out / f"{pruner}-seed{seed}"
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a finished sweep would train nothing
    args = [sys.executable, "-m", "gon.train", *FIXED, f"train.max_steps={a.steps}",
            f"train.eval_every={a.steps}", f"train.ckpt_every={a.steps}",
            f"hydra.sweeper.n_trials={a.trials}", f"hydra.sweeper.sampler.seed={seed}",
            "hydra.sweeper.sampler.n_startup_trials=4", f"hydra.sweeper.pruner={pruner}",
            f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # CPU time without idle spinning
    log = (a.out / f"{pruner}-seed{seed}.log").open("w")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), \
        sweep_dir


def result(pruner: str, seed: int, sweep_dir: Path, cpu_s: float, code: int) -> dict:
    name = json.loads((sweep_dir / "study.json").read_text())["study_name"]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    steps = sum(max(t.intermediate_values, default=0) for t in study.trials)
    return {"pruner": pruner, "sampler_seed": seed, "returncode": code,
            "best_val_psnr": round(study.best_value, 3), "cpu_s": round(cpu_s, 1),
            "steps_trained": steps, "trials": states}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruner", choices=["median", "hyperband"], default="hyperband")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_pruning")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    a.json = a.json or ROOT / "benchmarks" / "results" / f"pruning-{a.pruner}.json"
    pruners = ("none", a.pruner)
    a.out.mkdir(parents=True, exist_ok=True)
    load, wall = os.getloadavg()[0], time.perf_counter()
    running = {}
    for pruner in pruners:
        for seed in a.seeds:
            proc, sweep_dir = start(pruner, seed, a)
            running[proc.pid] = (pruner, seed, sweep_dir)
    rows = []
    while running:  # wait4: the CPU time of each sweep and everything it waited for
        pid, status, usage = os.wait4(-1, 0)
        if pid in running:
            pruner, seed, sweep_dir = running.pop(pid)
            rows.append(result(pruner, seed, sweep_dir, usage.ru_utime + usage.ru_stime,
                               os.waitstatus_to_exitcode(status)))
    rows.sort(key=lambda r: (pruners.index(r["pruner"]), r["sampler_seed"]))
    arms = {p: [r for r in rows if r["pruner"] == p] for p in pruners}
    means = [{"pruner": p, "sampler_seed": "mean",
              "best_val_psnr": round(mean(r["best_val_psnr"] for r in rs), 3),
              "cpu_s": round(mean(r["cpu_s"] for r in rs), 1),
              "steps_trained": round(mean(r["steps_trained"] for r in rs))}
             for p, rs in arms.items()]
    base = arms["none"]
    noise = max(r["best_val_psnr"] for r in base) - min(r["best_val_psnr"] for r in base)
    saving = 1 - means[1]["cpu_s"] / means[0]["cpu_s"]
    gap = means[0]["best_val_psnr"] - means[1]["best_val_psnr"]
    out = {
        "title": f"Pruning a TPE sweep ({a.pruner} pruner vs none), CPU",
        "command": "python benchmarks/pruning.py " + " ".join(sys.argv[1:]),
        "setup": {"trials": a.trials, "max_steps": a.steps, "sampler_seeds": a.seeds,
                  "overrides": list(FIXED), "n_startup_trials": 4, "threads_per_sweep": 1,
                  "load_avg_1min_at_start": round(load, 2),
                  "wall_s": round(time.perf_counter() - wall, 1),
                  "cpu_saving": round(saving, 3),
                  "psnr_gap_db": round(gap, 3),
                  "seed_noise_db": round(noise, 3),
                  "rule": f"cpu_saving = 1 - mean CPU ({a.pruner}) / mean CPU (none); "
                          f"psnr_gap_db = mean best PSNR (none) - ({a.pruner}); "
                          "seed_noise_db = the range of the best PSNR over sampler seeds "
                          "without pruning"},
        "rows": rows + means,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
