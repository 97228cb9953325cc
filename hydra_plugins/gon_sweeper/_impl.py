"""The gon_optuna sweep loop (imported lazily by gon_sweeper.py: it imports optuna and torch).

Each round, under the study's lock (gon.app.sweeps.studies.study_lock, so that several
sweepers can share one study): re-queue trials a dead sweeper left RUNNING, count the study's
finished trials against n_trials (gon.app.sweeps.trials.budget), ask for at most n_jobs more
and claim them. Then, without the lock, launch them (trial number = job number = run subdir;
each job reaches its trial through gon.app.sweeps.link), tell the results (pruned, lost,
failed); at the end write the summary.
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

from gon.app.config import ConfigError, validate_config
from gon.app.reliability import secrets
from gon.app.reliability.faults import one_line
from gon.app.reliability.lifecycle import mark_sweeper
from gon.app.sweeps import checks as chk
from gon.app.sweeps import composed, link, slurm, studies
from gon.app.sweeps import grid as sg
from gon.app.sweeps import record as rec
from gon.app.sweeps import summary as summ
from gon.app.sweeps import trials as st

log = logging.getLogger(__name__)
_ABSENT = object()


class ResumableSweep(OptunaSweeperImpl):
    """OptunaSweeperImpl with a persistent, resumable, failure-tolerant sweep loop."""

    def __init__(self, *args: Any, trials_per_gpu: int | None, heartbeat_s: float,
                 stale_after_s: float, tune_seeds: int | None = None,
                 retry_failed: bool = False, pruner: str | None = None) -> None:
        super().__init__(*args)
        self.trials_per_gpu, self.heartbeat_s = trials_per_gpu, heartbeat_s
        self.stale_after_s, self.tune_seeds = stale_after_s, tune_seeds
        self.retry_failed, self.pruner = retry_failed, pruner
        self.pruner_steps: tuple[int, int] | None = None  # hyperband's, set by _sweep

    def _check_settings(self) -> None:
        """Refuse bad sweeper settings, and a config that every trial would fail on (a bad
        shared value such as train.max_steps=-1), before anything is launched."""
        bad = [f"{k}={v!r} (must be {need})" for k, v, ok, need in (
            ("n_trials", self.n_trials, isinstance(self.n_trials, int) and self.n_trials >= 1,
             "an integer >= 1"),
            ("n_jobs", self.n_jobs, self.n_jobs is None or self.n_jobs >= 0, "null or >= 1"),
            ("max_failure_rate", self.max_failure_rate, 0 <= self.max_failure_rate <= 1,
             "in [0, 1]"),
            ("trials_per_gpu", self.trials_per_gpu,
             self.trials_per_gpu is None or self.trials_per_gpu >= 1, "null or >= 1"),
            ("heartbeat_s", self.heartbeat_s, self.heartbeat_s > 0, "> 0"),
            ("stale_after_s", self.stale_after_s, self.stale_after_s > self.heartbeat_s,
             "> heartbeat_s")) if not ok]
        if bad:
            raise chk.SweepError("invalid sweeper settings: " + "; ".join(
                f"hydra.sweeper.{b}" for b in bad))
        link.check_pruner(self.pruner, grid=self._is_grid(), tuned=bool(self.tune_seeds))
        if why := slurm.check_slurm(self.config.hydra.launcher):
            raise chk.SweepError(why)
        try:  # the device is the job's to check (a SLURM node has the GPU, not this one)
            validate_config(self.config, check_device=False)
        except ConfigError as e:
            raise chk.SweepError(f"{e} (for every trial; nothing was launched)") from None

    # ---------------------------------------------------------------- setting up
    def _is_grid(self) -> bool:  # before _search_space: the grid sampler is still a partial
        return isinstance(self.sampler, functools.partial) and \
            self.sampler.func is optuna.samplers.GridSampler
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
        if self._is_grid():
            grid = {k: self._to_grid_sampler_choices(d) for k, d in space.items()}
            self.sampler, self.grid = self.sampler(grid), grid
            size = math.prod(len(v) for v in grid.values())
            if n_trials < size:  # a comparison missing points could never be evaluated
                raise chk.SweepError(
                    f"hydra.sweeper.n_trials={n_trials} is below the grid's {size} points: a "
                    f"grid comparison runs every point; set hydra.sweeper.n_trials={size} "
                    "(or more)")
            n_trials = size
        return space, fixed, fixed_overrides, n_trials

    def _batch_size(self, n_trials: int) -> int:
        """Trials launched at once: trials_per_gpu x GPUs, n_jobs, or the launcher's."""
        import torch

        launcher, gpus = self.config.hydra.launcher, torch.cuda.device_count()
        device = str(OmegaConf.select(self.config, "device", default="auto"))
        warning = chk.check_launcher_gpus(OmegaConf.to_container(launcher), device, gpus)
        if warning:
            log.warning(warning)
        joblib = getattr(self.launcher, "joblib", None)  # the joblib launcher's kwargs
        if self.trials_per_gpu:
            if gpus == 0:
                raise chk.SweepError("hydra.sweeper.trials_per_gpu needs visible GPUs; none here")
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

    def _open_study(self, directions: list[str], fingerprint: dict[str, Any],
                    n_trials: int | None = None) -> optuna.Study:
        """Create or join the study, atomically: a second sweeper started at the same moment
        on the same sweep dir (or storage and study name) joins the first one's study."""
        cfg = self.config
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        self.url = url = rec.resolve_storage(sweep_dir, self.storage)
        self.sweep_dir = sweep_dir
        with studies.study_lock(url, sweep_dir):
            storage = studies.open_storage(url)  # a first open creates the schema
            name = rec.recorded_study(sweep_dir, self.study_name, self.storage) or self.study_name
            if not name:
                search = cfg.hydra.runtime.choices.get("hparams_search") or "sweep"
                dataset = OmegaConf.select(cfg, "dataset.name", default="data")
                name = rec.default_study_name(search, dataset, storage)
            study = optuna.create_study(study_name=name, storage=storage, sampler=self.sampler,
                                        directions=directions, load_if_exists=True,
                                        pruner=link.study_pruner(self.pruner, self.pruner_steps))
            chk.check_fingerprint(study, fingerprint)
            if (metric := fingerprint.get("objective")) and len(directions) == 1:
                study.set_metric_names([metric])  # the dashboard's axis: val/psnr
            link.export(url, self.pruner, self.pruner_steps)
            rec.record_study(sweep_dir, name, self.storage, rec.resume_command(sys.argv[1:]))
            if n_trials is not None:
                study.set_user_attr(chk.N_TRIALS, n_trials)
            if self.retry_failed:
                st.retry_failed(study, sweep_dir)
        return study

    def _next_trials(self, study: optuna.Study, n_trials: int, batch: int,
                     prefix: str = "") -> list[Trial]:
        """Under the study's lock: re-queue dead sweepers' trials, then ask for and claim at
        most `batch` trials within the budget ([] when nothing is left to launch); a new
        trial's run subdir is <prefix><number>."""
        with studies.study_lock(self.url, self.sweep_dir):
            st.recover_stale(study, self.stale_after_s)
            finished, running = st.budget(study)
            n = min(batch, n_trials - finished - running)
            if n <= 0:
                log.info("%d/%d trials finished, %d running elsewhere: nothing to launch",
                         finished, n_trials, running)
                return []
            trials = [study.ask() for _ in range(n)]
            for t in trials:
                st.claim(t, t.user_attrs.get(st.DIR) or f"{prefix}{t.number}")
            return trials

    # ---------------------------------------------------------------- the loop
    def sweep(self, arguments: list[str]) -> None:
        """Run (or resume) the study; a SweepError ends it with one error line and exit 1."""
        mark_sweeper()  # the jobs this process starts die with it (lifecycle.bind_to_sweeper)
        if secrets.mask_hydra_storage(self.config):  # before any job or launcher records it
            log.warning("%s", secrets.literal_password_warning("hydra.sweeper.storage"))
        try:
            self._check_settings()
            self._sweep(arguments)
        except chk.SweepError as e:
            log.error("%s", e)
            sys.exit(1)

    def _sweep(self, arguments: list[str]) -> None:
        cfg = self.config
        space, fixed, fixed_overrides, n_trials = self._search_space(arguments)
        self.pruner_steps = link.pruner_steps(self.pruner, cfg, fixed, space)
        link.warn_random_start(self.sampler, self.pruner, self.pruner_steps, n_trials)
        directions = self._get_directions()
        metric = OmegaConf.select(cfg, "optimized_metric", default=None)
        chk.check_direction(metric, directions)
        exclude = set(OmegaConf.select(
            cfg, "hydra.job.config.override_dirname.exclude_keys", default=[]))
        free = sg.fingerprint_excludes(self.grid)  # the seeds of a grid may grow on resume
        fingerprint = {
            "overrides": sorted(a for a in arguments
                                if a.split("=", 1)[0].lstrip("+~") not in exclude | free),
            "params": {str(k): str(v) for k, v in (self.params or {}).items() if k not in free},
            "directions": directions, "objective": metric,
        }
        self._sweep_study(space, fixed, fixed_overrides, n_trials, directions, fingerprint)

    def _sweep_study(self, space: dict[str, BaseDistribution], fixed: dict[str, Any],
                     fixed_overrides: list[str], n_trials: int, directions: list[str],
                     fingerprint: dict[str, Any]) -> None:
        """The plain sweep: n_trials of the sampler (a grid's points queued first);
        _tuned.TunedSweep overrides it with the tuned comparison."""
        cfg = self.config
        study = self._open_study(directions, fingerprint, n_trials)
        if study.trials:  # resuming: a sampler seeded as before would repeat its first draws
            study.sampler.reseed_rng()
        with studies.study_lock(self.url, self.sweep_dir):  # one sweeper queues the points
            for params in sg.missing_points(study, self.grid) if self.grid else []:
                study.enqueue_trial(params)  # grid order; trains only the points not yet taken
        batch = self._batch_size(n_trials)
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        log.info("study %s in %s: %s, %s, budget %d trials, %d at once", study.study_name,
                 rec.mask_url(self.url), type(study.sampler).__name__, "/".join(directions),
                 n_trials, batch)
        allowed = int(self.max_failure_rate * n_trials)
        try:
            while trials := self._next_trials(study, n_trials, batch):
                self._run(study, trials, space, fixed, fixed_overrides)
                if len(failed := st.failures(study)) > allowed:
                    raise chk.SweepError(
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
            launch, configs = [], composed.ComposedConfigs(self.hydra_context.config_loader)
            for trial, o, d in zip(trials, self._configure_trials(
                    trials, space, fixed, fixed_overrides), subdirs, strict=True):
                o = (*o, f"hydra.sweep.subdir={d}",
                     f"++hydra.job.env_set.WANDB_RUN_GROUP={group or study.study_name}",
                     *link.job_overrides(study, trial))
                try:
                    configs.compose(self.config, o)  # kept for the launcher: composed once
                    launch.append((trial, o))
                except Exception as e:
                    self._tell(study, trial, e)
            if not launch:
                return
            ready = [t for t, _ in launch]
            with st.heartbeat(ready, self.heartbeat_s), configs.installed(self.hydra_context):
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
        if isinstance(ret, JobReturn) and link.settle(study, trial, ret._return_value):
            return  # pruned, or lost on SLURM and re-queued
        try:
            if isinstance(ret, Exception):
                raise ret
            value = ret.return_value  # raises the job's exception if it failed
            values = [float(value)] if n == 1 else [float(v) for v in value]
            if len(values) != n or not all(math.isfinite(v) for v in values):
                raise ValueError(f"objective {value!r} is not {n} finite number(s)")
            state = TrialState.COMPLETE
        except Exception as e:
            trial.set_user_attr(st.ERROR, why := one_line(f"{type(e).__name__}: {e}", 500))
            log.warning("trial %d failed: %s", trial.number, why)
            state, values = TrialState.FAIL, None
        try:
            study.tell(trial, state=state, values=values)
        except RuntimeError as e:  # GridSampler calls study.stop() once the grid is done
            if "Study.stop" not in str(e):
                raise

    def _summarize(self, study: optuna.Study, sweep_dir: Path, n_trials: int) -> None:
        summary = summ.summarize(study, sweep_dir, n_trials, self.url)
        path = summ.write_summary(summary, sweep_dir)
        log.info("%s\nsummary: %s", summ.format_summary(summary), path)
        summ.write_upstream_results(summary, sweep_dir)

