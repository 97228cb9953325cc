"""The `gon_optuna` sweeper: hydra-optuna-sweeper 1.4.0rc3 plus persistence and resume.

Over the upstream sweeper it (1) keeps the study in the sweep dir (sqlite) unless given a
storage URL, under a readable name recorded there, (2) fails and re-queues trials left RUNNING
by a dead sweeper, (3) counts n_trials over the whole study, so re-running the command into
the same sweep dir trains only what is missing, (4) names each trial's subdir after its trial
number, (5) records failed trials and goes on (retry_failed=true re-runs them), (6) writes
<sweep dir>/summary.json, (7) lets several sweepers share one study (sqlite, a journal file,
PostgreSQL): creating or joining it and drawing trials happen under a lock
(gon.app.sweeps.studies).

Usage (see conf/hparams_search/):
    python -m gon.train hparams_search=variants hydra.sweep.dir=outputs/sweeps/v1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig


@dataclass
class GonOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.gon_sweeper.gon_sweeper.GonOptunaSweeper"
    # null: sqlite:///<sweep dir>/optuna.db; else journal:///path/sweep.log or any Optuna RDB
    # URL (postgresql://user:pw@host/db); see gon/app/sweeps/studies.py
    storage: Any | None = None
    # null: gon-<hparams_search>-<dataset>-<time> on the first run, then the one in study.json
    study_name: str | None = None
    # trials launched at once; null: the launcher's (joblib n_jobs, slurm array_parallelism)
    n_jobs: int | None = None
    # stop once more than this fraction of n_trials failed (upstream: per batch)
    max_failure_rate: float = 0.5
    # k: run k trials per visible GPU at once (n_jobs = k x GPUs, joblib n_jobs likewise)
    trials_per_gpu: int | None = None
    heartbeat_s: float = 30.0  # the sweeper marks its running trials alive this often
    stale_after_s: float = 300.0  # a RUNNING trial without heartbeat for this long is re-run
    # k: tune each variant (the choice() axes) for n_trials, then train its best setting with
    # seeds 0..k-1 (hparams_search=variants_tuned); null: one study over the whole space
    tune_seeds: int | None = None
    retry_failed: bool = False  # true: re-run the failed trials (in their dirs) on this resume
    # median | hyperband | none: stop TPE trials whose validation curve lags (each job reports
    # its curve to its trial); refused for the grid and the tuned comparison
    pruner: str | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="gon_optuna", node=GonOptunaSweeperConf, provider="gon"
)


class GonOptunaSweeper(OptunaSweeper):
    """OptunaSweeper whose sweep loop is _impl.ResumableSweep, or _tuned.TunedSweep when
    tune_seeds is set (the tuned comparison)."""

    def __init__(self, sampler: Any, direction: Any, storage: Any | None,
                 study_name: str | None, n_trials: int, n_jobs: int | None,
                 max_failure_rate: float, custom_search_space: str | None,
                 params: DictConfig | None, trials_per_gpu: int | None = None,
                 heartbeat_s: float = 30.0, stale_after_s: float = 300.0,
                 tune_seeds: int | None = None, retry_failed: bool = False,
                 pruner: str | None = None) -> None:
        super().__init__(sampler, direction, storage, study_name, n_trials, n_jobs or 1,
                         max_failure_rate, custom_search_space, params)
        from . import _impl, _tuned  # the one lazy import: Hydra imports this file to list plugins

        base = self.sweeper  # the upstream implementation, with the sampler instantiated
        sweep = _tuned.TunedSweep if tune_seeds else _impl.ResumableSweep
        self.sweeper = sweep(
            base.sampler, direction, storage, study_name, n_trials, n_jobs or 0,
            max_failure_rate, custom_search_space, params,
            trials_per_gpu=trials_per_gpu, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s,
            tune_seeds=tune_seeds, retry_failed=retry_failed, pruner=pruner)

