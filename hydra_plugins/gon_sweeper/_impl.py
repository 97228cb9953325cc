"""The gon_optuna sweep loop (imported lazily by gon_sweeper.py: it imports optuna and torch).

Each round: re-queue trials a dead sweeper left RUNNING, count the study's finished trials
against n_trials, ask for at most n_jobs more, launch them (trial number = job number = run
subdir), tell the results, record failures; at the end write the summary.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import Trial, TrialState

from gon.app import sweep as sw
from gon.app import sweep_grid as sg
from gon.app import sweep_trials as st

log = logging.getLogger(__name__)
_ABSENT = object()


class ResumableSweep(OptunaSweeperImpl):
    """OptunaSweeperImpl with a persistent, resumable, failure-tolerant sweep loop."""

    def __init__(self, *args: Any, trials_per_gpu: int | None, heartbeat_s: float,
                 stale_after_s: float, tune_seeds: int | None = None) -> None:
        super().__init__(*args)
        self.trials_per_gpu, self.heartbeat_s = trials_per_gpu, heartbeat_s
        self.stale_after_s, self.tune_seeds = stale_after_s, tune_seeds

    # ---------------------------------------------------------------- setting up
    def _search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution],
                                                           dict[str, Any], list[str], int]:
        """(distributions, fixed params, fixed overrides, n_trials) as upstream, minus the
        searched keys the chosen variant lacks (e.g. block.w0 with block=relu)."""
        self._process_searchspace_config()
        space, fixed, fixed_overrides = create_params_from_overrides(
            self._parse_sweeper_params_config() + list(arguments))
        for name in list(space):
            if name in fixed:
                del space[name]
            elif OmegaConf.select(self.config, name.lstrip("+~"), default=_ABSENT) is _ABSENT:
                log.info("not searching %s: this variant's config has no such key", name)
                del space[name]
        n_trials, self.grid = self.n_trials, None
        if isinstance(self.sampler, functools.partial) and \
                self.sampler.func is optuna.samplers.GridSampler:
            grid = {k: self._to_grid_sampler_choices(d) for k, d in space.items()}
            self.sampler, self.grid = self.sampler(grid), grid
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))
        return space, fixed, fixed_overrides, n_trials

    def _batch_size(self, n_trials: int) -> int:
        """Trials launched at once: trials_per_gpu x GPUs, n_jobs, or the launcher's."""
        import torch

        launcher, gpus = self.config.hydra.launcher, torch.cuda.device_count()
        device = str(OmegaConf.select(self.config, "device", default="auto"))
        warning = sw.check_launcher_gpus(OmegaConf.to_container(launcher), device, gpus)
        if warning:
            log.warning(warning)
        joblib = getattr(self.launcher, "joblib", None)  # the joblib launcher's kwargs
        if self.trials_per_gpu:
            if gpus == 0:
                raise sw.SweepError("hydra.sweeper.trials_per_gpu needs visible GPUs; none here")
            n = self.trials_per_gpu * gpus
            if joblib is not None:
                joblib["n_jobs"] = n
            log.info("%d trial(s) per GPU on %d GPU(s): %d at once", self.trials_per_gpu, gpus, n)
        elif self.n_jobs:
            n = self.n_jobs
        elif joblib is not None:
            from joblib import effective_n_jobs

            n = effective_n_jobs(joblib.get("n_jobs", -1))
        else:
            n = int(launcher.get("array_parallelism", 1))  # submitit_slurm's; else 1
        return max(1, min(n, n_trials))

    def _open_study(self, directions: list[str], fingerprint: dict[str, Any]) -> optuna.Study:
        cfg = self.config
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        url = sw.resolve_storage(sweep_dir, self.storage)
        name = sw.recorded_study(sweep_dir, self.study_name, self.storage) or self.study_name
        if not name:
            search = cfg.hydra.runtime.choices.get("hparams_search") or "sweep"
            dataset = OmegaConf.select(cfg, "dataset.name", default="data")
            name = sw.default_study_name(search, dataset, url)
        study = optuna.create_study(study_name=name, storage=url, sampler=self.sampler,
                                    directions=directions, load_if_exists=True)
        sw.record_study(sweep_dir, name, self.storage)
        sw.check_fingerprint(study, fingerprint)
        self.url = url
        return study

    # ---------------------------------------------------------------- the loop
    def sweep(self, arguments: list[str]) -> None:
        """Run (or resume) the study; a SweepError ends it with one error line and exit 1."""
        try:
            self._sweep(arguments)
        except sw.SweepError as e:
            log.error("%s", e)
            sys.exit(1)

    def _sweep(self, arguments: list[str]) -> None:
        cfg = self.config
        space, fixed, fixed_overrides, n_trials = self._search_space(arguments)
        directions = self._get_directions()
        metric = OmegaConf.select(cfg, "optimized_metric", default=None)
        sw.check_direction(metric, directions)
        exclude = set(OmegaConf.select(
            cfg, "hydra.job.config.override_dirname.exclude_keys", default=[]))
        free = sg.fingerprint_excludes(self.grid)  # the seeds of a grid may grow on resume
        fingerprint = {
            "overrides": sorted(a for a in arguments
                                if a.split("=", 1)[0].lstrip("+~") not in exclude | free),
            "params": {str(k): str(v) for k, v in (self.params or {}).items() if k not in free},
            "directions": directions, "objective": metric,
        }
        if self.tune_seeds:  # per-variant tuning, then the best settings x seeds (_tuned.py)
            from ._tuned import sweep_tuned

            return sweep_tuned(self, space, fixed, fixed_overrides, n_trials, directions,
                               fingerprint)
        study = self._open_study(directions, fingerprint)
        if study.trials:  # resuming: a sampler seeded as before would repeat its first draws
            study.sampler.reseed_rng()
        for params in sg.missing_points(study, self.grid) if self.grid else []:
            study.enqueue_trial(params)  # grid order; trains only the points not yet taken
        batch = self._batch_size(n_trials)
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        log.info("study %s in %s: %s, %s, budget %d trials, %d at once", study.study_name,
                 sw.mask_url(self.url), type(study.sampler).__name__, "/".join(directions),
                 n_trials, batch)
        allowed = int(self.max_failure_rate * n_trials)
        try:
            while True:
                st.recover_stale(study, self.stale_after_s)
                finished, running = st.budget(study)
                n = min(batch, n_trials - finished - running)
                if n <= 0:
                    log.info("%d/%d trials finished, %d running elsewhere: nothing to launch",
                             finished, n_trials, running)
                    break
                trials = [study.ask() for _ in range(n)]
                self._run(study, trials, space, fixed, fixed_overrides)
                if len(failed := st.failures(study)) > allowed:
                    raise sw.SweepError(
                        f"{len(failed)} of {n_trials} trials failed, more than "
                        f"max_failure_rate={self.max_failure_rate} allows; stopping the sweep")
        finally:
            self._summarize(study, sweep_dir, n_trials)

    def _run(self, study: optuna.Study, trials: list[Trial], space: dict[str, BaseDistribution],
             fixed: dict[str, Any], fixed_overrides: list[str], prefix: str = "",
             group: str | None = None) -> None:
        """Launch one batch and tell its results. A trial whose overrides do not compose fails
        here, unlaunched (in a joblib batch it would abort its neighbours). If the launcher
        itself fails (a killed worker, a SLURM error) or the sweeper is interrupted, the
        batch's running trials are re-queued for the next run and the sweep stops."""
        try:
            subdirs = [st.claim(t, t.user_attrs.get(st.DIR) or f"{prefix}{t.number}")
                       for t in trials]
            launch = []
            for trial, o, d in zip(trials, self._configure_trials(
                    trials, space, fixed, fixed_overrides), subdirs, strict=True):
                o = (*o, f"hydra.sweep.subdir={d}",
                     f"++hydra.job.env_set.WANDB_RUN_GROUP={group or study.study_name}")
                try:
                    self.hydra_context.config_loader.load_sweep_config(self.config, list(o))
                    launch.append((trial, o))
                except Exception as e:
                    self._tell(study, trial, e)
            if not launch:
                return
            ready = [t for t, _ in launch]
            with st.heartbeat(ready, self.heartbeat_s):
                returns = self.launcher.launch([o for _, o in launch],
                                               initial_job_idx=ready[0].number)
            for trial, ret in zip(ready, returns, strict=True):
                self._tell(study, trial, ret)
        except BaseException as e:
            for t in trials:
                if (frozen := study._storage.get_trial(t._trial_id)).state == TrialState.RUNNING:
                    st.requeue(study, frozen, count=not isinstance(e, KeyboardInterrupt))
            raise

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn | Exception) -> None:
        n = len(study.directions)
        try:
            if isinstance(ret, Exception):
                raise ret
            value = ret.return_value  # raises the job's exception if it failed
            values = [float(value)] if n == 1 else [float(v) for v in value]
            if len(values) != n or not all(math.isfinite(v) for v in values):
                raise ValueError(f"objective {value!r} is not {n} finite number(s)")
            state = TrialState.COMPLETE
        except Exception as e:
            trial.set_user_attr(st.ERROR, _one_line(e))
            log.warning("trial %d failed: %s", trial.number, _one_line(e))
            state, values = TrialState.FAIL, None
        try:
            study.tell(trial, state=state, values=values)
        except RuntimeError as e:  # GridSampler calls study.stop() once the grid is done
            if "Study.stop" not in str(e):
                raise

    def _summarize(self, study: optuna.Study, sweep_dir: Path, n_trials: int) -> None:
        summary = sw.summarize(study, sweep_dir, n_trials, self.url)
        path = sw.write_summary(summary, sweep_dir)
        log.info("%s\nsummary: %s", sw.format_summary(summary), path)
        best = summary["best"]
        if isinstance(best, dict):  # upstream's file, for tools that read it
            OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best["params"],
                                             "best_value": best["value"]}),
                           sweep_dir / "optimization_results.yaml")


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:500]
