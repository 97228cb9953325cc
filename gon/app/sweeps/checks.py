"""Checks a sweep passes before it runs a trial: the objective's direction, the study's
fingerprint (what its trials were run with) and the launcher's GPU count.
"""

from __future__ import annotations

from typing import Any

import optuna

from gon.app.metrics import HIGHER_IS_BETTER

FINGERPRINT = "sweep:fingerprint"  # study user attribute: what its trials were run with


N_TRIALS = "sweep:n_trials"  # study user attribute: the budget of its latest run


class SweepError(RuntimeError):
    """The sweep cannot start or go on (mismatched resume, bad settings, too many failures)."""


def check_direction(metric: str | None, directions: list[str]) -> None:
    """Refuse a direction that contradicts the objective (e.g. minimising val/psnr)."""
    if metric in HIGHER_IS_BETTER and len(directions) == 1:
        want = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"
        if directions[0] != want:
            raise SweepError(
                f"hydra.sweeper.direction={directions[0]} but optimized_metric={metric} "
                f"should be {want}d; set hydra.sweeper.direction={want}"
            )


def _change(key: str, old: Any, new: Any) -> str:
    if isinstance(old, list) and isinstance(new, list):
        return f"{key}: " + " ".join([f"-{x}" for x in old if x not in new]
                                     + [f"+{x}" for x in new if x not in old])
    if isinstance(old, dict) and isinstance(new, dict):
        return "; ".join(f"{key}.{k}: {old.get(k)} -> {new.get(k)}" for k in sorted({*old, *new})
                         if old.get(k) != new.get(k))
    return f"{key}: {old} -> {new}"


def check_fingerprint(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
    """Store what defines the study's trials on its first run; refuse to resume it with
    different overrides, search space or direction (the trials would not be comparable)."""
    old = study.user_attrs.get(FINGERPRINT)
    if old is None:
        study.set_user_attr(FINGERPRINT, fingerprint)
        return
    if old != fingerprint:
        diff = [_change(k, old.get(k), fingerprint.get(k)) for k in sorted(fingerprint)
                if old.get(k) != fingerprint.get(k)]
        raise SweepError(
            f"study {study.study_name!r} was started with other settings ({'; '.join(diff)}); "
            "resume it with the same command, or use another hydra.sweep.dir"
        )


def check_launcher_gpus(launcher: dict[str, Any], device: str, gpus: int) -> str | None:
    """Refuse a submitit launcher that would hide the GPUs from jobs that want one (their
    device=auto would silently train on the CPU); a warning for a partial view, else None."""
    target = str(launcher.get("_target_", ""))
    if "submitit" not in target or device == "cpu":
        return None
    asked = launcher.get("gpus_per_node") or launcher.get("gpus_per_task") or (
        "gpu" in str(launcher.get("gres") or ""))
    if target.endswith("SlurmLauncher") and not asked:
        raise SweepError(
            f"hydra/launcher=submitit_slurm without hydra.launcher.gpus_per_node (or "
            f"gpus_per_task, gres) gives each job no GPU, so device={device} would not get "
            "one: add hydra.launcher.gpus_per_node=1, or device=cpu to train on CPUs")
    if target.endswith("LocalLauncher") and gpus:
        if not asked:
            raise SweepError(
                "hydra/launcher=submitit_local sets CUDA_VISIBLE_DEVICES='' for its jobs unless "
                f"hydra.launcher.gpus_per_node is set, so device={device} would train on the "
                f"CPU: add hydra.launcher.gpus_per_node={gpus} (each job then sees every GPU "
                "and takes trial number modulo GPUs), or device=cpu")
        if int(launcher.get("gpus_per_node") or 0) < gpus:
            return (f"submitit_local with gpus_per_node={launcher.get('gpus_per_node')} shows "
                    f"each job only the first of {gpus} GPUs (hydra#2757): the trials share them")
    return None
