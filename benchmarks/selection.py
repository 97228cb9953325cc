"""A choice made on the validation split, written down from the runs that made it: for each run
dir of `python -m gon.train` (same seed, same budget, one setting changed), its overrides, its
parameter count, its validation PSNR at every evaluation it logged and at the end, and whether
it diverged; with the rule the choice followed, stated before the runs ended.

    python benchmarks/selection.py outputs/pick/h96 outputs/pick/h128 \\
        --title "Choosing the width (MNIST, seed 0, 4,685 steps)" \\
        --rule "h96 if its final validation PSNR >= 26.5 dB, else h128" \\
        --json benchmarks/results/selection-mnist-5epochs.json

Reads <run>/.hydra/overrides.yaml, <run>/metrics.json (absent: the run was stopped before its
end, "finished": false) and <run>/train.log (its "step N: ..." evaluation lines and its "N params"
line); the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

STEP = re.compile(r"step (\d+): .*?val/psnr=([-\d.e+]+|nan|inf)")
PARAMS = re.compile(r" (\d+) params$", re.M)


def run_row(run: Path) -> dict:
    """One run's row: overrides, params, its logged validation curve, end, divergence."""
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    done = (run / "metrics.json").exists()  # a run stopped early has its log only
    metrics = json.loads((run / "metrics.json").read_text()) if done else {}
    log = (run / "train.log").read_text()
    curve = {int(s): round(float(p), 3) for s, p in STEP.findall(log)}
    params = PARAMS.search(log)
    return {"run": run.name, "config": " ".join(overrides),
            "params": int(params.group(1)) if params else None, "finished": done,
            "val_psnr_end": round(metrics["val/psnr"], 3) if done else None,
            "step": metrics["step"] if done else max(curve, default=0),
            "diverged": bool(metrics.get("diverged")),
            "val_psnr_by_step": ", ".join(f"{s}: {p:.2f}" for s, p in sorted(curve.items()))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="gon.train run dirs")
    p.add_argument("--title", required=True)
    p.add_argument("--rule", required=True, help="how the choice was to be made")
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args()
    rows = [run_row(r) for r in a.runs]
    a.json.write_text(json.dumps({"title": a.title, "command": " ".join(
        ["python", "benchmarks/selection.py", *map(str, a.runs)]), "setup": {
        "split": "validation (held out of the train split; the first eval.num_images scored)",
        "rule": a.rule}, "rows": rows}, indent=1) + "\n")
    for r in rows:
        end = (f"val PSNR at the end {r['val_psnr_end']:6.2f} dB" if r["finished"] else
               "stopped before its end, last logged")
        print(f"{r['run']:<12s} {r['params']:>8} params  {end} (step {r['step']})"
              f"{'  DIVERGED' if r['diverged'] else ''}")


if __name__ == "__main__":
    main()
