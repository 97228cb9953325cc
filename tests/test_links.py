"""Optuna, the jobs and W&B pointing at each other: a TPE sweep whose jobs report their
validation curves to their trials (named metric, intermediate values, a median pruner that
prunes, a resume that respects it, a hyperband pruner set from the curve's steps that prunes at
its rungs), trial user attributes naming the run dir and the W&B run,
W&B runs naming the trial and study; pruning refused for the grid; eval/summary run ids that a
second report reuses.

$ python -m pytest tests/test_links.py -q
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from helpers import run, train_cli
from omegaconf import OmegaConf
from optuna.trial import TrialState
from wandb_reader import read_run, trial_run

from gon.app import trial_link
from gon.app.sweeps import link
from gon.app.sweeps import record as rec
from gon.app.sweeps.checks import SweepError
from gon.app.sweeps.status import sweep_status
from gon.app.tracking import git_commit, init_run, stable_id

# 8 TPE trials of 30 steps, 6 curve points; with sampler seed 0 one of them is pruned
TPE = ("hparams_search=tpe", "model.latent_dim=8", "model.num_layers=2", "model.hidden_dim=16",
       "train.max_steps=30", "train.curve_points=6", "hydra.sweeper.n_trials=8",
       "hydra.sweeper.sampler.n_startup_trials=4", "hydra.sweeper.pruner=median",
       "logger=wandb")


def _study(sweep_dir: Path) -> optuna.Study:
    name = json.loads((sweep_dir / rec.RECORD).read_text())["study_name"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / rec.DEFAULT_DB}")


@pytest.mark.slow
def test_tpe_sweep_reports_curves_and_prunes(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "tpe"
    args = train_cli(data_dir, f"hydra.sweep.dir={sweep_dir}", *TPE)
    out = run(args, tmp_path)
    study = _study(sweep_dir)
    assert study.metric_names == ["val/psnr"]  # the dashboard's axis
    states = [t.state for t in study.trials]
    assert len(states) == 8, out[-3000:]
    assert set(states) == {TrialState.COMPLETE, TrialState.PRUNED}, out[-3000:]
    curve = [5, 10, 15, 20, 25, 30]
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        if t.state == TrialState.COMPLETE:
            assert steps == curve and t.intermediate_values[30] == pytest.approx(t.value)
            assert json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())[
                "objective"] == pytest.approx(t.value)
        else:  # stopped at a curve point, its last value kept, no metrics.json
            assert steps == curve[:len(steps)] and len(steps) < 6
            assert t.value == pytest.approx(t.intermediate_values[steps[-1]])
            assert not (sweep_dir / str(t.number) / "metrics.json").exists()
            assert f"trial {t.number} pruned: at step {steps[-1]}" in out
        assert t.user_attrs["run_dir"] == str((sweep_dir / str(t.number)).resolve())
        wb = trial_run(sweep_dir, t)  # all trials in <sweep>/wandb
        assert t.user_attrs["wandb_run"].endswith(f"gon/{wb['run']['id']}")
        assert wb["config"]["optuna_trial"] == t.number
        assert wb["config"]["optuna_study"] == study.study_name
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["states"]["PRUNED"] >= 1 and "FAIL" not in summary["states"]
    status = sweep_status(sweep_dir)  # what gon-evaluate asks: pruned trials are done
    assert status.complete and len(status.pruned) == summary["states"]["PRUNED"]

    out = run(args, tmp_path)  # resume: a pruned trial is finished, not re-run
    assert "8/8 trials finished" in out and "Launching" not in out, out[-3000:]
    assert [t.state for t in _study(sweep_dir).trials] == states
    assert len(list((sweep_dir / "wandb").glob("offline-run-*"))) == 8  # one W&B dir, 8 runs
    assert not list(sweep_dir.glob("*/wandb"))


@pytest.mark.slow
def test_the_grid_refuses_a_pruner(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "grid"
    out = run(train_cli(data_dir, f"hydra.sweep.dir={sweep_dir}", "hparams_search=variants",
                        "hydra.sweeper.pruner=median"), tmp_path, ok=False)
    assert "hydra.sweeper.pruner=median with a grid: every replicate of a comparison must " \
           "finish" in out and "Traceback" not in out, out[-3000:]
    assert not (sweep_dir / rec.RECORD).exists()


def test_pruner_settings() -> None:
    link.check_pruner(None, grid=True, tuned=True)
    link.check_pruner("none", grid=True, tuned=False)
    link.check_pruner("hyperband", grid=False, tuned=False)
    with pytest.raises(SweepError, match="tuned comparison"):
        link.check_pruner("median", grid=False, tuned=True)
    with pytest.raises(SweepError, match="not one of none, median, hyperband"):
        link.check_pruner("asha", grid=False, tuned=False)
    with pytest.raises(ValueError, match="needs its training steps"):
        trial_link.make_pruner("hyperband")


def test_hyperband_is_set_from_the_curve() -> None:
    """min_resource: the first curve point; max_resource: train.max_steps; the jobs get the
    same steps through the sweeper's environment; a searched training length is refused."""
    steps = trial_link.hyperband_steps(1500, 6)
    assert steps == (250, 1500) and min(trial_link.curve_steps(1500, 6)) == 250
    pruner = trial_link.make_pruner("hyperband", steps)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == \
        (250, 1500, 3)
    env = trial_link.job_env("sqlite:///x.db", "s", 3, "hyperband", steps)
    assert trial_link.env_steps(env[trial_link.STEPS]) == steps
    assert trial_link.env_steps(trial_link.sweeper_env("u", "median")[trial_link.STEPS]) is None
    cfg = OmegaConf.create({"train": {"max_steps": 30, "curve_points": 6}})
    assert link.pruner_steps("hyperband", cfg, {}, ["train.lr"]) == (5, 30)
    assert link.pruner_steps("hyperband", cfg, {"train.max_steps": 1500}, []) == (250, 1500)
    assert link.pruner_steps("median", cfg, {}, ["train.max_steps"]) is None
    with pytest.raises(SweepError, match="train.max_steps searched"):
        link.pruner_steps("hyperband", cfg, {}, ["train.max_steps"])


def test_hyperband_says_how_many_trials_tpe_leaves_random(
        caplog: pytest.LogCaptureFixture) -> None:
    """TPE models a trial from its own hyperband bracket only, so its random start-up is per
    bracket (brackets counted as Optuna counts them): the sweep says how many trials stay
    random, as a warning when all do; other pruners and samplers say nothing."""
    for steps, brackets in (((250, 1500), 2), ((5, 45), 3), ((5, 30), 2), ((10, 10), 1)):
        pruner = trial_link.make_pruner("hyperband", steps)
        study = optuna.create_study(pruner=pruner)
        trial = study.ask()
        trial.report(1.0, steps[0])
        trial.should_prune()  # Optuna counts its brackets here
        assert trial_link.hyperband_brackets(steps) == pruner._n_brackets == brackets
    tpe = optuna.samplers.TPESampler(n_startup_trials=8)
    with caplog.at_level(logging.INFO, logger=link.log.name):
        link.warn_random_start(tpe, "median", None, 16)
        link.warn_random_start(optuna.samplers.RandomSampler(), "hyperband", (250, 1500), 16)
        link.warn_random_start(tpe, "hyperband", (250, 1500), 16)
        link.warn_random_start(tpe, "hyperband", (250, 1500), 48)
    full, part = [r for r in caplog.records if r.name == link.log.name]
    assert full.levelno == logging.WARNING and "16 of the 16 trials are random" in full.message
    assert part.levelno == logging.INFO and "16 of the 48 trials are random" in part.message
    assert tpe._n_startup_trials == 8  # left as configured


@pytest.mark.slow
def test_a_tpe_sweep_with_hyperband_prunes_at_its_rungs(tmp_path: Path, data_dir: Path) -> None:
    """30 steps, 6 curve points: rungs at 5 and 15 steps (min_resource 5, reduction factor
    3), so a pruned trial stopped at step 5 or 15, never at another curve point."""
    sweep_dir = tmp_path / "hyperband"
    args = [a for a in TPE if not a.startswith(("hydra.sweeper.pruner", "logger"))]
    out = run(train_cli(data_dir, f"hydra.sweep.dir={sweep_dir}", *args,
                        "hydra.sweeper.pruner=hyperband"), tmp_path)
    assert "hyperband: 2 brackets; TPE draws its" in out  # how many trials stay random
    trials = _study(sweep_dir).trials
    assert len(trials) == 8 and {t.state for t in trials} == {
        TrialState.COMPLETE, TrialState.PRUNED}, out[-3000:]
    for t in trials:
        last = max(t.intermediate_values)
        assert last in ({5, 15} if t.state == TrialState.PRUNED else {30}), (t.number, last)


def test_a_second_report_updates_its_runs(wandb_offline: Path) -> None:
    """The same stable id logged twice leaves one offline run (one W&B run once synced)."""
    run_id = stable_id("study-1", "summary", 1)
    assert run_id == stable_id("study-1", "summary", 1) != stable_id("study-2", "summary", 1)
    for value in (1.0, 2.0):
        with init_run(project="gon", dir=str(wandb_offline), job_type="summary", id=run_id,
                      reinit="finish_previous") as r:
            r.log({"x": value})
    (only,) = (wandb_offline / "wandb").glob("offline-run-*")
    assert only.name.endswith(run_id) and read_run(only)["history"][-1]["x"] == 2


def test_git_commit_is_dirty_for_code_not_for_the_pipelines_outputs(tmp_path: Path) -> None:
    """The commit on the page and in W&B: `dvc repro` rewriting dvc.lock and reports/ leaves it
    clean; a changed tracked source file marks it -dirty; no checkout: None."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert git_commit(tmp_path) is None  # not a checkout
    git("init", "-q")
    for name in ("dvc.lock", "reports/metrics.json", "gon/model.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git("rev-parse", "--short=12", "HEAD")
    (tmp_path / "dvc.lock").write_text("2\n")
    (tmp_path / "reports" / "metrics.json").write_text("2\n")
    (tmp_path / "untracked.txt").write_text("new\n")
    assert git_commit(tmp_path) == head
    assert git_commit(tmp_path / "gon") == head  # from a package dir inside the checkout
    (tmp_path / "gon" / "model.py").write_text("2\n")
    assert git_commit(tmp_path / "gon") == f"{head}-dirty"

