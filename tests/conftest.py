"""Shared fixtures: composed tiny training configs, a prepared digits data dir, offline W&B."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from gon.data import prepare

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# a training job that takes about a second on a CPU
TINY = [
    "logger=none", "device=cpu", "model.hidden_dim=16", "model.latent_dim=8",
    "model.num_layers=2", "train.max_steps=5", "train.batch_size=16", "train.log_every=2",
    "train.eval_every=5", "train.ckpt_every=5", "eval.num_images=32", "eval.fit_images=64",
    "eval.grid_rows=4",
]


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml composed with `overrides` (no Hydra run context)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), ):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `paths.data_dir` with digits prepared (prepared/digits)."""
    root = tmp_path_factory.mktemp("data")
    prepare("digits", raw_root=root / "raw", out_root=root / "prepared")
    return root


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
    """W&B offline, silent, without git probing, writing under tmp_path."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                       "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_API_KEY", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(key, raising=False)
    yield tmp_path


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """The environment for CLI subprocesses: offline W&B under tmp_path, no full Hydra errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true",
               WANDB_DISABLE_GIT="true")
    return env
