"""The DVC pipeline: dvc.yaml/params.yaml consistency (fast), and a shrunk `dvc repro` in a
temporary copy of the repo (slow): metrics, PNGs, W&B runs, a no-op rerun, what a change reruns.

$ python -m pytest tests/test_pipeline.py -q            # -m "not slow" for the fast checks only
"""

from __future__ import annotations

import configparser
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, alive, children, compose_config, subprocess_env, wait_for
from PIL import Image
from wandb_reader import read_run

from gon.app.config import ConfigError, overrides_from, validate_config
from gon.app.evaluate.report import GRIDS

DVC = [str(Path(sys.executable).with_name("dvc"))]  # the venv's, activated or not
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# what a stage's code is: its entry modules, with everything of this repo they import
ENTRY = {"fetch": ["pipelines.fetch"],
         "sweep": ["gon.train", "hydra_plugins.gon_sweeper.gon_sweeper",
                   "hydra_plugins.gon_sweeper._impl", "hydra_plugins.gon_sweeper._tuned"],
         "evaluate": ["gon.evaluate"], "claims": ["gon.claims"]}
# a shrunk pipeline: 4 variants (encoding and loss fixed), tiny models, a few steps
TINY_SWEEP = ("encoding=none loss=bce model.hidden_dim=16 model.latent_dim=8 model.num_layers=2 "
              "train.batch_size=32 train.log_every=5 eval.num_images=64 eval.fit_images=128")
TINY_PARAMS = {"datasets": ["digits"],
               "sweep": {"dataset": "digits", "seeds": 2, "max_steps": 20, "launcher": "joblib",
                         "n_jobs": 2, "overrides": TINY_SWEEP},
               "evaluate": {"probe_images": 200, "grid_rows": 4, "iw_samples": 8},
               "claims": {"dataset": "digits", "steps": 2, "seeds": "0 1", "jobs": 1,
                          "overrides": "model.hidden_dim=16 model.latent_dim=8 "
                                       "model.num_layers=2 train.batch_size=16"}}


def _sweep_overrides(params: dict) -> list[str]:
    s = params["sweep"]
    return ["hparams_search=variants", f"dataset={s['dataset']}",
            f"train.max_steps={s['max_steps']}", *s["overrides"].split()]


def test_params_are_pipeline_knobs_only() -> None:
    cfg = compose_config(_sweep_overrides(PARAMS))
    validate_config(cfg)  # what the sweep stage passes on composes and is valid
    assert not set(PARAMS) & set(cfg), "a params.yaml key restates a conf/ key"
    assert PARAMS["sweep"]["dataset"] in PARAMS["datasets"]  # fetched before it is trained on
    for stage in ("sweep", "evaluate", "claims"):
        for knob in PARAMS[stage]:
            cmd = STAGES[stage]["cmd"]
            assert f"${{{stage}.{knob}}}" in cmd or f"params.yaml:{stage}.{knob}" in cmd
    assert PARAMS["claims"]["dataset"] in PARAMS["datasets"]
    validate_config(compose_config(_sweep_overrides(TINY_PARAMS)))


def test_free_text_overrides_never_reach_the_shell(tmp_path: Path) -> None:
    """DVC interpolates ${...} into a shell command: the free-text overrides go by reference
    (--overrides-from params.yaml:<stage>.overrides) and are split, never run, by the app."""
    for stage in ("sweep", "claims"):
        assert f"${{{stage}.overrides}}" not in STAGES[stage]["cmd"]
        assert f"params.yaml:{stage}.overrides" in STAGES[stage]["cmd"]
    probe = tmp_path / "pwned"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sweep": {"overrides": (
        f"'train.lr=choice(1e-3, 3e-3)' model.hidden_dim=16 $(touch {probe})")}}))
    assert overrides_from(f"{params}:sweep.overrides") == [
        "train.lr=choice(1e-3, 3e-3)", "model.hidden_dim=16", "$(touch", f"{probe})"]
    assert not probe.exists()
    with pytest.raises(ConfigError, match="not a string"):
        overrides_from(f"{params}:sweep")


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_code_deps_cover_what_the_stage_imports(stage: str) -> None:
    code = ("import importlib, sys\n"
            f"for m in {ENTRY[stage]!r}: importlib.import_module(m)\n"
            "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]\n"
            "print('\\n'.join(str(f) for f in files))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    files = [Path(f) for f in out.split() if f.endswith(".py") and Path(f).is_absolute()]
    ours = {f.resolve().relative_to(ROOT).as_posix() for f in files
            if f.resolve().is_relative_to(ROOT) and "site-packages" not in f.parts}
    deps = STAGES[stage].get("do", STAGES[stage])["deps"]  # fetch is a foreach stage
    assert ours and not [f for f in sorted(ours) if not _covered(f, deps)]


def test_deps_keep_tracking_and_evaluation_out_of_training() -> None:
    sweep = STAGES["sweep"]["deps"]
    for path in ("gon/app/evaluate/runs.py", "gon/app/evaluate/report.py",
                 "gon/app/claims/run.py", "conf/logger/wandb.yaml", "params.yaml"):
        assert not _covered(path, sweep), f"editing {path} would retrain"
    assert STAGES["sweep"]["params"] == ["sweep"] and STAGES["evaluate"]["params"] == ["evaluate"]
    assert not _covered("gon/app/evaluate/page.py", STAGES["claims"]["deps"])
    assert STAGES["claims"]["params"] == ["claims"]
    assert "outputs/sweep" in STAGES["evaluate"]["deps"] and STAGES["sweep"]["outs"] == [
        "outputs/sweep"]


def test_dvc_is_initialised_quietly() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config["core"]["analytics"] == "false" and config["core"]["check_update"] == "false"
    assert "hydra" not in "".join(config.sections())  # params.yaml is not composed from conf/


# ------------------------------------------------------------------------------------- slow
def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out


def _copy_repo(dest: Path) -> None:
    """The working tree's tracked and unignored files, without results, as a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if name == "dvc.lock" or name.startswith("reports/") or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def _commit(repo: Path, message: str) -> None:
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", message], cwd=repo, check=True, capture_output=True)


def _status(repo: Path, env: dict[str, str]) -> dict:
    return json.loads(_run([*DVC, "status", "--json"], repo, env) or "{}")


@pytest.mark.slow
def test_shrunk_pipeline_in_a_copy_of_the_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _copy_repo(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    # the stages run `python -m ...`: this interpreter's, whether or not its venv is activated
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = subprocess_env(tmp_path) | {"DVC_NO_ANALYTICS": "1", "PATH": path}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _commit(repo, "a copy")
    _run([*DVC, "repro"], repo, env)

    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    names = {f"none-{b}-bce-{r}" for b in ("siren", "modulated") for r in ("mean", "sum")}
    assert set(metrics) == names | {"best"}
    for name in names:  # 2 seeds each: every interval is defined
        for m in ("psnr", "ssim", "mse", "bce", "probe_acc"):
            iv = metrics[name][m]
            assert iv["n"] == 2 and all(math.isfinite(iv[k]) for k in (
                "mean", "sd", "ci95_low", "ci95_high")), (name, m, iv)
        assert metrics[name]["seeds"] == [0, 1]
        for grid in GRIDS:
            png = np.asarray(Image.open(repo / "reports" / "images" / name / f"{grid}.png"))
            assert png.std() > 0, f"{name}/{grid}.png is blank"
    assert len(list((repo / "reports" / "curves").glob("*.csv"))) == 4
    curves = (repo / "reports" / "val_curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 4 * 6  # 4 variants x 6 budgets (20 steps: 3, 7, 10, 13, 17, 20)
    head = json.loads((repo / "reports" / "headline.json").read_text())  # the answer, short
    assert metrics[head["best"]["variant"]] == metrics["best"]
    assert set(head["effects"]) == {"block", "latent_reduction"}  # the two axes that varied
    shown = _run([*DVC, "metrics", "show"], repo, env)
    print(shown)
    header = shown.splitlines()[0].split()
    assert len(header) <= 40 and "best.variant" in header and "indistinguishable" in header
    assert "wandb.group" in header and "wandb.project" in header
    assert not any(c.startswith(tuple(names)) for c in header)  # not metrics.json's columns
    runs = list(csv.DictReader(open(repo / "reports" / "runs.csv")))
    assert len(runs) == 8 and {r["seed"] for r in runs} == {"0", "1"}
    claims = json.loads((repo / "reports" / "claims.json").read_text())
    assert claims["setup"]["seeds"] == [0, 1] and claims["entries"]
    page = (repo / "reports" / "index.html").read_text()
    assert 'id="claims"' in page and all(e["statement"] in page for e in claims["entries"])
    (claims_run,) = (repo / "reports" / "claims_wandb" / "wandb").glob("offline-run-*")
    assert read_run(claims_run)["run"]["job_type"] == "claims"

    study = json.loads((repo / "outputs" / "sweep" / "study.json").read_text())["study_name"]
    runs = [read_run(d) for d in (repo / "reports" / "wandb").glob("offline-run-*")]
    (summary,) = [r for r in runs if r["run"]["job_type"] == "summary"]
    assert sorted(r["run"]["name"] for r in runs if r["run"]["job_type"] == "eval") == sorted(
        names)
    assert summary["history"][0]["variants/_type"] == "table-file"
    assert summary["history"][0]["variants/nrows"] == 4
    trains = [read_run(d) for d in (repo / "outputs" / "sweep" / "wandb").glob("offline-run-*")]
    assert len(trains) == 8 and {r["run"]["group"] for r in runs  # one W&B dir:
                                 if r["run"]["job_type"] != "claims"} == {study}
    assert {r["run"]["job_type"] for r in runs} == {"train", "eval", "summary", "claims"}
    assert len(runs) == 8 + 4 + 1 + 1  # reports/wandb, what `wandb leet reports/wandb` shows
    assert {r["run"]["id"] for r in trains} <= {r["run"]["id"] for r in runs}
    assert head["wandb"] == {"project": "gon", "group": study}  # `dvc metrics show` names it

    start = time.perf_counter()  # a second repro does nothing
    out = _run([*DVC, "repro"], repo, env)
    assert "Data and pipelines are up to date" in out and "Running stage" not in out
    print(f"no-op dvc repro: {time.perf_counter() - start:.1f} s")

    _commit(repo, "results")
    _share_through_a_remote(repo, tmp_path, env)
    wandb_conf = repo / "conf" / "logger" / "wandb.yaml"  # a tracking setting retrains nothing
    wandb_conf.write_text(wandb_conf.read_text().replace("project: gon", "project: other"))
    assert _status(repo, env) == {}
    params = yaml.safe_load((repo / "params.yaml").read_text())  # a sweep knob retrains
    params["sweep"]["max_steps"] = 25
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(_status(repo, env)) == {"sweep"}  # evaluate follows once the sweep has rerun
    subprocess.run(["git", "checkout", "--", "."], cwd=repo, check=True)

    out = _run([*DVC, "exp", "run", "-S", "evaluate.grid_rows=2"], repo, env)
    assert "Stage 'sweep' didn't change, skipping" in out and "Running stage 'evaluate'" in out
    assert "evaluate.grid_rows" in _run([*DVC, "params", "diff"], repo, env)
    with Image.open(repo / "reports" / "images" / "none-siren-bce-sum" / "superres.png") as img:
        assert img.width == 2 * 34 + 2  # 2 columns of 4x renders of 8 px


def _share_through_a_remote(repo: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """docs/experiments.md, "Sharing results": a default remote (a directory here), `dvc push
    --run-cache`, then a fresh clone with `dvc pull` has the page and the checkpoints, and its
    `dvc repro` runs no stage."""
    remote = tmp_path / "remote"
    _run([*DVC, "remote", "add", "-d", "shared", str(remote)], repo, env)
    _commit(repo, "the shared remote")
    out = _run([*DVC, "push", "--run-cache"], repo, env)
    assert "pushed" in out, out
    assert list((remote / "runs").rglob("*")), "the run cache was not pushed"

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "reports" / "index.html").exists()  # results come from the remote
    _run([*DVC, "pull"], clone, env)
    assert "claims" in (clone / "reports" / "index.html").read_text()
    assert len(list((clone / "outputs" / "sweep").glob("*/checkpoint.pt"))) == 8
    assert list((clone / "reports" / "wandb").glob("offline-run-*"))
    assert (clone / "data" / "prepared" / "digits").is_dir()
    out = _run([*DVC, "repro"], clone, env)
    assert "Data and pipelines are up to date" in out and "Running stage" not in out, out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return "?"


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])
def test_a_killed_dvc_repro_takes_the_sweep_along(tmp_path: Path, shell: str) -> None:
    """SIGKILL of `dvc repro` mid-sweep: the sweeper and its workers stop too, so the next
    `dvc repro`, which deletes outputs/sweep first, has no writer there. DVC runs the stage
    with `$SHELL -c`: bash execs the command (DVC is the sweeper's parent), dash (Debian's
    /bin/sh) does not (a shell sits between them)."""
    shell = shutil.which(shell) or pytest.skip(f"no {shell} here")
    repo = tmp_path / "repo"
    _copy_repo(repo)
    params = json.loads(json.dumps(TINY_PARAMS))
    # trials far too long to end by themselves while the test waits
    params["sweep"].update(max_steps=20000, overrides=TINY_SWEEP + " train.ckpt_every=5")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = subprocess_env(tmp_path) | {"DVC_NO_ANALYTICS": "1", "PATH": path, "SHELL": shell}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _commit(repo, "a copy")
    dvc = subprocess.Popen([*DVC, "repro", "sweep"], cwd=repo, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(lambda: (repo / "outputs" / "sweep" / "0" / "checkpoint.pt").exists() or
             dvc.poll() is not None, timeout=600, what="the sweep's first checkpoint")
    assert dvc.poll() is None, "dvc repro ended before it could be killed"
    below = {p for p in children(dvc.pid)  # the sweep's processes (not DVC's own helpers)
             if not _cmdline(p).startswith((DVC[0], f"{sys.executable} {DVC[0]}"))}
    assert below
    os.kill(dvc.pid, signal.SIGKILL)
    dvc.wait(timeout=60)
    names = {p: _cmdline(p) for p in below}
    try:
        wait_for(lambda: not any(alive(p) for p in below), timeout=120, what="")
    except AssertionError:
        left = {p: names.get(p, "?") for p in below if alive(p)}
        for p in left:  # so that they do not slow down the tests after this one
            os.kill(p, signal.SIGKILL)
        raise AssertionError(f"still running 120 s after dvc was killed: {left}") from None
