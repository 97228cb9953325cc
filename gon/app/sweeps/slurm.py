"""SLURM for a sweep: the checks before anything is submitted (sbatch on PATH, the partition
exists) and the one question the sweeper asks the controller while it waits (which of its array
tasks are still queued or running). squeue works with or without SLURM's accounting database,
which submitit's own state checks (sacct) need: without it, a cancelled job would be waited for
forever.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

from omegaconf import OmegaConf

from gon.app.reliability.faults import one_line

SLURM_LAUNCHER = "SlurmLauncher"  # the end of a submitit SLURM launcher's _target_


class JobLost(RuntimeError):
    """A SLURM task ended without a result (scancel, node failure, preemption without requeue):
    its trial is re-queued, not failed."""


def is_slurm(launcher: dict[str, Any]) -> bool:
    return str(launcher.get("_target_", "")).endswith(SLURM_LAUNCHER)


def _run(argv: list[str]) -> str:
    """stdout of a SLURM client command; RuntimeError with its first error line otherwise."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{argv[0]}: {one_line(e, 200)}") from None
    if proc.returncode:
        raise RuntimeError(one_line(proc.stderr or proc.stdout or f"exit {proc.returncode}", 300))
    return proc.stdout


def check_slurm(launcher: Any) -> str | None:
    """Why a SLURM launcher (its config: a dict or DictConfig) cannot submit from here (no
    sbatch, no controller, an unknown partition), in one line; None when it can (or the
    launcher is not SLURM's)."""
    if OmegaConf.is_config(launcher):
        launcher = OmegaConf.to_container(launcher, resolve=True)
    if not is_slurm(launcher):
        return None
    if shutil.which("sbatch") is None:
        return ("hydra/launcher=slurm needs SLURM's sbatch on PATH, and there is none here: run "
                "the sweep on a login node of the cluster, or drop hydra/launcher=slurm")
    try:
        listed = _run(["sinfo", "--noheader", "--format=%P"]).split()
    except RuntimeError as e:
        return f"hydra/launcher=slurm: the SLURM controller does not answer ({e})"
    partitions = [p.rstrip("*") for p in listed]
    wanted = launcher.get("partition")
    if wanted and str(wanted) not in partitions:
        return (f"hydra.launcher.partition={wanted}: no such SLURM partition here "
                f"(sinfo lists: {', '.join(partitions) or 'none'})")
    return None


def queued(job_ids: Iterable[str]) -> set[str]:
    """The ones of `job_ids` (submitit's "<array>_<task>") that SLURM still has pending,
    running or completing; a task that left the queue has ended."""
    job_ids = set(job_ids)
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return set()
    try:
        out = _run(["squeue", "--noheader", "--array", "--format=%i", "--jobs", ",".join(arrays)])
    except RuntimeError as e:
        if "Invalid job id" in str(e):  # all of them ended long ago (MinJobAge)
            return set()
        raise
    return set(out.split()) & job_ids
