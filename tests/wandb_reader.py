"""Read a W&B offline run back without network, for tests, through W&B's public CLI.

Usage:
    run = read_run(next(Path(out_dir, "wandb").glob("offline-run-*")))
    run["config"]["block"], run["history"][-1]["val/psnr"], run["run"]["group"]

`wandb leet inspect --json <run dir>` (wandb 0.31 and up; 0.30's `inspect` has no --json) prints
one JSON object per record of the run's log, e.g.
    {"num":2,"type":"run","run":{"config":{"update":{"block":{"name":"siren"}}},"run_id":..}}
    {"num":11,"type":"history","history":{"item":{"_step":0,"recon._type":"image-file"},..}}
    {"num":26,"type":"summary","summary":{"update":{"best":"a","test/psnr":20}}}
    {"num":29,"type":"exit","exit":{"exit_code":0}}
Empty fields are left out; nested metric keys are joined with "." (`recon._type`), and non-finite
numbers are the strings "NaN", "Infinity", "-Infinity". This reader joins nested keys with "/"
(`recon/_type`), so a "." inside a logged key reads as nesting, and turns those strings back into
floats. Numbers keep the CLI's JSON types: a logged 1.0 reads back as the int 1.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def wandb_cli() -> str:
    """The `wandb` executable of this interpreter's environment, else the one on PATH."""
    local = Path(sys.executable).with_name("wandb")
    found = str(local) if local.is_file() else shutil.which("wandb")
    if found is None:
        raise RuntimeError(f"no `wandb` executable next to {sys.executable} or on PATH")
    return found


def inspect_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of the run in `run_dir`, as `wandb leet inspect --json` prints it."""
    cmd = [wandb_cli(), "leet", "inspect", "--json", str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        hint = " (needs wandb >= 0.31)" if "no such option" in done.stderr.lower() else ""
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit {done.returncode}{hint}:\n"
                           f"{done.stderr.strip()}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _metrics(items: dict[str, Any]) -> dict[str, Any]:
    return {k.replace(".", "/"): NON_FINITE.get(v, v) if isinstance(v, str) else v
            for k, v in items.items()}


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """{"run": {id, group, job_type, tags, name}, "config", "history": [rows], "summary",
    "exit_code"} of one offline-run-* folder. Config keys are nested as logged."""
    out: dict[str, Any] = {"run": {}, "config": {}, "history": [], "summary": {}}
    out["exit_code"] = None
    for r in inspect_records(run_dir):
        body = r.get(r["type"], {})
        if r["type"] == "history":
            out["history"].append(_metrics(body.get("item", {})))
        elif r["type"] == "summary":
            out["summary"].update(_metrics(body.get("update", {})))
        elif r["type"] == "config":
            out["config"].update(body.get("update", {}))
        elif r["type"] == "run":
            out["run"] = {"id": body.get("run_id", ""), "group": body.get("run_group", ""),
                          "job_type": body.get("job_type", ""), "tags": body.get("tags", []),
                          "name": body.get("display_name", "")}
            out["config"].update(body.get("config", {}).get("update", {}))
        elif r["type"] == "exit":
            out["exit_code"] = body.get("exit_code", 0)
    return out


def trial_run(sweep_dir: Path, trial: Any) -> dict[str, Any]:
    """read_run of an Optuna trial's W&B run: every trial of a sweep logs into <sweep>/wandb,
    and the trial's user attribute `wandb_run` (<project>/<id>) names its run."""
    run_id = trial.user_attrs["wandb_run"].rsplit("/", 1)[1]
    (run_dir,) = Path(sweep_dir, "wandb").glob(f"offline-run-*-{run_id}")
    return read_run(run_dir)
