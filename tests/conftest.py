"""Shared fixtures: composed tiny training configs, a prepared digits data dir, offline W&B, a
throwaway PostgreSQL server, a throwaway SLURM cluster. Helper functions live in helpers.py
(and slurm.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import TINY, compose_config, postgres_bindir, postgres_cluster, subprocess_env
from omegaconf import DictConfig
from slurm import slurm_binaries, slurm_cluster

from gon.app.data.datasets import prepare
from gon.app.train.job import train

# the tiny sweep's runs: two variants, the first with two seeds
TINY_SWEEP = {"0": ["block=siren", "latent_reduction=sum"],
              "1": ["block=modulated", "latent_reduction=mean", "loss=mse", "encoding=nerf"],
              "2": ["block=siren", "latent_reduction=sum", "seed=1"]}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `paths.data_dir` with digits prepared (prepared/digits)."""
    root = tmp_path_factory.mktemp("data")
    prepare("digits", raw_root=root / "raw", out_root=root / "prepared")
    return root


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A sweep dir of three tiny trained runs (TINY_SWEEP, 12 steps), trials 0..2, with W&B
    offline runs in their own group (study-1)."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in subprocess_env(root).items():
            if key.startswith("WANDB_"):
                mp.setenv(key, value)
        mp.setenv("WANDB_RUN_GROUP", "study-1")
        mp.delenv("WANDB_API_KEY", raising=False)
        for job, overrides in TINY_SWEEP.items():
            train(compose_config([*TINY, "logger=wandb", "train.max_steps=12",
                                  f"paths.data_dir={data_dir}",
                                  f"paths.output_dir={root / 'sweep' / job}", *overrides]))
    return root / "sweep"


@pytest.fixture
def tiny_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """tiny_cfg(*overrides, run="run") -> a tiny config writing to tmp_path/run."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(
            [*TINY, f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path / run}",
             *overrides]
        )

    return make


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B offline, silent, without git probing, writing under tmp_path (the same environment
    as the CLI subprocesses get)."""
    for key in ("WANDB_API_KEY", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(key, raising=False)
    for key, value in subprocess_env(tmp_path).items():
        if key.startswith("WANDB_"):
            monkeypatch.setenv(key, value)
    yield tmp_path


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 at a free port, with a database `gon` and a
    password: its URL. The server is stopped (and its files removed) however the tests end.
    Skipped only when the server binaries are absent."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql")
    with postgres_cluster(bindir) as url:
        yield url


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """A throwaway single-node SLURM cluster on 127.0.0.1 (tests/slurm.py): the environment
    its clients need (SLURM_CONF). Stopped however the tests end. Skipped only when the
    binaries (slurm-wlm, munge) are absent; needs root (slurmd starts the jobs)."""
    if not slurm_binaries():
        pytest.skip("SLURM binaries (slurmctld, slurmd, munged, sbatch) not found: "
                    "apt-get install slurm-wlm munge")
    with slurm_cluster() as env:
        yield env
