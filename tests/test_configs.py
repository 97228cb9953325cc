"""conf/: every option of every group composes, validates and builds; Hydra and W&B settings.

$ python -m pytest tests/test_configs.py -q
"""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf

from gon import GON
from gon.app.build import build_model
from gon.app.config import CONF_DIR, ENCODERS, ConfigError, validate_config
from gon.app.data.datasets import DATASETS
from gon.app.variants import AXES, SEED

GROUPS = ["block", "dataset", "encoder", "encoding", "latent_reduction", "logger", "loss"]
OVERLAYS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in GROUPS)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_groups_are_the_variant_axes() -> None:
    assert set(OVERLAYS) <= {"hydra", "hparams_search", "experiment", "debug"}
    options = {g: {o for gg, o in OPTIONS if gg == g} for g in GROUPS}
    assert options["block"] == {"siren", "modulated", "relu"}
    assert options["encoding"] == {"none", "nerf", "gaussian"}
    assert options["loss"] == {"mse", "bce"}
    assert options["latent_reduction"] == {"mean", "sum"}
    assert options["encoder"] == set(ENCODERS)
    assert options["dataset"] == set(DATASETS)
    assert options["logger"] == {"wandb", "none"}


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_validates_and_builds(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    if "name" in cfg[group]:
        assert cfg[group].name == option
    validate_config(cfg)
    model = build_model(cfg, channels=3 if option == "cifar10" else 1, image_size=(4, 4))
    assert isinstance(model, GON)
    out = model(torch.zeros(1, 4, 4, 2), torch.zeros(2, cfg.model.latent_dim))
    assert out.shape == (2, 4, 4, 3 if option == "cifar10" else 1)


@pytest.mark.parametrize("group", [*AXES, "encoder"])
def test_an_axis_name_outside_its_group_is_refused(group: str) -> None:
    """A variant's name is made of these names (page ids, image dirs): none but conf's."""
    bad = "<img src=x onerror=alert(1)>/x"
    with pytest.raises(ConfigError, match=rf"{group}\.name=.*conf/{group}/\*\.yaml"):
        validate_config(compose_config([f"{group}.name='{bad}'"]))


@pytest.mark.parametrize(
    "override",
    [f"{g}={f.stem}" for g in OVERLAYS if g != "hydra" for f in (CONF_DIR / g).glob("*.yaml")],
)
def test_every_overlay_option_composes(override: str) -> None:
    validate_config(compose_config([override]))


def test_unknown_option_lists_the_choices() -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_config(["block=sine"])
    assert all(name in str(err.value) for name in ("siren", "modulated", "relu"))


def test_unknown_key_is_refused() -> None:
    with pytest.raises(Exception, match="model.hiden_dim"):
        compose_config(["model.hiden_dim=3"])


def test_defaults_and_reserved_sweep_slot() -> None:
    cfg = compose_config([])
    assert (cfg.dataset.name, cfg.block.name, cfg.optimized_metric) == ("digits", "siren",
                                                                        "val/psnr")
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").defaults
    assert {"hparams_search": None} in defaults  # not optional: a misspelt name is an error


def test_hydra_dirs_and_sweeper() -> None:
    cfg = compose_config([], hydra=True)
    raw = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert raw["sweep"]["subdir"] == "${hydra.job.num}"
    assert cfg.hydra.run.dir.startswith("outputs/") and cfg.hydra.sweep.dir.startswith("outputs/")
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "basic"


@pytest.mark.parametrize(("env", "mode"), [(None, "offline"), ("online", "online")])
def test_wandb_mode_defaults_to_offline(monkeypatch, env: str | None, mode: str) -> None:
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert compose_config([]).logger.wandb.mode == mode
    assert compose_config(["logger=none"]).logger.wandb is None


def test_search_overlay_sets_the_objective() -> None:
    """An overlay's optimized_metric beats config.yaml's (it comes after _self_)."""
    assert compose_config(["hparams_search=variational"]).optimized_metric == "val/nelbo"
    assert compose_config(["hparams_search=variants"]).optimized_metric == "val/psnr"


def test_variants_overlay_sweeps_the_variant_axes() -> None:
    params = OmegaConf.load(CONF_DIR / "hparams_search" / "variants.yaml").hydra.sweeper.params
    assert list(params) == [*AXES, SEED]  # the grid, its order and the variant names agree


SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").iterdir())


@pytest.mark.parametrize("overlay", SEARCHES)
def test_every_searched_value_is_valid(overlay: str) -> None:
    """Both ends of every searched range compose and validate (an int key gets ints)."""
    params = OmegaConf.load(CONF_DIR / "hparams_search" / f"{overlay}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    for key, grammar in params.items():
        dist = create_optuna_distribution_from_override(parser.parse_override(f"{key}={grammar}"))
        ends = dist.choices if hasattr(dist, "choices") else (dist.low, dist.high)
        for value in ends:
            validate_config(compose_config([f"{key}={value}"]))
