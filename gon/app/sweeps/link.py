"""What a sweeper hands its jobs so that each reaches its own Optuna trial (gon.app.trial_link):
the storage URL and the pruner in the sweeper's environment, which every launcher passes on
(never in a file: the URL may hold a password), and the study name and trial id as per-job
environment overrides. Also which sweeps may prune: TPE-like searches, never the grid
comparison nor the tuned comparison's seed runs, where every replicate must finish. And how
a job that ended unfinished is told: pruned (a PRUNED trial, not a failure) or lost on SLURM
(re-queued).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from gon.app import trial_link
from gon.app.sweeps import trials as st
from gon.app.sweeps.checks import SweepError
from gon.app.sweeps.slurm import JobLost

log = logging.getLogger(__name__)


def check_pruner(pruner: str | None, grid: bool, tuned: bool) -> None:
    """Refuse an unknown pruner, and any pruner for the grid or the tuned comparison."""
    if pruner not in (None, *trial_link.PRUNERS):
        raise SweepError(f"hydra.sweeper.pruner={pruner}: not one of "
                         f"{', '.join(trial_link.PRUNERS)}")
    if pruner not in (None, "none") and (grid or tuned):
        raise SweepError(f"hydra.sweeper.pruner={pruner} with a "
                         f"{'grid' if grid else 'tuned comparison'}: every replicate of a "
                         "comparison must finish; prune TPE sweeps only (hparams_search=tpe)")


def pruner_steps(pruner: str | None, cfg: DictConfig, fixed: dict[str, Any],
                 searched: Iterable[str]) -> tuple[int, int] | None:
    """Hyperband's training steps (trial_link.hyperband_steps) from the sweep's composed
    config and its fixed sweep params; None for the other pruners. Refused when a trial's
    train.max_steps or train.curve_points is searched: the brackets need one scale."""
    if pruner != "hyperband":
        return None
    keys = ("train.max_steps", "train.curve_points")
    if varying := [k for k in keys if k in set(searched)]:
        raise SweepError(f"hydra.sweeper.pruner=hyperband with {' and '.join(varying)} "
                         "searched: its brackets need one training length for every trial")
    max_steps, points = (int(fixed.get(k, OmegaConf.select(cfg, k))) for k in keys)
    return trial_link.hyperband_steps(max_steps, points)


def study_pruner(pruner: str | None, steps: tuple[int, int] | None
                 ) -> optuna.pruners.BasePruner:
    """The sweeper's side of the pruner; its jobs build the same from export's variables."""
    return trial_link.make_pruner(pruner, steps)


def warn_random_start(sampler: optuna.samplers.BaseSampler, pruner: str | None,
                      steps: tuple[int, int] | None, n_trials: int) -> None:
    """With hyperband, Optuna's TPE models a trial from its own bracket's trials only, so its
    n_startup_trials random trials are drawn in every bracket: say how many of the sweep's
    trials that leaves random (a warning when all of them are). Measured here (docs/
    experiments.md#pruning-and-the-dashboards-curves), sharing them out over the brackets
    ended worse, so the sampler is left as configured."""
    if pruner != "hyperband" or steps is None or \
            not isinstance(sampler, optuna.samplers.TPESampler):
        return
    brackets = trial_link.hyperband_brackets(steps)
    random = min(n_trials, brackets * sampler._n_startup_trials)  # no public getter
    (log.warning if random >= n_trials else log.info)(
        "hyperband: %d brackets; TPE draws its %d random start-up trials in each, so %d of "
        "the %d trials are random%s", brackets, sampler._n_startup_trials, random, n_trials,
        ": raise hydra.sweeper.n_trials for TPE to model any" if random >= n_trials else "")


def export(url: str, pruner: str | None, steps: tuple[int, int] | None) -> None:
    """Put the storage URL and the pruner (with its steps) in this process's environment,
    which the jobs it launches inherit (in-process, joblib workers, submitit and SLURM jobs
    alike)."""
    os.environ.update(trial_link.sweeper_env(url, pruner, steps))


def job_overrides(study: optuna.Study, trial: optuna.trial.Trial) -> list[str]:
    """The Hydra overrides that give one job its study name and trial id."""
    quoted = study.study_name.replace("\\", "\\\\").replace("'", "\\'")
    return [f"++hydra.job.env_set.{trial_link.STUDY}='{quoted}'",
            f"++hydra.job.env_set.{trial_link.TRIAL}={trial._trial_id}"]


def settle(study: optuna.Study, trial: optuna.trial.Trial, outcome: Any) -> bool:
    """Tell a trial whose job was pruned (PRUNED, its last reported value kept) or lost on
    SLURM (re-queued, to run again in its run dir); False for any other outcome."""
    if isinstance(outcome, optuna.TrialPruned):
        log.info("trial %d pruned: %s", trial.number, outcome)
        study.tell(trial, state=TrialState.PRUNED)
        return True
    if isinstance(outcome, JobLost):
        log.warning("trial %d: %s; re-queued", trial.number, outcome)
        st.requeue(study, study._storage.get_trial(trial._trial_id))
        return True
    return False
