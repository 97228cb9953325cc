"""The link between a training job and the Optuna trial it runs for: the sweeper puts the study's
storage, study name, trial id and pruner in the job's environment (and opening a storage URL
is defined here, for both); the job reports each point
of its validation curve to the trial through the storage (so optuna-dashboard draws curves) and
asks the pruner whether to stop. Nothing here is written to a file: a storage URL may hold a
password.

Usage (job side):
    link = TrialLink.from_env()            # None outside a gon_optuna sweep
    if link and link.report(step, psnr):   # True: the pruner stops this trial
        raise optuna.TrialPruned(...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

JOURNAL = "journal://"
STORAGE, STUDY, TRIAL, PRUNER = ("GON_OPTUNA_STORAGE", "GON_OPTUNA_STUDY", "GON_OPTUNA_TRIAL",
                                 "GON_OPTUNA_PRUNER")
PRUNERS = ("none", "median", "hyperband")


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


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    """The pruner hydra.sweeper.pruner names: median (stop a trial whose curve point is below
    the median of earlier trials' at that step, after 4 finished trials), hyperband (successive
    halving brackets over the training steps), none."""
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    raise ValueError(f"unknown pruner {name!r} (one of {', '.join(PRUNERS)})")


def job_env(storage: str, study: str, trial_id: int, pruner: str | None) -> dict[str, str]:
    """The variables a job needs to reach its trial (what from_env reads)."""
    return {STORAGE: storage, STUDY: study, TRIAL: str(trial_id), PRUNER: pruner or "none"}


class TrialLink:
    """One running trial of a study, seen from inside its job."""

    def __init__(self, storage: Any, study: str, trial_id: int, pruner: str | None) -> None:
        self.study = optuna.load_study(study_name=study, storage=storage,
                                       pruner=make_pruner(pruner))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.prunes = pruner not in (None, "none")

    @classmethod
    def from_env(cls) -> TrialLink | None:
        """The link the sweeper set up for this job, or None (a plain run)."""
        if not all(os.environ.get(k) for k in (STORAGE, STUDY, TRIAL)):
            return None
        return cls(open_storage(os.environ[STORAGE]), os.environ[STUDY],
                   int(os.environ[TRIAL]), os.environ.get(PRUNER))

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
