"""The link between a training job and the Optuna trial it runs for: the sweeper puts the study's
storage, study name, trial id and pruner (with hyperband's training steps) in the job's
environment (and opening a storage URL is defined here, for both); the job reports each point
of its validation curve to the trial through the storage (so optuna-dashboard draws curves) and
asks the pruner whether to stop. Nothing here is written to a file: a storage URL may hold a
password.

Usage (job side):
    link = TrialLink.from_env()            # None outside a gon_optuna sweep
    if link and link.report(step, psnr):   # True: the pruner stops this trial
        raise optuna.TrialPruned(...)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import optuna

JOURNAL = "journal://"
STORAGE, STUDY, TRIAL, PRUNER = ("GON_OPTUNA_STORAGE", "GON_OPTUNA_STUDY", "GON_OPTUNA_TRIAL",
                                 "GON_OPTUNA_PRUNER")
STEPS = "GON_OPTUNA_PRUNER_STEPS"  # "<min>,<max>": hyperband's resources, in training steps
PRUNERS = ("none", "median", "hyperband")
# Hyperband's reduction factor: its paper's and Optuna's default (Li et al. 2018, eta = 3), not
# tuned for our curves: each rung keeps the best third of the trials that reach it
REDUCTION_FACTOR = 3


def curve_steps(max_steps: int, curve_points: int) -> set[int]:
    """The validation curve's budgets, the steps a job reports to its trial at:
    round(k * max_steps / curve_points), k = 1..curve_points (the last is max_steps; with
    curve_points=0 only that one)."""
    return {max(1, round(k * max_steps / curve_points))
            for k in range(1, curve_points + 1)} | {max_steps}


def hyperband_steps(max_steps: int, curve_points: int) -> tuple[int, int]:
    """Hyperband's (min_resource, max_resource): the first curve point, where a trial can
    first be judged, and max_steps (e.g. 250, 1500 for 1500 steps and 6 curve points)."""
    return min(curve_steps(max_steps, curve_points)), max_steps


def hyperband_brackets(steps: tuple[int, int]) -> int:
    """How many brackets Optuna's HyperbandPruner makes of (min, max) training steps:
    floor(log_3(max / min)) + 1, its own formula (2 for 250, 1500)."""
    return math.floor(math.log(steps[1] / steps[0], REDUCTION_FACTOR)) + 1


def journal_path(url: str) -> Path | None:
    """The file of a journal:// URL (journal:///abs/path or journal://rel/path), else None."""
    return Path(url.removeprefix(JOURNAL)) if url.startswith(JOURNAL) else None


def open_storage(url: str) -> str | optuna.storages.BaseStorage:
    """What Optuna's create_study/load_study take for `url`: a JournalStorage for journal://,
    else the URL itself (Optuna opens an RDB storage, creating its schema on first use)."""
    path = journal_path(url)
    if path is None:
        return url
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(name: str | None, steps: tuple[int, int] | None = None
                ) -> optuna.pruners.BasePruner:
    """The pruner hydra.sweeper.pruner names: median (stop a trial whose curve point is below
    the median of earlier trials' at that step, after 4 finished trials), hyperband (successive
    halving brackets over the training steps `steps` = hyperband_steps(...): a trial is judged
    at the first curve point at or past each rung, min_resource * 3^k steps), none. The
    sweeper's study and its jobs build it alike: Optuna's TPE samples a trial from its own
    hyperband bracket's trials."""
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        if steps is None:
            raise ValueError("the hyperband pruner needs its training steps (min, max)")
        return optuna.pruners.HyperbandPruner(min_resource=steps[0], max_resource=steps[1],
                                              reduction_factor=REDUCTION_FACTOR)
    raise ValueError(f"unknown pruner {name!r} (one of {', '.join(PRUNERS)})")


def sweeper_env(storage: str, pruner: str | None,
                steps: tuple[int, int] | None = None) -> dict[str, str]:
    """The variables every job of a sweep shares (the sweeper exports them)."""
    return {STORAGE: storage, PRUNER: pruner or "none",
            STEPS: ",".join(map(str, steps)) if steps else ""}


def job_env(storage: str, study: str, trial_id: int, pruner: str | None,
            steps: tuple[int, int] | None = None) -> dict[str, str]:
    """The variables a job needs to reach its trial (what from_env reads)."""
    return {**sweeper_env(storage, pruner, steps), STUDY: study, TRIAL: str(trial_id)}


def env_steps(value: str | None) -> tuple[int, int] | None:
    """The STEPS variable's (min, max), or None when unset or empty."""
    if not value:
        return None
    low, high = (int(v) for v in value.split(","))
    return low, high


class TrialLink:
    """One running trial of a study, seen from inside its job."""

    def __init__(self, storage: Any, study: str, trial_id: int, pruner: str | None,
                 steps: tuple[int, int] | None = None) -> None:
        self.study = optuna.load_study(study_name=study, storage=storage,
                                       pruner=make_pruner(pruner, steps))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.prunes = pruner not in (None, "none")

    @classmethod
    def from_env(cls) -> TrialLink | None:
        """The link the sweeper set up for this job, or None (a plain run)."""
        if not all(os.environ.get(k) for k in (STORAGE, STUDY, TRIAL)):
            return None
        return cls(open_storage(os.environ[STORAGE]), os.environ[STUDY],
                   int(os.environ[TRIAL]), os.environ.get(PRUNER),
                   env_steps(os.environ.get(STEPS)))

    @property
    def number(self) -> int:
        return self.trial.number

    def report(self, step: int, value: float) -> bool:
        """Record `value` at `step` as the trial's intermediate value; whether to prune it."""
        try:
            self.trial.report(float(value), step)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # re-queued meanwhile: its copy reports afresh
        return self.prunes and self.trial.should_prune()

    def set_user_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)
