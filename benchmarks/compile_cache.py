"""A sweep's shared compile cache: two trials of one sweep with train.compile=true, each its own
process (as joblib's workers and SLURM tasks are), the second finding the first's compiled code
in <sweep dir>/compile_cache. Prints and writes each trial's first step (with compilation).

    $ python benchmarks/compile_cache.py --json benchmarks/results/compile-cache-cpu.json
    $ python benchmarks/compile_cache.py --device cuda \
          --overrides train.compile_mode=reduce-overhead

Target: the second trial compiles in at most a quarter of the first's time (ratio <= 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trial(sweep: Path, seed: int, device: str, data_dir: Path, extra: list[str]) -> dict:
    """One trial of the sweep in a fresh process; its first step's time and wall time."""
    args = [sys.executable, "-m", "gon.train", "-m", "debug=tiny", f"seed={seed}",
            f"device={device}", "train.compile=true", f"paths.data_dir={data_dir}",
            f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${seed}", *extra]
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"trial seed={seed} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((sweep / str(seed) / "timing.json").read_text())
    return {"seed": seed, "first_step_s": round(metrics["first_step_s"], 2),
            "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--overrides", nargs="*", default=[], help="more gon.train overrides")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from gon.app.data.datasets import prepare

    tmp = Path(tempfile.mkdtemp(prefix="compile-cache-"))
    sweep, data = tmp / "sweep", tmp / "data"
    try:
        prepare("digits", raw_root=data / "raw", out_root=data / "prepared")
        first, second = (trial(sweep, s, args.device, data, args.overrides) for s in (0, 1))
        cache_mb = sum(f.stat().st_size for f in (sweep / "compile_cache").rglob("*")
                       if f.is_file()) / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = second["first_step_s"] / first["first_step_s"]
    import torch

    result = {"title": f"A sweep's shared compile cache ({args.device})",
            "command": "python benchmarks/compile_cache.py " + " ".join(sys.argv[1:]),
            "note": "two trials of one sweep (debug=tiny, train.compile=true), each its own "
                    "process; first_step_s: the trial's first training step, compilation "
                    "included; the second finds the first's code in <sweep dir>/compile_cache",
            "torch": torch.__version__, "cache_mb": round(cache_mb, 1),
            "second_over_first": round(ratio, 3), "rows": [first, second]}
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
