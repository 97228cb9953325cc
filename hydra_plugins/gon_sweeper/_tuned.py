"""The tuned comparison (hydra.sweeper.tune_seeds=k, conf/hparams_search/variants_tuned.yaml).

1. Tuning: for each variant (a point of the variant axes given as choice()), a study
   `<name>/tune/<variant>` in the same storage runs n_trials of the sampler (TPE) over the other
   searched keys (train.lr, block.w0_initial); run dirs <sweep dir>/tune/<variant>/<trial>.
2. Re-runs: the main study `<name>` trains each variant's best setting with seeds 0..k-1, in
   <sweep dir>/best/<variant>/seed<k> (evaluate that folder: python -m gon.evaluate <dir>/best).
3. <sweep dir>/tuned.json: per variant its best setting, value and number of tuning trials.

Every step resumes like a plain sweep (finished trials are not trained again), and sweepers
can share one study as in a plain sweep (same sweep dir or storage: sqlite, journal://,
postgresql://): trials are drawn under the study's lock, and a variant's best setting is read
only once every tuning trial of it, also another sweeper's, has finished. A re-run keeps
the setting it was started with: if more tuning trials change a variant's best setting after its
re-runs began, the sweep stops with an error (use a new hydra.sweep.dir).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from gon.app.sweeps import checks as chk
from gon.app.sweeps import grid as sg
from gon.app.sweeps import link, studies
from gon.app.sweeps import summary as summ
from gon.app.sweeps import trials as st

from ._impl import ResumableSweep

log = logging.getLogger(__name__)
RECORD = "tuned.json"


class TunedSweep(ResumableSweep):
    """The tuned comparison: tune every variant, then train each best setting with
    `tune_seeds` seeds (gon_sweeper.py picks this class when tune_seeds is set)."""

    def _loop(self, study: optuna.Study, n_trials: int, batch: int,
              space: dict[str, BaseDistribution], fixed: dict[str, Any],
              overrides: list[str], prefix: str, group: str, wait_s: float = 2.0) -> None:
        """Draw (under the study's lock) and run batches until the study has n_trials finished
        ones, waiting for trials that another sweeper on the same study is running: a variant's
        best setting is read only once all its tuning trials are done (or re-queued as stale)."""
        while True:
            if trials := self._next_trials(study, n_trials, batch, prefix):
                self._run(study, trials, space, fixed, overrides, prefix, group)
                if len(failed := st.failures(study)) > int(self.max_failure_rate * n_trials):
                    raise chk.SweepError(
                        f"{len(failed)} of {n_trials} trials of {study.study_name} failed, more "
                        f"than max_failure_rate={self.max_failure_rate}")
            elif st.budget(study)[1] == 0:
                return
            else:
                time.sleep(wait_s)

    def _sweep_study(self, space: dict[str, BaseDistribution], fixed: dict[str, Any],
                     overrides: list[str], n_trials: int, directions: list[str],
                     fingerprint: dict[str, Any]) -> None:
        """Tune every variant, then train each best setting with `tune_seeds` seeds."""
        cfg, k = self.config, int(self.tune_seeds)
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        axes = {a: list(d.choices) for a, d in space.items()
                if a in sg.AXES and isinstance(d, CategoricalDistribution)}
        tuned = {name: d for name, d in space.items() if name not in axes}
        if not tuned:
            raise chk.SweepError(
                "hydra.sweeper.tune_seeds needs searched keys besides the variant axes "
                f"{list(sg.AXES)}, e.g. 'train.lr=tag(log,interval(1e-4,1e-2))'")
        main = self._open_study(directions, fingerprint)
        batch = self._batch_size(n_trials)
        record: dict[str, Any] = {"study_name": main.study_name, "trials_per_variant": n_trials,
                                  "seeds": k, "variants": {}}
        log.info("tuned sweep %s: %d variant(s) x %d %s trials over %s, then %d seeds each",
                 main.study_name, len(sg.grid_points(axes)), n_trials,
                 type(self.sampler).__name__, sorted(tuned), k)
        best: dict[str, dict[str, Any]] = {}
        for point in sg.grid_points(axes):
            name = sg.point_variant({**fixed, **point}, cfg)
            with studies.study_lock(self.url, sweep_dir):
                study = optuna.create_study(study_name=f"{main.study_name}/tune/{name}",
                                            storage=studies.open_storage(self.url),
                                            sampler=self.sampler, directions=directions,
                                            load_if_exists=True, pruner=link.study_pruner(
                                                self.pruner, self.pruner_steps))
            if study.trials:
                study.sampler.reseed_rng()
            try:
                self._loop(study, n_trials, batch, tuned, {**fixed, **point}, overrides,
                           f"tune/{name}/", main.study_name)
            finally:  # its summary.json in tune/<variant>/, run dirs relative to the sweep dir
                (sweep_dir / "tune" / name).mkdir(parents=True, exist_ok=True)
                summ.write_summary(summ.summarize(study, sweep_dir, n_trials, self.url),
                                   sweep_dir / "tune" / name)
            if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
                raise chk.SweepError(
                    f"no tuning trial of {name} completed; see {study.study_name}")
            trial = study.best_trial
            best[name] = {**point, **trial.params}
            record["variants"][name] = {"params": trial.params, "value": trial.value,
                                        "trial": trial.number, "n_trials": len(study.trials)}
        (sweep_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        # the re-runs: one trial per (variant, seed) at the variant's best setting
        dists = {**{a: CategoricalDistribution(c) for a, c in axes.items()}, **tuned,
                 sg.SEED: IntDistribution(0, max(k - 1, 0))}
        for t in main.get_trials(deepcopy=False):
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            name = sg.point_variant({**fixed, **params}, cfg)
            want = {key: best[name][key] for key in tuned}
            if {key: params.get(key) for key in tuned} != want:
                raise chk.SweepError(
                    f"{name}'s best setting is now {want}, but its re-runs in {sweep_dir}/best "
                    f"used {({key: params.get(key) for key in tuned})}; use a new hydra.sweep.dir")
        with studies.study_lock(self.url, sweep_dir):  # a second sweeper enqueues nothing twice
            taken = sg.taken_points(main, [*axes, sg.SEED])
            for params in best.values():
                for seed in range(k):
                    point = {**params, sg.SEED: seed}
                    if tuple(point[a] for a in [*axes, sg.SEED]) not in taken:
                        main.enqueue_trial(point)
            for t in main.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                params = t.system_attrs["fixed_params"]
                if st.DIR not in t.user_attrs:  # best/<variant>/seed<k>, kept by retries
                    main._storage.set_trial_user_attr(
                        t._trial_id, st.DIR,
                        f"best/{sg.point_variant({**fixed, **params}, cfg)}/seed{params[sg.SEED]}")
        total = len(best) * k
        try:
            self._loop(main, total, batch, dists, fixed, overrides, "best/", main.study_name)
        finally:
            self._summarize(main, sweep_dir, total)
