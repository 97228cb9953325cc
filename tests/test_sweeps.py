"""Optuna sweeps (gon_optuna sweeper, conf/hparams_search/): the 16-variant grid and its
resume, a resume with more seeds, failed trials, joblib, submitit_local, the TPE overlay with
W&B groups, a killed sweeper; and the gon.app.sweep, sweep_grid and sweep_trials helpers
on in-memory studies.

$ python -m pytest tests/test_sweeps.py -q          # add -m "not slow" for the helpers only
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import compose_config, kill_when, run, start, train_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from wandb_reader import trial_run

from gon.app.config import CONF_DIR
from gon.app.sweeps import checks as chk
from gon.app.sweeps import cli as sweep_cli
from gon.app.sweeps import grid as sg
from gon.app.sweeps import record as rec
from gon.app.sweeps import status as stat
from gon.app.sweeps import summary as summ
from gon.app.sweeps import trials as st
from gon.app.sweeps.composed import ComposedConfigs
from gon.app.variants import AXES

optuna.logging.set_verbosity(optuna.logging.WARNING)
# the tiny sizes, given on the command line so that the TPE overlay does not search them
TPE_FIXED = ("model.latent_dim=8", "model.num_layers=2")


def _args(data_dir: Path, sweep_dir: Path, *overrides: str) -> list:
    return train_cli(data_dir, f"hydra.sweep.dir={sweep_dir}", *overrides)


def _sweep(tmp_path: Path, args: list, ok: bool = True, **env: str) -> str:
    return run(args, tmp_path, ok, **env)


def _study(sweep_dir: Path) -> optuna.Study:
    name = json.loads((sweep_dir / rec.RECORD).read_text())["study_name"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / rec.DEFAULT_DB}")


def _states(study: optuna.Study) -> dict[str, int]:
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return states


def _objective(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["objective"]


# ------------------------------------------------------------------ CLI sweeps (slow)
@pytest.mark.slow
def test_variants_grid_trains_each_variant_once(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "variants"
    args = _args(data_dir, sweep_dir, "hparams_search=variants", "seed=0")  # one seed: 16 trials
    out = _sweep(tmp_path, args)
    study = _study(sweep_dir)
    assert study.study_name.startswith("gon-variants-digits-")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert _states(study) == {"COMPLETE": 16}, out[-3000:]
    variants = {tuple(t.params[a] for a in AXES) for t in study.trials}
    assert len(variants) == 16
    for t in study.trials:  # subdir = trial number, its metrics = the trial's value
        assert _objective(sweep_dir / str(t.number)) == pytest.approx(t.value)
    summary = json.loads((sweep_dir / summ.SUMMARY).read_text())
    assert summary["best"]["value"] == max(t.value for t in study.trials)
    assert summary["best"]["number"] == study.best_trial.number and not summary["failures"]
    assert Path(summary["best"]["config"]).exists()
    assert f"best: trial {study.best_trial.number}" in out

    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/checkpoint.pt")}
    assert len(stamps) == 16
    out = _sweep(tmp_path, args)  # the same command again: nothing to do
    assert "nothing to launch" in out and "Launching" not in out, out[-3000:]
    assert len(_study(sweep_dir).trials) == 16 and not (sweep_dir / "16").exists()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    out = _sweep(tmp_path, [*args, "model.hidden_dim=32"], ok=False)  # another config: refused
    assert "started with other settings (overrides: +model.hidden_dim=32)" in out, out[-3000:]
    assert "Traceback" not in out
    out = _sweep(tmp_path, [*args, "hydra.sweeper.trials_per_gpu=2"], ok=False,
                 CUDA_VISIBLE_DEVICES="")  # no GPU visible, also on a GPU machine
    assert "trials_per_gpu needs visible GPUs" in out
    assert len(_study(sweep_dir).trials) == 16


@pytest.mark.slow
def test_more_seeds_train_only_the_new_seeds(tmp_path: Path, data_dir: Path) -> None:
    """2 variants x seeds 0, 1; then the same sweep with seeds 0..2 trains seed 2 only; the seed
    is a recorded param of every trial and each run is named <variant>/seed<k> in W&B."""
    sweep_dir = tmp_path / "seeds"
    args = _args(data_dir, sweep_dir, "hparams_search=variants", "encoding=none", "loss=bce",
                 "latent_reduction=sum", "logger=wandb")
    _sweep(tmp_path, [*args, "seed=range(0,2)"])
    study = _study(sweep_dir)
    first = {(t.params["block"], t.params["seed"]) for t in study.trials}
    assert first == {(b, s) for b in ("siren", "modulated") for s in (0, 1)}
    assert [t.params["seed"] for t in study.trials] == [0, 1, 0, 1]  # a variant's seeds adjoin
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/checkpoint.pt")}
    out = _sweep(tmp_path, [*args, "seed=range(0,3)"])  # not refused: the seeds may grow
    assert "budget 6 trials" in out, out[-3000:]
    study = _study(sweep_dir)
    assert _states(study) == {"COMPLETE": 6}
    assert sorted((t.params["block"], t.params["seed"]) for t in study.trials[4:]) == [
        ("modulated", 2), ("siren", 2)]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # seeds 0, 1 not retrained
    for t in study.trials:
        run = trial_run(sweep_dir, t)
        assert run["run"]["name"] == f"none-{t.params['block']}-bce-sum/seed{t.params['seed']}"
        assert run["config"]["seed"] == t.params["seed"] and run["run"]["group"] == (
            study.study_name)
    objectives = {_objective(sweep_dir / str(t.number)) for t in study.trials}
    assert len(objectives) == 6  # every seed trains another model
    assert "nothing to launch" in _sweep(tmp_path, [*args, "seed=range(0,3)"])


@pytest.mark.slow
def test_variational_sweep_trains_both_models(tmp_path: Path, data_dir: Path) -> None:
    """hparams_search=variational with the pixels fixed on the command line: the variational
    GON and the VAE, minimising the test negative ELBO."""
    sweep_dir = tmp_path / "variational"
    args = _args(data_dir, sweep_dir, "hparams_search=variational", "dataset.binarize=dynamic")
    out = _sweep(tmp_path, args)
    study = _study(sweep_dir)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE]
    assert _states(study) == {"COMPLETE": 2}, out[-3000:]
    assert {t.params["encoder"] for t in study.trials} == {"variational", "vae"}
    for t in study.trials:
        metrics = json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())
        assert metrics["val/nelbo"] == pytest.approx(t.value) and t.value > 0


@pytest.mark.slow
def test_failed_trials_are_recorded_with_joblib(tmp_path: Path, data_dir: Path) -> None:
    """2 joblib workers; lr=-1 fails in the job (ConfigError), latent_reduction=nope does not
    compose (failed before launch, so its batch neighbour still runs). 4 failures of 6 stop
    the sweep at the default max_failure_rate=0.5; allowing 0.75, a re-run finishes it."""
    sweep_dir = tmp_path / "failing"
    args = _args(data_dir, sweep_dir, "hparams_search=variants", "encoding=none", "seed=0",
                 "block=siren", "loss=mse", "latent_reduction=choice(mean,sum,nope)",
                 "train.lr=choice(0.001,-1)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    out = _sweep(tmp_path, args, ok=False)
    assert "2 at once" in out and "is launching 2 jobs" in out, out[-3000:]
    assert "4 of 6 trials failed, more than max_failure_rate=0.5 allows" in out
    assert json.loads((sweep_dir / summ.SUMMARY).read_text())["states"]["FAIL"] == 4
    _sweep(tmp_path, [*args, "hydra.sweeper.max_failure_rate=0.75"])
    study = _study(sweep_dir)
    assert _states(study) == {"COMPLETE": 2, "FAIL": 4}
    for t in study.trials:
        nope = t.params["latent_reduction"] == "nope"
        assert (t.state == TrialState.FAIL) == (nope or t.params["train.lr"] < 0)
        if nope:
            assert "latent_reduction/nope" in t.user_attrs[st.ERROR]
            assert not (sweep_dir / str(t.number)).exists()  # never launched
        elif t.params["train.lr"] < 0:
            assert "train.lr=-1" in t.user_attrs[st.ERROR]
    summary = json.loads((sweep_dir / summ.SUMMARY).read_text())
    assert len(summary["failures"]) == 4 and summary["best"]["params"]["train.lr"] > 0
    out = _sweep(tmp_path, [*args, "hydra.sweeper.max_failure_rate=0.75"])
    assert "nothing to launch" in out  # failed trials count as done: nothing is retried
    assert len(_study(sweep_dir).trials) == 6


@pytest.mark.slow
def test_tpe_overlay_resumes_and_tracks_one_wandb_group(tmp_path: Path, data_dir: Path) -> None:
    """2 TPE trials, then the same command with n_trials=3 adds one new trial (not a repeat
    of the first draw); every trial's W&B run is in the study's group."""
    sweep_dir = tmp_path / "tpe"
    args = _args(data_dir, sweep_dir, "hparams_search=tpe", "logger=wandb", *TPE_FIXED,
                 "model.hidden_dim=choice(8,16)")
    _sweep(tmp_path, [*args, "hydra.sweeper.n_trials=2"])
    out = _sweep(tmp_path, [*args, "hydra.sweeper.n_trials=3"])
    study = _study(sweep_dir)
    assert study.study_name.startswith("gon-tpe-digits-")
    assert _states(study) == {"COMPLETE": 3}, out[-3000:]
    assert len({t.params["train.lr"] for t in study.trials}) == 3
    for t in study.trials:
        assert set(t.params) == {"train.lr", "model.hidden_dim", "block.w0"}
        assert 1e-4 <= t.params["train.lr"] <= 1e-2 and t.params["model.hidden_dim"] in (8, 16)
        run = trial_run(sweep_dir, t)
        assert run["run"]["group"] == study.study_name and run["run"]["job_type"] == "train"
        assert run["config"]["train"]["lr"] == pytest.approx(t.params["train.lr"])
        assert {"dataset", *AXES} <= set(run["config"])
        assert run["config"]["block"]["w0"] == pytest.approx(t.params["block.w0"])


@pytest.mark.slow
def test_submitit_local_and_a_variant_without_w0(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "submitit"
    args = _args(data_dir, sweep_dir, "hparams_search=tpe", "block=relu", *TPE_FIXED,
                 "model.hidden_dim=16",
                 "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                 "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    out = _sweep(tmp_path, args)
    assert "not searching block.w0" in out
    study = _study(sweep_dir)
    assert _states(study) == {"COMPLETE": 2}, out[-3000:]
    assert all("block.w0" not in t.params for t in study.trials)
    assert (sweep_dir / ".submitit").is_dir()
    for t in study.trials:
        assert math.isfinite(_objective(sweep_dir / str(t.number)))


@pytest.mark.slow
def test_killed_sweeper_leaves_no_running_trial(tmp_path: Path, data_dir: Path) -> None:
    """SIGKILL mid-trial; the same command again re-runs that trial in its own dir (resuming
    its checkpoint) and finishes the grid; the killed trial is recorded as interrupted."""
    sweep_dir = tmp_path / "killed"
    args = _args(data_dir, sweep_dir, "hparams_search=variants", "encoding=none", "seed=0",
                 "block=siren", "loss=mse", "train.max_steps=100", "train.ckpt_every=5")
    kill_when(start(args, tmp_path, capture=False), sweep_dir / "0" / "checkpoint.pt")
    assert not (sweep_dir / "0" / "metrics.json").exists(), "finished before the kill"
    assert _states(_study(sweep_dir)) == {"RUNNING": 1, "WAITING": 1}  # the grid is queued

    out = _sweep(tmp_path, args)
    assert "re-queued 1 interrupted trial(s): [0]" in out and "resuming" in out, out[-3000:]
    study = _study(sweep_dir)
    assert _states(study) == {"FAIL": 1, "COMPLETE": 2}
    (killed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert killed.number == 0 and killed.user_attrs[st.INTERRUPTED]
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.user_attrs[st.DIR] == "0" and retry.params == killed.params
    assert _objective(sweep_dir / "0") == pytest.approx(retry.value)
    assert json.loads((sweep_dir / summ.SUMMARY).read_text())["states"]["INTERRUPTED"] == 1


# ------------------------------------------------------------------ helpers (fast)
def _hydra_cfg(*overrides: str) -> DictConfig:
    """conf/ composed with its hydra node (as the sweeper sees it)."""
    return compose_config(list(overrides), hydra=True)


def test_basic_sweeper_stays_the_default_and_overlays_compose() -> None:
    # -m block=siren,modulated keeps meaning exactly those two jobs
    assert _hydra_cfg().hydra.sweeper._target_.endswith("BasicSweeper")
    for name, sampler in (("variants", "GridSampler"), ("tpe", "TPESampler")):
        cfg = _hydra_cfg(f"hparams_search={name}")
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("GonOptunaSweeper") and sweeper.direction == "maximize"
        assert sweeper.sampler._target_.endswith(sampler) and cfg.optimized_metric == "val/psnr"
        assert sweeper.storage is None and sweeper.study_name is None
    assert set(sweeper.params) == {"train.lr", "model.hidden_dim", "model.latent_dim",
                                   "model.num_layers", "block.w0"}


def test_a_trial_config_is_composed_once_for_its_launcher() -> None:
    """The sweeper's composition of a job's config is what its launcher gets (once); any other
    call composes afresh; a pickled copy (joblib, submitit, SLURM) keeps its configs."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        master = compose("config", [], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        context = HydraContext(config_loader=loader, callbacks=None)
        configs = ComposedConfigs(loader)
        job, other = ("train.lr=0.003", "hydra.sweep.subdir=0"), ("block=relu",)
        kept = configs.compose(master, job)
        assert kept.train.lr == 0.003 and kept.hydra.sweep.subdir == "0"
        with pytest.raises(Exception, match="nonexistent"):  # as load_sweep_config refuses it
            configs.compose(master, ("block=nonexistent",))
        with configs.installed(context):
            assert context.config_loader.load_sweep_config(master, list(job)) is kept
            again = context.config_loader.load_sweep_config(master, list(job))  # afresh
            assert again is not kept and again == kept
            configs.compose(master, other)
            remote = pickle.loads(pickle.dumps(context.config_loader))
            assert remote.load_sweep_config(master, list(other)).block.name == "relu"
            assert remote.get_sources() and not remote.kept
        assert context.config_loader is loader and not configs.kept  # nothing left behind


def test_variants_grid_is_the_16_variants_x_3_seeds() -> None:
    sweeper = _hydra_cfg("hparams_search=variants").hydra.sweeper
    assert sweeper.n_trials >= 16 * 3  # the grid's size caps it
    assert {k: str(v) for k, v in sweeper.params.items()} == {
        "encoding": "choice(nerf, none)", "block": "choice(siren, modulated)",
        "loss": "choice(mse, bce)", "latent_reduction": "choice(mean, sum)",
        "seed": "range(0, 3)"}
    assert list(sweeper.params)[-1] == "seed"  # a variant's seeds are neighbours in the grid


def test_grid_points_missing_from_a_study() -> None:
    grid = {"block": ["siren", "modulated"], "seed": [0, 1]}
    assert sg.grid_points(grid) == [{"block": "siren", "seed": 0}, {"block": "siren", "seed": 1},
                                    {"block": "modulated", "seed": 0},
                                    {"block": "modulated", "seed": 1}]
    study = optuna.create_study()
    dist = {"block": CategoricalDistribution(["siren", "modulated"]),
            "seed": IntDistribution(0, 1)}
    for i, (params, state) in enumerate([({"block": "siren", "seed": 0}, TrialState.COMPLETE),
                                         ({"block": "siren", "seed": 1}, TrialState.FAIL)]):
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dist,
                                                  state=state, value=1.0 if i == 0 else None,
                                                  user_attrs={st.INTERRUPTED: True} if i else {}))
    study.enqueue_trial({"block": "modulated", "seed": 0})  # queued counts as taken
    # the interrupted one (its copy would be WAITING) and the untouched point are missing
    assert sg.missing_points(study, grid) == [{"block": "siren", "seed": 1},
                                              {"block": "modulated", "seed": 1}]
    assert sg.missing_points(study, {**grid, "seed": [0]}) == []
    assert sg.fingerprint_excludes(grid) == {"seed"} and not sg.fingerprint_excludes(
        {"block": ["siren"]})


def test_study_record_is_reused_and_mismatches_refused(tmp_path: Path) -> None:
    assert rec.recorded_study(tmp_path, None, None) is None
    rec.record_study(tmp_path, "gon-variants-digits-1", None)
    assert rec.recorded_study(tmp_path, None, None) == "gon-variants-digits-1"
    assert rec.recorded_study(tmp_path, "gon-variants-digits-1", None) == "gon-variants-digits-1"
    with pytest.raises(chk.SweepError, match="holds study 'gon-variants-digits-1'"):
        rec.recorded_study(tmp_path, "other", None)
    with pytest.raises(chk.SweepError, match="another hydra.sweep.dir"):
        rec.recorded_study(tmp_path, None, "postgresql://u:secret@db/gon")
    pg = tmp_path / "pg"
    rec.record_study(pg, "s", "postgresql://u:secret@db/gon")
    assert "secret" not in (pg / rec.RECORD).read_text()
    assert rec.recorded_study(pg, None, "postgresql://u:secret@db/gon") == "s"
    # the record has no password: the summary asks for the URL
    assert sweep_cli.main([str(pg)]) == 1
    assert rec.resolve_storage(tmp_path / "new", None).endswith(f"/new/{rec.DEFAULT_DB}")


def test_default_study_name_is_readable_and_unique(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = rec.default_study_name("variants", "mnist", url)
    assert first.startswith("gon-variants-mnist-20")
    optuna.create_study(study_name=first, storage=url)
    second = rec.default_study_name("variants", "mnist", url)  # -2, or a later second's name
    assert second != first and second.startswith("gon-variants-mnist-20")


def test_direction_must_suit_the_metric() -> None:
    chk.check_direction("val/psnr", ["maximize"])
    chk.check_direction("val/mse", ["minimize"])
    with pytest.raises(chk.SweepError, match="direction=maximize"):
        chk.check_direction("val/mse", ["maximize"])


def test_fingerprint_is_stored_then_enforced() -> None:
    study = optuna.create_study()
    fp = {"overrides": ["hparams_search=variants"], "params": {}, "directions": ["maximize"]}
    chk.check_fingerprint(study, fp)
    chk.check_fingerprint(study, fp)
    with pytest.raises(chk.SweepError, match="other settings.*overrides"):
        chk.check_fingerprint(study, {**fp, "overrides": ["dataset=mnist"]})


def test_stale_trials_are_failed_and_requeued() -> None:
    study = optuna.create_study()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed, alive, remote = (study.ask() for _ in range(3))
    for trial in (crashed, alive, remote):
        trial.suggest_float("x", 0, 1)
        st.claim(trial)
    crashed.set_user_attr(st.OWNER, f"{st.HOST}:{dead.pid}")  # its sweeper died here
    remote.set_user_attr(st.OWNER, "elsewhere:1")  # another machine, silent for 10 minutes
    remote.set_user_attr(st.BEAT, time.time() - 600)
    assert st.budget(study) == (0, 3)
    assert st.recover_stale(study, stale_after_s=300) == [crashed.number, remote.number]
    assert st.budget(study) == (0, 1)  # interrupted trials do not count; the copies will
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [crashed.params, remote.params]
    assert [t.user_attrs[st.DIR] for t in waiting] == [str(crashed.number), str(remote.number)]
    retry = study.ask()  # the queue comes first, with its parameters and run dir
    assert retry.params == crashed.params and st.claim(retry) == str(crashed.number)
    study.tell(retry, 0.5)
    study.tell(alive, state=TrialState.FAIL)
    assert st.budget(study) == (2, 0) and [t.number for t in st.failures(study)] == [alive.number]


def test_heartbeat_refreshes_running_trials() -> None:
    study = optuna.create_study()
    trial = study.ask()
    st.claim(trial)
    trial.set_user_attr(st.BEAT, 0.0)
    t0 = time.time()
    with st.heartbeat([trial], every_s=0.02):
        deadline = time.monotonic() + 30
        while study.trials[0].user_attrs[st.BEAT] < t0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert study.trials[0].user_attrs[st.BEAT] >= t0  # beaten while the block ran
    assert not st.is_stale(study.trials[0], stale_after_s=60)


def test_a_trial_interrupted_too_often_fails_for_good() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    st.claim(trial)
    st.requeue(study, study.trials[-1], count=False)  # Ctrl-C: re-queued, not counted
    for _ in range(st.MAX_RETRIES + 1):
        st.claim(retry := study.ask())
        assert retry.params == trial.params
        st.requeue(study, study.trials[retry.number])
    assert not study.get_trials(states=(TrialState.WAITING,))
    (last,) = st.failures(study)
    assert f"interrupted {st.MAX_RETRIES + 1} times" in last.user_attrs[st.ERROR]
    assert st.budget(study) == (1, 0)


def test_summary_names_best_trial_and_failures(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    for x in (0.2, 0.9, None):
        trial = study.ask()
        trial.suggest_float("train.lr", 0, 1)
        trial.set_user_attr("block", "siren")  # a fixed override, as the sweeper stores it
        st.claim(trial)
        if x is None:
            trial.set_user_attr(st.ERROR, "DivergenceError: loss became non-finite")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, x)
    summary = summ.summarize(study, tmp_path, n_trials=3)
    assert summary["best"]["number"] == 1 and summary["best"]["value"] == 0.9
    assert "block=siren" in summary["best"]["overrides"]
    assert summary["best"]["dir"] == str(tmp_path / "1")
    assert [f["number"] for f in summary["failures"]] == [2]
    assert summary["states"] == {"COMPLETE": 2, "FAIL": 1}
    text = summ.format_summary(summary)
    assert "best: trial 1" in text and "failed: trial 2" in text and "DivergenceError" in text
    assert json.loads(summ.write_summary(summary, tmp_path).read_text()) == summary
    summ.write_upstream_results(summary, tmp_path)  # the upstream sweeper's file
    upstream = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert upstream.best_value == 0.9 and upstream.best_params == summary["best"]["params"]


def test_one_classifier_for_budget_summary_status_and_grid(tmp_path: Path) -> None:
    """trials.classify gives every trial its fate; the budget, the failures, the grid's taken
    points, summary.json and the sweep status (from the study, or from summary.json when
    study.json masks the URL) all follow it."""
    study = optuna.create_study(study_name="s", storage=rec.resolve_storage(tmp_path, None))
    seed = {"seed": IntDistribution(0, 9)}
    (tmp_path / "0").mkdir()  # trial 0's run dir; trial 5's is gone
    for f in ("checkpoint.pt", "metrics.json"):
        (tmp_path / "0" / f).write_text("{}")
    for i, (state, attrs) in enumerate([
            (TrialState.COMPLETE, {}), (TrialState.FAIL, {}),
            (TrialState.FAIL, {st.INTERRUPTED: True}), (TrialState.PRUNED, {}),
            (TrialState.RUNNING, {}), (TrialState.COMPLETE, {})]):
        study.add_trial(optuna.trial.create_trial(
            state=state, params={"seed": i}, distributions=seed, user_attrs=attrs,
            value=1.0 if state == TrialState.COMPLETE else None))
    assert st.retry_failed(study, tmp_path) == [1, 5]  # trials 6 and 7: their copies
    F = st.Fate
    assert [f for _, f in st.classify(study)] == [
        F.FINISHED, F.SUPERSEDED, F.INTERRUPTED, F.PRUNED, F.RUNNING, F.SUPERSEDED, F.WAITING,
        F.WAITING]
    assert st.budget(study) == (2, 1) and st.failures(study) == []
    assert sg.taken_points(study, ["seed"]) == {(0,), (1,), (3,), (4,), (5,)}
    study.set_user_attr(chk.N_TRIALS, 6)
    summary = summ.summarize(study, tmp_path, n_trials=6)
    assert summary["states"] == {"COMPLETE": 1, "RETRIED": 2, "INTERRUPTED": 1, "PRUNED": 1,
                                 "RUNNING": 1, "WAITING": 2}
    summ.write_summary(summary, tmp_path)
    rec.record_study(tmp_path, "s", None)
    record = rec.read_record(tmp_path)
    assert record is not None and not record.masked and record.load().study_name == "s"
    from_study = stat.sweep_status(tmp_path)
    rec.record_study(tmp_path, "s", "postgresql://u:secret@localhost/db")  # masked on disk
    assert rec.read_record(tmp_path).masked and "secret" not in (tmp_path / rec.RECORD).read_text()
    with pytest.raises(chk.SweepError, match="without its password"):
        rec.read_record(tmp_path).load()
    from_summary = stat.sweep_status(tmp_path)
    assert from_summary.source.endswith(summ.SUMMARY)
    for status in (from_study, from_summary):
        assert [[r["number"] for r in rows] for rows in (
            status.finished, status.failed, status.missing, status.unfinished)] == [
            [0], [], [], [4, 6, 7]], status.source
        assert status.n_trials == 6 and not status.complete


def test_launcher_gpu_guard() -> None:
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
    with pytest.raises(chk.SweepError, match="gpus_per_node=1"):
        chk.check_launcher_gpus(slurm, "auto", gpus=0)
    assert chk.check_launcher_gpus({**slurm, "gpus_per_node": 1}, "auto", gpus=0) is None
    assert chk.check_launcher_gpus(slurm, "cpu", gpus=0) is None
    with pytest.raises(chk.SweepError, match="CUDA_VISIBLE_DEVICES=''.*gpus_per_node=4"):
        chk.check_launcher_gpus(local, "cuda", gpus=4)
    assert "hydra#2757" in chk.check_launcher_gpus({**local, "gpus_per_node": 1}, "auto", 4)
    assert chk.check_launcher_gpus({**local, "gpus_per_node": 4}, "auto", gpus=4) is None
    assert chk.check_launcher_gpus(local, "auto", gpus=0) is None  # a CPU machine
    assert chk.check_launcher_gpus({"_target_": "x.JoblibLauncher"}, "auto", gpus=8) is None
