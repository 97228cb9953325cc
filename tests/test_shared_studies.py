"""Several sweepers on one study: two at once on a new sweep dir (sqlite), on a journal file and
on a real PostgreSQL server, one of them SIGKILLed mid-way and started again; the Optuna
dashboard on a finished study. Every run is a real CLI process.

$ python -m pytest tests/test_shared_studies.py -q         # -m "not postgres" without the server
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from helpers import ROOT, free_port, run, start, train_cli, wait_for
from optuna.trial import TrialState

from gon.app.sweeps import checks as chk
from gon.app.sweeps import record as rec
from gon.app.sweeps import studies
from gon.app.sweeps import trials as st

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sweep_args(data_dir: Path, sweep_dir: Path, *extra: str) -> list[str]:
    # 16 variants (fewer if `extra` fixes axes), one seed, 12 steps each, a checkpoint every 3
    return train_cli(data_dir, "hparams_search=variants", "seed=0",
                     f"hydra.sweep.dir={sweep_dir}", "train.max_steps=12", "train.ckpt_every=3",
                     "train.eval_every=12", *extra)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    return out


def _check_one_study(sweep_dir: Path, storage: str, n: int) -> optuna.Study:
    """One study holding n complete, distinct trials in n distinct run dirs; nothing RUNNING or
    WAITING; the only failures are interrupted trials (re-run in their dirs); and no run dir was
    trained more often than the study launched a trial in it."""
    assert len(optuna.study.get_all_study_names(studies.open_storage(storage))) == 1
    name = json.loads((sweep_dir / rec.RECORD).read_text())["study_name"]
    study = optuna.load_study(study_name=name, storage=studies.open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n, [(t.number, t.state.name) for t in trials]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n
    assert len({t.user_attrs[st.DIR] for t in complete}) == n
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get(st.INTERRUPTED) for t in trials if t.state == TrialState.FAIL)
    for t in complete:
        run_dir = sweep_dir / t.user_attrs[st.DIR]
        launched = sum(u.user_attrs.get(st.DIR) == t.user_attrs[st.DIR] for u in trials)
        starts = (run_dir / "train.log").read_text().count("] - training dataset=")
        assert 1 <= starts <= launched, f"{run_dir}: trained {starts} times, launched {launched}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["step"] == 12 and metrics["objective"] == pytest.approx(t.value)
    return study


def _two_sweepers_one_killed(tmp_path: Path, args: list[str], sweep_dir: Path, n: int) -> None:
    """Start two identical sweepers at once; SIGKILL the first once 4 trials have a checkpoint
    (before the grid is done), start it again; both must finish cleanly."""
    first, second = start(args, tmp_path, capture=False), start(args, tmp_path)
    wait_for(lambda: len(list(sweep_dir.glob("*/checkpoint.pt"))) >= 4 or
             first.poll() is not None, what="4 trials with a checkpoint")
    assert first.poll() is None, "the first sweeper ended before it could be killed"
    assert len(list(sweep_dir.glob("*/metrics.json"))) < n, "finished before the kill"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    again = start(args, tmp_path)
    _finish(second)
    _finish(again)


@pytest.mark.slow
def test_two_sweepers_on_one_new_sweep_dir_share_its_study(tmp_path: Path, data_dir: Path):
    """The first sweep command of docs/experiments.md, twice at the same moment on a new sweep
    dir (sqlite, the default storage): one study, one budget, each variant trained once."""
    sweep_dir = tmp_path / "sweep"
    args = _sweep_args(data_dir, sweep_dir, "encoding=none", "loss=bce")  # a 4-variant grid
    a, b = start(args, tmp_path), start(args, tmp_path)
    outs = [_finish(a), _finish(b)]
    study = _check_one_study(sweep_dir, f"sqlite:///{sweep_dir / rec.DEFAULT_DB}", 4)
    assert len(study.trials) == 4  # nobody trained beyond the budget
    assert sum("nothing to launch" in o for o in outs) == 2


@pytest.mark.slow
def test_two_sweepers_on_a_journal_file_one_killed(tmp_path: Path, data_dir: Path) -> None:
    """journal:///<path>: Optuna's JournalStorage on a plain file (the NFS-safe storage)."""
    sweep_dir, log = tmp_path / "sweep", tmp_path / "shared" / "sweep.log"
    url = f"journal://{log}"  # journal:// + /abs/path
    args = _sweep_args(data_dir, sweep_dir, "encoding=none", f"hydra.sweeper.storage={url}")
    _two_sweepers_one_killed(tmp_path, args, sweep_dir, 8)
    assert log.stat().st_size > 0 and not (sweep_dir / rec.DEFAULT_DB).exists()
    _check_one_study(sweep_dir, url, 8)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_sweepers_on_postgresql_one_killed(tmp_path: Path, data_dir: Path,
                                                postgres_url: str) -> None:
    """The plain documented URL, postgresql://user:pw@host:port/db (psycopg 3), two sweepers
    started at the same moment on a fresh database, one SIGKILLed mid-way and started again:
    16 complete distinct trials, none RUNNING, none trained twice."""
    sweep_dir = tmp_path / "sweep"
    args = _sweep_args(data_dir, sweep_dir, f"hydra.sweeper.storage={postgres_url}")
    _two_sweepers_one_killed(tmp_path, args, sweep_dir, 16)
    study = _check_one_study(sweep_dir, postgres_url, 16)
    record = (sweep_dir / rec.RECORD).read_text()
    assert "s3cret" not in record and "postgresql://postgres:***@127.0.0.1" in record
    assert study.user_attrs[chk.N_TRIALS] == 16


def _files_holding(root: Path, secret: str) -> list[str]:
    """`grep -r secret root`, binary files (W&B's .wandb logs, pickles) included."""
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("form", ["env", "literal"])
def test_no_storage_password_on_disk(tmp_path: Path, data_dir: Path, postgres_url: str,
                                     form: str) -> None:
    """The recipe of docs/experiments.md (Storage): the URL in $GON_STORAGE_URL, the sweep
    given 'hydra.sweeper.storage=${oc.env:GON_STORAGE_URL}', gon.evaluate and gon.sweep reading
    the variable (with the password in PGPASSWORD instead, psycopg's own). A sweep with W&B,
    its evaluation and summary leave the password in no file (.hydra, study.json, W&B runs, the
    report). A password typed on the command line gets a warning and is masked in all of them."""
    password = "s3cret"
    assert f":{password}@" in postgres_url
    sweep_dir, reports = tmp_path / "sweep", tmp_path / "reports"
    env = {"GON_STORAGE_URL": postgres_url} if form == "env" else {}
    storage = ("${oc.env:GON_STORAGE_URL}" if form == "env" else postgres_url)
    args = _sweep_args(data_dir, sweep_dir, "encoding=none", "loss=bce", "block=siren",
                       "train.max_steps=4", "train.eval_every=4", "logger=wandb",
                       f"hydra.sweeper.storage={storage}")
    out = run(args, tmp_path, **env)
    assert ("holds a password in plain text" in out) == (form == "literal"), out[-3000:]
    evaluate = [sys.executable, "-m", "gon.evaluate", str(sweep_dir), str(reports),
                "--probe-images", "50"]
    out = run(evaluate + ([] if form == "env" else ["--storage", postgres_url]), tmp_path, **env)
    assert "best variant" in out
    no_password = postgres_url.replace(f":{password}@", "@")  # libpq reads PGPASSWORD
    out = run([sys.executable, "-m", "gon.sweep", str(sweep_dir)], tmp_path,
              GON_STORAGE_URL=no_password, PGPASSWORD=password)
    assert "2/2" in out or "2 complete" in out, out[-2000:]
    assert len(list(tmp_path.rglob("run-*.wandb"))) >= 4  # 2 trials, 2 eval runs, a summary
    assert _files_holding(tmp_path, password) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_optuna_dashboard_serves_a_finished_study(tmp_path: Path, kind: str) -> None:
    """optuna-dashboard (the [dashboard] extra) on a finished study, as docs/experiments.md
    starts it: /api/studies lists the study; stopped by its pid."""
    storage = (f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite"
               else f"journal://{tmp_path / 'sweep.log'}")
    study = optuna.create_study(study_name="gon-finished", storage=studies.open_storage(storage),
                                direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    target = storage if kind == "sqlite" else str(tmp_path / "sweep.log")
    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), target, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:
            assert proc.poll() is None, "optuna-dashboard exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5):
                    return True
            except OSError:
                return False

        wait_for(answers, timeout=120, what="optuna-dashboard answering")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
            listed = json.loads(r.read())["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in listed] == [
            ("gon-finished", ["maximize"])]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
