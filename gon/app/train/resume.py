"""What makes a run dir's checkpoint resumable by a job (the same config, but for the budget,
the objective and how the job runs), when it is finished, and setting a run aside for
train.resume=false.

Usage:
    changed = changed_keys(ckpt["config"], config)   # [] if the job may resume it
    objective = finished_objective(cfg, ckpt, run_dir / "metrics.json")  # None: train on
    set_aside(run_dir)   # <run dir>.old-<time>, if it holds a run
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gon.app.reliability.faults import one_line
from gon.app.reliability.lifecycle import RUN_LOCK

log = logging.getLogger(__name__)

# a checkpoint resumes only a run whose config is the same but for these keys (and the keys
# under them): the budget (a finished run may be extended), the objective (its best is then
# reset), and where and how the job runs and reports, which the trained numbers do not see
MAY_CHANGE_ON_RESUME = ("train.max_steps", "optimized_metric", "train.resume", "device",
                        "paths", "logger", "train.log_every", "train.ckpt_every",
                        "train.compile", "train.compile_mode")


ASIDE = ".old-"  # <run dir>.old-<time>: a run that train.resume=false set aside


def _leaves(node: Any, key: str = "") -> dict[str, Any]:
    """{dotted key: value} of a plain config's leaves."""
    if isinstance(node, dict) and node:
        return {k: v for sub, child in node.items()
                for k, v in _leaves(child, f"{key}.{sub}" if key else str(sub)).items()}
    return {key: node}


def changed_keys(old: dict, new: dict) -> list[str]:
    """The config's changes since the checkpoint, but for the keys that may change."""
    before, after = _leaves(old), _leaves(new)
    out = [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(before.keys() | after.keys())
           if before.get(k) != after.get(k) and not any(
               k == m or k.startswith(m + ".") for m in MAY_CHANGE_ON_RESUME)]
    horizon = "train.max_steps"  # a decaying lr_schedule's horizon: its past rates would change
    if after.get("train.lr_schedule", "constant") != "constant" and \
            before.get(horizon) != after.get(horizon):
        out.append(f"{horizon}: {before.get(horizon)} -> {after.get(horizon)} (the horizon of "
                   f"lr_schedule={after['train.lr_schedule']})")
    return out


def finished_objective(cfg: DictConfig, ckpt: dict, metrics_path: Path) -> float | None:
    """The stored objective if the checkpoint's run is complete, else None (a metrics.json
    that cannot be read is recomputed from the checkpoint)."""
    try:
        done = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        if not isinstance(done, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        log.warning("%s is unreadable (%s); recomputing it from the checkpoint", metrics_path,
                    one_line(e))
        return None
    step, metric = ckpt["step"], cfg.optimized_metric
    if done.get("step") == step >= cfg.train.max_steps and metric in done:
        log.info("finished at step %d: %s=%.4f", step, metric, done[metric])
        return float(done[metric])
    return None


def set_aside(run_dir: Path) -> Path | None:
    """train.resume=false on a run dir holding a run: move that run's files (all but the lock,
    the new job's .hydra/ and logs) to <run dir>.old-<time>, rather than overwrite them."""
    old = [p for p in run_dir.iterdir()
           if p.name not in (RUN_LOCK, ".hydra") and p.suffix != ".log"]
    if not {"checkpoint.pt", "metrics.json"} & {p.name for p in old}:
        return None
    stamp, k = time.strftime("%Y%m%d-%H%M%S"), 1
    while (aside := run_dir.with_name(f"{run_dir.name}{ASIDE}{stamp}{f'-{k}' if k > 1 else ''}")
           ).exists():
        k += 1
    aside.mkdir()
    for p in old:
        p.replace(aside / p.name)
    log.warning("train.resume=false: moved the old run's files to %s", aside)
    return aside
