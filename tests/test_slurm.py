"""The SLURM launcher against a real SLURM controller (a throwaway single-node cluster, see
slurm.py): the 16-variant tiny grid runs as job arrays and finishes; a task cancelled with
scancel while it runs has its trial re-queued and trained again, no other trial twice; a
missing sbatch and an unknown partition are one line each, before any study file is written.

$ python -m pytest tests/test_slurm.py -q          # as root, with slurm-wlm and munge installed
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import run, start, train_cli, wait_for
from optuna.trial import TrialState
from slurm import PARTITION

from gon.app.sweeps import record as rec
from gon.app.sweeps import trials as st

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
# the repo's SLURM launcher, shrunk to the test node: no GPU, one CPU and no memory request each
SLURM = ("hydra/launcher=slurm", "device=cpu", "hydra.launcher.gpus_per_node=null",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null",
         "hydra.launcher.timeout_min=10")


def _grid(data_dir: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return train_cli(data_dir, f"hydra.sweep.dir={sweep_dir}", "hparams_search=variants",
                     "seed=0", *SLURM, *overrides)


def _no_study(sweep_dir: Path) -> None:
    assert not (sweep_dir / rec.RECORD).exists() and not (sweep_dir / rec.DEFAULT_DB).exists()


def _squeue(env: dict[str, str], state: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", f"--states={state}",
                          "--format=%i"], env=os.environ | env, capture_output=True, text=True)
    return out.stdout.split()


def test_without_sbatch_one_line_and_no_study(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "nosbatch"
    bare = tmp_path / "bin"  # a PATH with python only: no SLURM client
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    out = run(_grid(data_dir, sweep_dir, f"hydra.launcher.partition={PARTITION}"), tmp_path,
              ok=False, PATH=str(bare))
    assert "hydra/launcher=slurm needs SLURM's sbatch on PATH" in out, out[-3000:]
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    _no_study(sweep_dir)


def test_unknown_partition_one_line_and_no_study(tmp_path: Path, data_dir: Path,
                                                 slurm_env: dict[str, str]) -> None:
    sweep_dir = tmp_path / "nopart"
    out = run(_grid(data_dir, sweep_dir, "hydra.launcher.partition=nope"), tmp_path, ok=False,
              **slurm_env)
    assert (f"hydra.launcher.partition=nope: no such SLURM partition here (sinfo lists: "
            f"{PARTITION})") in out, out[-3000:]
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    _no_study(sweep_dir)


def test_grid_on_slurm_survives_a_cancelled_task(tmp_path: Path, data_dir: Path,
                                                 slurm_env: dict[str, str]) -> None:
    sweep_dir = tmp_path / "grid"
    proc = start(_grid(data_dir, sweep_dir, f"hydra.launcher.partition={PARTITION}"), tmp_path,
                 **slurm_env)
    running: list[str] = []

    def some_running() -> bool:
        running[:] = _squeue(slurm_env, "RUNNING")
        return bool(running)

    wait_for(some_running, timeout=300, what="a running SLURM task")
    cancelled = running[0]  # "<array>_<task>"; task k of the first array is trial k
    subprocess.run(["scancel", cancelled], env=os.environ | slurm_env, check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-6000:]
    trial = int(cancelled.split("_")[1])
    assert f"trial {trial}: SLURM task {cancelled} ended without a result; re-queued" in out, \
        out[-6000:]

    study = optuna.load_study(
        study_name=json.loads((sweep_dir / rec.RECORD).read_text())["study_name"],
        storage=f"sqlite:///{sweep_dir / rec.DEFAULT_DB}")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    (lost,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(done) == 16 and len(study.trials) == 17
    assert lost.number == trial and lost.user_attrs[st.INTERRUPTED]
    (retry,) = [t for t in done if t.system_attrs.get("failed_trial") == trial]
    assert retry.user_attrs[st.DIR] == str(trial) and retry.params == lost.params
    assert len({t.user_attrs[st.DIR] for t in done}) == 16  # one run dir per variant
    for t in done:
        assert json.loads((sweep_dir / t.user_attrs[st.DIR] / "metrics.json").read_text())[
            "objective"] == pytest.approx(t.value)
    # 17 SLURM tasks: the 16 of the grid and the cancelled one's retry; 16 results
    tasks = list((sweep_dir / ".submitit").glob("*/*_submitted.pkl"))
    results = list((sweep_dir / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 16, sorted(p.name for p in results)
    assert len({p.parent.name for p in tasks}) == 17, sorted(p.parent.name for p in tasks)
