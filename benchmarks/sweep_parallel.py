"""GPU check for the sweeps: 8 grid trials with joblib n_jobs=4 against n_jobs=1 on one GPU.

Prints (and writes to <out>/sweep_parallel.json) each sweep's wall time, the ratio, and the
device every trial trained on; exits 1 if a trial failed or did not train on CUDA.

Usage:
    python benchmarks/sweep_parallel.py [--steps 1500] [--out outputs/bench_sweep]  # ~5 min, H200
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


def sweep(n_jobs: int, steps: int, out: Path, device: str) -> dict:
    sweep_dir = out / f"n_jobs_{n_jobs}"
    shutil.rmtree(sweep_dir, ignore_errors=True)  # a finished sweep would resume and train nothing
    args = [sys.executable, "-m", "gon.train", "hparams_search=variants", "latent_reduction=sum",
            f"device={device}", "logger=none", f"train.max_steps={steps}",
            f"train.eval_every={steps}", f"train.ckpt_every={steps}", "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (out / f"n_jobs_{n_jobs}.log").write_text(log)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    return {"n_jobs": n_jobs, "wall_s": round(wall, 1), "returncode": proc.returncode,
            "states": summary["states"], "best": summary["best"] and summary["best"]["value"],
            "devices": sorted(set(re.findall(r"\) on (\S+), \d+ params", log)))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_sweep")
    parser.add_argument("--device", default="cuda")  # cpu: only to try the script out
    a = parser.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    runs = [sweep(n, a.steps, a.out, a.device) for n in (1, 4)]
    result = {"steps": a.steps, "runs": runs,
              "speedup_n4_over_n1": round(runs[0]["wall_s"] / runs[1]["wall_s"], 2)}
    (a.out / "sweep_parallel.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = all(r["returncode"] == 0 and r["states"] == {"COMPLETE": 8}
             and r["devices"] and all(d.startswith(a.device) for d in r["devices"]) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
