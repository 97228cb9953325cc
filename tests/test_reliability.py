"""Reliability (issue 14): one writer per run dir, no orphaned worker, no partial result that
looks finished, retries of failed trials, and one clear line for every fault. CLI runs are real
processes; read-only and full disks are real mounts (root only, else skipped).

$ python -m pytest tests/test_reliability.py -q          # add -m "not slow" for the unit checks
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from helpers import (
    ROOT,
    alive,
    children,
    compose_config,
    free_port,
    read_only,
    run,
    small_disk,
    start,
    train_cli,
    wait_for,
)
from hydra.errors import MissingConfigException
from PIL import Image
from wandb_reader import read_run

from gon.app import tracking
from gon.app.data.datasets import DatasetError, prepare
from gon.app.evaluate import cli as ev
from gon.app.metrics import image_metrics
from gon.app.reliability import secrets
from gon.app.reliability.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_json,
)
from gon.app.reliability.faults import describe
from gon.app.reliability.lifecycle import RUN_LOCK, RunDirBusy, file_lock, hold_run_dir
from gon.app.sweeps import record as rec
from gon.app.train.cli import unknown_search
from gon.app.train.job import train

optuna.logging.set_verbosity(optuna.logging.WARNING)
SEARCHES = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml")))
LONG = ("train.max_steps=600", "train.ckpt_every=5", "train.eval_every=600")  # killable runs
SWEEP = ("train.max_steps=200", "train.ckpt_every=5", "train.eval_every=200")  # killable trials


def _one_line_error(out: str, needle: str) -> None:
    assert "Traceback" not in out, out[-4000:]
    lines = [x for x in out.splitlines() if needle in x]
    assert lines, out[-4000:]


def _holder(run_dir: Path) -> int:
    return json.loads((run_dir / RUN_LOCK).read_text())["pid"]


# ------------------------------------------------------------------ one writer per run dir
def test_run_dir_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path\n"
            "from gon.app.reliability.lifecycle import hold_run_dir\n"
            "with hold_run_dir(Path(sys.argv[1])):\n print('held', flush=True)\n"
            " time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=f"is being trained by pid {holder.pid} on "):
            with hold_run_dir(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait()
    with hold_run_dir(tmp_path):
        assert _holder(tmp_path) == os.getpid()


@pytest.mark.slow
def test_a_second_training_of_one_run_dir_is_refused(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    # the first trains until interrupted: on a loaded machine a 600-step run can end before
    # the second process has started
    endless = ("train.max_steps=10000000", "train.ckpt_every=5", "train.eval_every=10000000")
    first = start(train_cli(data_dir, *endless, f"hydra.run.dir={run_dir}"), tmp_path)
    wait_for(lambda: (run_dir / "checkpoint.pt").exists() or first.poll() is not None)
    out = run(train_cli(data_dir, *endless, "model.hidden_dim=8", f"hydra.run.dir={run_dir}"),
              tmp_path, ok=False)
    _one_line_error(out, f"is being trained by pid {first.pid}")
    assert first.poll() is None, "the first run ended before the second was refused"
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # the first run's, intact
    assert ckpt["config"]["model"]["hidden_dim"] == 16 and ckpt["step"] >= 5


# ------------------------------------------------------------------ nothing outlives its parent
@pytest.mark.slow
def test_a_killed_sweeper_takes_its_joblib_workers_along(tmp_path: Path, data_dir: Path):
    sweep_dir = tmp_path / "sweep"
    args = train_cli(data_dir, "hparams_search=variants", "seed=0", "encoding=none",
                     "loss=bce", *LONG, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     f"hydra.sweep.dir={sweep_dir}")
    proc = start(args, tmp_path, capture=False)
    wait_for(lambda: all((sweep_dir / d / "checkpoint.pt").exists() for d in "01"),
             what="both workers training")
    workers = children(proc.pid)
    assert {_holder(sweep_dir / d) for d in "01"} <= workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not any(alive(p) for p in workers), timeout=60,
             what=f"the workers {sorted(workers)} exiting")


# ------------------------------------------------------------------ faults: one line each
@pytest.mark.slow
def test_unknown_hparams_search_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    out = run(train_cli(data_dir, "hparams_search=variant", f"hydra.run.dir={tmp_path / 'r'}"),
              tmp_path, ok=False)
    _one_line_error(out, f"unknown hparams_search=variant; valid names: {SEARCHES}")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "bad"), [
    (["hparams_search=variant"], "variant"), (["-m", "hparams_search=tpe,x"], "x"),
    (["hparams_search=variants"], None), (["hparams_search=null"], None), (["seed=1"], None)])
def test_unknown_hparams_search_is_caught_before_hydra(argv: list[str], bad: str | None):
    msg = unknown_search(argv)
    assert msg == (bad and f"unknown hparams_search={bad}; valid names: {SEARCHES}")


def test_unknown_hparams_search_does_not_compose() -> None:
    with pytest.raises(MissingConfigException, match="hparams_search/variant"):
        compose_config(["hparams_search=variant"])


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path: Path, data_dir: Path) -> None:
    argv = train_cli(data_dir, *LONG, f"hydra.run.dir={tmp_path / 'r'}")
    proc = start(argv, tmp_path)
    wait_for(lambda: (tmp_path / "r" / "checkpoint.pt").exists() or proc.poll() is not None)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    _one_line_error(out, "interrupted; rerun the same command to resume")
    step = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"]
    assert f"resuming {tmp_path / 'r'} from step {step}" in run([*argv, "train.max_steps=10"],
                                                                 tmp_path)


@pytest.mark.slow
def test_a_killed_joblib_worker_is_one_line_and_resumable(tmp_path: Path, data_dir: Path):
    sweep_dir = tmp_path / "sweep"
    args = train_cli(data_dir, "hparams_search=variants", "seed=0", "encoding=none", "loss=bce",
                     "block=siren", *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     f"hydra.sweep.dir={sweep_dir}")
    proc = start(args, tmp_path)
    wait_for(lambda: (sweep_dir / "0" / "checkpoint.pt").exists() or proc.poll() is not None)
    os.kill(_holder(sweep_dir / "0"), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    _one_line_error(out, "a trial's worker process died")
    out = run(args, tmp_path)
    assert "re-queued" in out or "resuming" in out, out[-3000:]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["states"]["COMPLETE"] == 2 and not summary["failures"]


def _finished_run(tmp_path: Path, data_dir: Path, run_dir: Path, *overrides: str) -> None:
    run(train_cli(data_dir, f"hydra.run.dir={run_dir}", *overrides), tmp_path)


@pytest.mark.slow
def test_read_only_run_dir_and_data_dir_are_one_line(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    _finished_run(tmp_path, data_dir, run_dir)
    with read_only(run_dir):  # even a finished run writes its logs and .hydra/ again
        out = run(train_cli(data_dir, f"hydra.run.dir={run_dir}"), tmp_path, ok=False)
    _one_line_error(out, "Read-only file system")
    (tmp_path / "empty").mkdir()
    with read_only(tmp_path / "empty"):  # nothing prepared there, and nothing can be
        out = run(train_cli(tmp_path / "empty", f"hydra.run.dir={tmp_path / 'r2'}"), tmp_path,
                  ok=False)
    _one_line_error(out, "cannot write")


@pytest.mark.slow
def test_disk_full_is_one_line_and_the_checkpoint_survives(tmp_path: Path, data_dir: Path):
    with small_disk(tmp_path / "disk", "6m") as disk:
        run_dir = disk / "run"
        wide = ("model.hidden_dim=256", "model.num_layers=3")  # a checkpoint of ~0.8 MB
        _finished_run(tmp_path, data_dir, run_dir, *wide)
        filler = disk / "filler"
        with open(filler, "wb") as f:  # leave about 300 KB: room for logs, not a checkpoint
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            f.write(b"\0" * max(0, free - 300_000))
        out = run(train_cli(data_dir, f"hydra.run.dir={run_dir}", *wide, "train.max_steps=10"),
                  tmp_path, ok=False)
        _one_line_error(out, "disk full")
        assert "nothing already saved is lost" in out
        assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 5
        assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_corrupt_study_database_and_too_large_model_are_one_line(tmp_path: Path,
                                                                  data_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "optuna.db").write_bytes(b"this is not a database" * 100)
    out = run(train_cli(data_dir, "hparams_search=variants", f"hydra.sweep.dir={sweep_dir}"),
              tmp_path, ok=False)
    _one_line_error(out, "the study database is corrupt")
    out = run(train_cli(data_dir, "model.hidden_dim=1000000", "model.num_layers=3",
                        f"hydra.run.dir={tmp_path / 'big'}"), tmp_path, ok=False)
    _one_line_error(out, "out of memory")


@pytest.mark.slow
@pytest.mark.parametrize(("override", "line"), [
    ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 (must be an integer >= 1)"),
    ("train.max_steps=-1", "train.max_steps=-1 (must be an integer >= 1) (for every trial"),
    ("hydra.sweeper.n_trials=47", "hydra.sweeper.n_trials=47 is below the grid's 48 points"),
])
def test_bad_sweep_settings_stop_before_the_first_trial(tmp_path: Path, data_dir: Path,
                                                        override: str, line: str) -> None:
    sweep_dir = tmp_path / "sweep"
    out = run(train_cli(data_dir, "hparams_search=variants", override,
                        f"hydra.sweep.dir={sweep_dir}"), tmp_path, ok=False)
    _one_line_error(out, line)
    assert out.count(line) == 1 and "Launching" not in out
    assert not sweep_dir.exists() or not [p for p in sweep_dir.iterdir() if p.name.isdigit()]


def test_unwritable_data_dir_and_memory_are_described(tiny_cfg, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with read_only(tmp_path / "empty"):
        with pytest.raises(OSError) as err:
            train(tiny_cfg(f"paths.data_dir={tmp_path / 'empty'}"))
    msg = describe(err.value)
    assert msg.startswith("cannot write ") and "\n" not in msg
    with pytest.raises(RuntimeError) as err:
        train(tiny_cfg("model.hidden_dim=1000000", "model.num_layers=3"))
    assert describe(err.value).startswith("out of memory")


def test_checkpoints_that_are_not_ours_are_refused_with_reasons(tmp_path: Path) -> None:
    class Code:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    torch.save({"step": 1, "x": Code()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "code.pt")
    assert "refused to load" in str(err.value) and "could run code" in str(err.value)
    assert "weights_only" not in str(err.value)  # no advice to load it unsafely
    torch.save({"step": 1, "model": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a gon checkpoint .*'config'"):
        load_checkpoint(tmp_path / "bare.pt")


def test_corrupt_metrics_json_is_recomputed(tiny_cfg, tmp_path: Path) -> None:
    first = train(tiny_cfg())
    (tmp_path / "run" / "metrics.json").write_text('{"step": 5, "val/ps')
    assert train(tiny_cfg()) == first
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["objective"] == first


def test_leftovers_of_killed_writes_are_removed(tiny_cfg, tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare("digits", raw_root=data / "raw", out_root=data / "prepared")
    stale_dir = data / "prepared" / ".digits.tmp-abc123"
    stale_dir.mkdir()
    (tmp_path / "run").mkdir()
    stale_file = tmp_path / "run" / ".checkpoint.pt.k3j4.tmp"
    stale_file.touch()
    train(tiny_cfg(f"paths.data_dir={data}"))
    assert not stale_dir.exists() and not stale_file.exists()


# ------------------------------------------------------------------ small images, W&B
def test_ssim_window_fits_small_images() -> None:
    gen = torch.Generator().manual_seed(0)
    for side in range(2, 13):
        a = torch.rand(4, side, side, 1, generator=gen)
        assert image_metrics(a, a)["val/ssim"] == pytest.approx(1.0, abs=1e-5), side
        assert math.isfinite(image_metrics(a.flip(1), a)["val/ssim"])


@pytest.mark.parametrize("size", [2, 5])
def test_tiny_images_train(tiny_cfg, size: int) -> None:
    assert math.isfinite(train(tiny_cfg(f"dataset.image_size={size}")))


def test_tiny_image_folder_fails_up_front(tiny_cfg, tmp_path: Path) -> None:
    src = tmp_path / "pics"
    src.mkdir()
    for i in range(5):
        Image.new("L", (8, 8), color=40 * i).save(src / f"{i}.png")
    with pytest.raises(DatasetError, match="only 5 image.*at least 6"):
        train(tiny_cfg("dataset=image_folder", f"dataset.source={src}",
                       f"paths.data_dir={tmp_path / 'data'}"))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_wandb_online_without_network_falls_back_to_offline(
        tiny_cfg, wandb_offline: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(tracking, "_offline_since", [], raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    caplog.set_level("WARNING", logger="gon.app.tracking")
    objective = train(tiny_cfg("logger=wandb", "logger.wandb.init_timeout=3"))
    assert math.isfinite(objective)
    assert "logging offline instead" in caplog.text
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert read_run(run_dir)["summary"]["objective"] == pytest.approx(objective)


# ------------------------------------------------------------------ partial sweeps, retries
def _evaluate(sweep_dir: Path, reports: Path, *flags: str) -> int:
    return ev.main([str(sweep_dir), str(reports), "--probe-images", "64", "--rows", "2",
                    "--device", "cpu", *flags])


@pytest.mark.slow
def test_partial_sweep_is_refused_then_marked_partial_then_retried(
        tmp_path: Path, data_dir: Path, wandb_offline: Path, caplog) -> None:
    """A 2-trial sweep whose trial 1 fails (a corrupt checkpoint in its run dir): evaluate
    refuses it, naming the trial and the command that resumes it; --partial writes a report
    that says so; retry_failed=true re-runs the trial once the fault is gone; a deleted run
    dir is refused too, and retried the same way."""
    sweep_dir, reports = tmp_path / "sweep", tmp_path / "reports"
    (sweep_dir / "1").mkdir(parents=True)
    (sweep_dir / "1" / "checkpoint.pt").write_bytes(b"garbage")
    args = train_cli(data_dir, "hparams_search=variants", "seed=0", "encoding=none", "block=siren",
                     "loss=bce", "logger=wandb", f"hydra.sweep.dir={sweep_dir}")
    run(args, tmp_path)
    caplog.set_level("INFO")
    assert _evaluate(sweep_dir, reports, "--no-wandb") == 2
    assert "1 of 2 trials finished (1 failed)" in caplog.text
    assert "failed: trial 1" in caplog.text and "cannot read checkpoint" in caplog.text
    assert "hydra.sweeper.retry_failed=true" in caplog.text and "--partial" in caplog.text
    assert not reports.exists()

    assert _evaluate(sweep_dir, reports, "--partial") == 0
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["complete"] is False and metrics["trials"]["finished"] == 1
    (failed,) = metrics["failed_trials"]
    assert failed["trial"] == 1 and "cannot read checkpoint" in failed["error"]
    assert "Partial report" in (reports / "index.html").read_text()
    summaries = [r for d in (reports / "wandb").glob("offline-run-*")
                 if (r := read_run(d))["run"]["job_type"] == "summary"]
    assert [s["config"]["complete"] for s in summaries] == [False]

    assert "nothing to launch" in run(args, tmp_path)  # failed trials are not retried...
    (sweep_dir / "1" / "checkpoint.pt").unlink()
    run([*args, "hydra.sweeper.retry_failed=true"], tmp_path)  # ...unless asked to
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 2, "RETRIED": 1} and not summary["failures"]

    shutil.rmtree(sweep_dir / "0")  # a finished trial's run dir deleted
    caplog.clear()
    assert _evaluate(sweep_dir, reports, "--no-wandb") == 2
    assert "missing: trial 0" in caplog.text
    run([*args, "hydra.sweeper.retry_failed=true"], tmp_path)
    assert _evaluate(sweep_dir, reports, "--no-wandb") == 0
    assert "complete" not in json.loads((reports / "metrics.json").read_text())


# ---------------------------------------------------------------- secrets (issue 22, item 1)
@pytest.mark.parametrize("url,masked", [
    ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u@h/db?password=pw&sslmode=require",
     "postgresql://u@h/db?password=***&sslmode=require"),
    ("postgresql+psycopg://u:p%40w@h/db", "postgresql+psycopg://u:***@h/db"),
    ("journal:///shared/sweep.log", "journal:///shared/sweep.log"),
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
    ("postgresql://u:pw@h:notaport/db", secrets.UNPARSED),  # fail closed
    ("u:pw@h", secrets.UNPARSED),
])
def test_mask_url_hides_every_password_and_fails_closed(url: str, masked: str) -> None:
    assert rec.mask_url(url) == masked
    if "://" in url:  # a command line's URLs, as W&B and study.json record them
        assert secrets.mask_argv([f"hydra.sweeper.storage={url}", "--storage", url]) == [
            f"hydra.sweeper.storage={masked}", "--storage", masked]


def test_wandb_records_the_command_line_masked(wandb_offline: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B keeps the program's arguments (wandb-metadata); a storage URL among them is masked."""
    monkeypatch.setattr(sys, "argv", ["gon-evaluate", "--storage", "postgresql://u:s3cret@h/db"])
    run_ = tracking.init_run(project="gon-test", mode="offline", dir=str(wandb_offline))
    run_.finish()
    assert sys.argv[2] == "postgresql://u:s3cret@h/db"  # restored
    (log,) = wandb_offline.rglob("run-*.wandb")
    wait_for(lambda: b"postgresql://u:***@h/db" in log.read_bytes(), timeout=60,
             what="the run's metadata in its log")  # W&B's service writes it on its own time
    assert b"s3cret" not in log.read_bytes()


# ---------------------------------------------------------------- issue 22, low items
def _state(**extra: object) -> dict:
    return {"model": {"w": torch.full((256,), 1.5)}, "optimizer": {}, "step": 3, "rng": {},
            "best": {}, "last_train": {}, "config": {"seed": 0}, **extra}


def test_a_checkpoint_with_flipped_bytes_is_refused(tmp_path: Path) -> None:
    """4 flipped bytes in a tensor's data load without error in torch; the checksum sees them."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((256,), 1.5))
    raw = bytearray(path.read_bytes())
    at = raw.find(torch.full((256,), 1.5).numpy().tobytes())  # the tensor's bytes in the file
    raw[at + 100 : at + 104] = b"\x00\x00\x80\x7f"  # one float becomes +inf
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its own sha256"):
        load_checkpoint(path)


def test_files_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        save_json(tmp_path / "a.json", {"x": 1})
        save_checkpoint(tmp_path / "c.pt", _state())
    finally:
        os.umask(old)
    assert {(p.name, p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {
        ("a.json", 0o600), ("c.pt", 0o600)}


def test_the_run_dir_lock_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """A lock file planted as a link (in a shared sweep dir) must not make gon create or
    truncate the file it points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_LOCK).symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"), hold_run_dir(run_dir):
        pass
    assert victim.read_text() == "keep me"
    with pytest.raises(OSError, match="symbolic link"), file_lock(run_dir / RUN_LOCK):
        pass
    assert victim.read_text() == "keep me"
