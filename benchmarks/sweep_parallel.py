"""GPU check for the sweeps: the first grid trials of hparams_search=variants with
hydra.sweeper.trials_per_gpu k (k trials per GPU at once, each on a free GPU slot), for each k.

Prints (and writes to <out>/sweep_parallel.json) each sweep's wall time, trials per hour and
the devices its trials trained on; exits 1 if a trial failed or did not train on the device.

Usage:
    python benchmarks/sweep_parallel.py [--per-gpu 1 4 8] [--trials 8] [--steps N]
    python benchmarks/sweep_parallel.py --device cpu --steps 5 --per-gpu 1 2   # dry run: joblib
                                                                               # n_jobs=k on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(k: int, trials: int, steps: int | None, out: Path, device: str,
          extra: list[str]) -> dict:
    """One sweep of `trials` grid points, k at once (per GPU, or on the CPU)."""
    sweep_dir = out / f"per_gpu_{k}"
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a finished sweep would resume and train nothing
    at_once = (["hydra.launcher.n_jobs=" + str(k)] if device == "cpu"
               else [f"hydra.sweeper.trials_per_gpu={k}"])
    budget = [] if steps is None else [f"train.max_steps={steps}", f"train.eval_every={steps}",
                                       f"train.ckpt_every={steps}"]
    args = [sys.executable, "-m", "gon.train", "hparams_search=variants", f"device={device}",
            "logger=none", f"hydra.sweeper.n_trials={trials}", "hydra/launcher=joblib",
            *at_once, *budget, f"hydra.sweep.dir={sweep_dir}", *extra]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (out / f"per_gpu_{k}.log").write_text(log)
    summary_path = sweep_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {"per_gpu": k, "wall_s": round(wall, 1), "trials_per_hour": round(trials * 3600 / wall),
            "returncode": proc.returncode, "states": summary.get("states", {}),
            "devices": sorted(set(re.findall(r"\) on (\S+), \d+ params", log)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_sweep")
    parser.add_argument("--device", default="cuda")  # cpu: the dry run
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("overrides", nargs="*", help="more gon.train overrides")
    a = parser.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    runs = [sweep(k, a.trials, a.steps, a.out, a.device, a.overrides) for k in a.per_gpu]
    result = {"device": a.device, "trials": a.trials, "steps": a.steps or "config default",
              "runs": runs}
    text = json.dumps(result, indent=2) + "\n"
    (a.out / "sweep_parallel.json").write_text(text)
    if a.json is not None:
        a.json.write_text(text)
    print(text, end="")
    ok = all(r["returncode"] == 0 and r["states"].get("COMPLETE") == a.trials  # (the rest of
             and not r["states"].get("FAIL")  # the grid is queued, WAITING)
             and r["devices"] and all(d.startswith(a.device) for d in r["devices"]) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
