"""The composed config: where conf/ lives, compose() outside Hydra, and the rules every value
must pass before a job trains.

Usage:
    cfg = compose(["block=modulated"])
    validate_config(cfg)  # raises ConfigError listing every bad value
    cfg = stored_config(ckpt["config"], "run/checkpoint.pt")  # as data: no ${...}, validated
"""

from __future__ import annotations

import functools
import math
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from gon import (
    TrainStep,
)
from gon.app.data.datasets import BINARIZE
from gon.app.metrics import HIGHER_IS_BETTER
from gon.app.variants import AXES, ENCODER_AXIS, ENCODERS, VARIATIONAL, encoder_choice
from gon.core.blocks import ACTIVATIONS
from gon.core.model import PIXEL_REDUCTIONS, STEP_SIZES

ENCODER_NETS = ("auto", "mlp", "conv")


FINAL_ACTIVATIONS = {"sigmoid": torch.sigmoid, "none": None}
LR_SCHEDULES = ("constant", "cosine")  # train.lr_schedule (gon.app.train.loop.lr_factor)



# the repo's conf/, by path: Hydra would resolve a relative path against the package "gon.app"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def overrides_from(spec: str) -> list[str]:
    """The Hydra overrides in a params file's string value, `<file>:<dotted key>` (e.g.
    params.yaml:sweep.overrides), split as a shell would split them but never run by one: DVC
    passes the spec, not the value, so nothing from params.yaml reaches a shell."""
    path, _, key = spec.rpartition(":")
    if not path or not key:
        raise ConfigError(f"--overrides-from {spec!r}: expected <file>:<dotted key>")
    try:
        value = OmegaConf.select(OmegaConf.load(path), key, default=None)
    except OSError as e:
        raise ConfigError(f"--overrides-from {spec!r}: {e.strerror}") from e
    if not isinstance(value, str):
        raise ConfigError(f"--overrides-from {spec!r}: {key} is not a string in {path}")
    try:
        return shlex.split(value)
    except ValueError as e:
        raise ConfigError(f"--overrides-from {spec!r}: {e}") from e


def compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    """conf/ composed outside a Hydra app (claims, benchmarks, tests), as `python -m gon.train`
    would compose it with these overrides; `hydra=True` keeps the hydra node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        return hydra_compose("config", overrides=overrides, return_hydra_config=hydra)


def default_choices() -> dict[str, str]:
    """conf/config.yaml's default option of each config group, e.g. {"block": "siren", ..}:
    the reference levels of the effects (gon.app.factorial.effects)."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").get("defaults", [])
    return {str(k): str(v) for d in defaults if isinstance(d, DictConfig)
            for k, v in d.items() if v is not None}


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cuda' -> a GPU, or an error without CUDA (never a
    silent CPU fallback). A sweep's trial on an unpinned GPU then takes a free GPU slot
    (gon.app.train.slots), not this cuda:0."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", 0)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r} (must be auto, cpu, cuda, cuda:<index> or, on a Mac, "
                         "mps)")
    if device.type == "mps" and not (torch.backends.mps.is_built() and
                                     torch.backends.mps.is_available()):
        raise ValueError(f"device={name!r} but MPS (Apple GPUs) is not available here "
                         "(use device=auto)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here (use device=auto)")
    if device.type == "cuda" and device.index is None:  # like auto, but CUDA or an error
        device = torch.device("cuda", 0)
    return device


class ConfigError(ValueError):
    """The configuration holds values that cannot be trained."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int_at_least(lo: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= lo), f"an integer >= {lo}"


def _positive() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_num(v) and v > 0), "a number > 0"


_BOOL = (lambda v: isinstance(v, bool)), "true or false"


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int_at_least(0),
    "optimized_metric": ((lambda v: v in HIGHER_IS_BETTER), f"one of {sorted(HIGHER_IS_BETTER)}"),
    "model.latent_dim": _int_at_least(1),
    "model.hidden_dim": _int_at_least(1),
    "model.num_layers": _int_at_least(1),
    "model.latent_updates": _int_at_least(1),
    "model.learn_origin": _BOOL,
    "model.step_size": ((lambda v: v in STEP_SIZES), ", ".join(STEP_SIZES)),
    "model.final_activation": (
        (lambda v: v in FINAL_ACTIVATIONS), ", ".join(FINAL_ACTIVATIONS)
    ),
    "encoder.name": ((lambda v: v in ENCODERS), ", ".join(ENCODERS)),
    "loss.pixel_reduction": (
        (lambda v: v in PIXEL_REDUCTIONS), ", ".join(PIXEL_REDUCTIONS)
    ),
    "train.weight_decay": ((lambda v: _is_num(v) and v >= 0), "a number >= 0"),
    "train.step_size_lr": ((lambda v: v is None or (_is_num(v) and v > 0)), "null or > 0"),
    "model.dropout": ((lambda v: _is_num(v) and 0 <= v < 1), "a number in [0, 1)"),
    "model.kl_weight": ((lambda v: _is_num(v) and v >= 0), "a number >= 0"),
    "model.kl_warmup_steps": _int_at_least(0),
    "train.max_steps": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.lr": _positive(),
    "train.lr_schedule": ((lambda v: v in LR_SCHEDULES), ", ".join(LR_SCHEDULES)),
    "train.compile": ((lambda v: v in (True, False, "auto")), "true, false or auto"),
    "train.compile_mode": (
        (lambda v: v in TrainStep.COMPILE_MODES), ", ".join(TrainStep.COMPILE_MODES)
    ),
    "train.log_every": _int_at_least(1),
    "train.eval_every": _int_at_least(1),
    "train.ckpt_every": _int_at_least(1),
    "train.curve_points": _int_at_least(0),
    "train.resume": _BOOL,
    "train.matmul_precision": (
        (lambda v: v in ("highest", "high", "medium")), "highest, high or medium"
    ),
    "train.step_path": ((lambda v: v in TrainStep.PATHS), ", ".join(TrainStep.PATHS)),
    "eval.num_images": _int_at_least(1),
    "eval.val_fraction": ((lambda v: _is_num(v) and 0 < v <= 0.5), "a fraction in (0, 0.5]"),
    "eval.fit_images": _int_at_least(2),
    "eval.grid_rows": _int_at_least(1),
    "eval.iw_samples": _int_at_least(1),
    "dataset.image_size": ((lambda v: v is None or (_is_int(v) and v >= 2)), "null or >= 2"),
    "dataset.binarize": ((lambda v: v is False or v in BINARIZE[1:]), "false, fixed or dynamic"),
}


# keys checked only where the chosen group option has them
_OPTIONAL_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "block.w0": _positive(),
    "block.w0_initial": ((lambda v: v is None or (_is_num(v) and v > 0)), "null or > 0"),
    "block.activation": ((lambda v: v in ACTIVATIONS), ", ".join(ACTIVATIONS)),
    "block.linear_map": _BOOL,
    "encoding.n": _int_at_least(1),
    "encoding.mapping_size": _int_at_least(1),
    "encoding.sigma": _positive(),
    "encoding.trainable": _BOOL,
    "dataset.source": ((lambda v: v is None or isinstance(v, str)), "null or a folder of images"),
    "encoder.net": ((lambda v: v in ENCODER_NETS), ", ".join(ENCODER_NETS)),
    "encoder.hidden_dim": ((lambda v: v is None or (_is_int(v) and v >= 1)), "null or >= 1"),
    "encoder.num_layers": _int_at_least(1),
}


LIKELIHOOD_METRICS = ("val/nelbo",)  # objectives only a model with an ELBO has


@functools.cache
def group_options(group: str) -> tuple[str, ...]:
    """The `name`s of conf/<group>/*.yaml: the choices of a variant axis, e.g. ("mse", "bce")."""
    return tuple(sorted(str(OmegaConf.load(p).get("name")) for p in (CONF_DIR / group).glob(
        "*.yaml")))


def validate_config(cfg: DictConfig, check_device: bool = True) -> None:
    """Raise one ConfigError naming every invalid value, before anything is loaded or trained
    (check_device=False: leave `device` to the machine that trains, e.g. a SLURM node)."""
    problems = []
    for key, (ok, need) in list(_RULES.items()) + list(_OPTIONAL_RULES.items()):
        group, _, leaf = key.rpartition(".")
        if key in _OPTIONAL_RULES and leaf not in (cfg.get(group) or {}):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if not ok(value):
            problems.append(f"{key}={value!r} (must be {need})")
    for group in (*AXES, ENCODER_AXIS):  # a variant's name is made of these (ids, file names)
        name = OmegaConf.select(cfg, f"{group}.name", default=None)
        if (group in cfg or group != ENCODER_AXIS) and name not in group_options(group):
            problems.append(f"{group}.name={name!r} (must be one of "
                            f"{', '.join(group_options(group))}: conf/{group}/*.yaml)")
    encoder = encoder_choice(cfg)
    if encoder in VARIATIONAL and cfg.loss.name != "bce":
        problems.append(f"encoder={encoder} needs loss=bce (the ELBO's Bernoulli likelihood), "
                        f"got loss={cfg.loss.name}")
    final = OmegaConf.select(cfg, "model.final_activation", default="sigmoid")
    if encoder in VARIATIONAL and final != "sigmoid":
        problems.append(f"encoder={encoder} needs model.final_activation=sigmoid (the "
                        f"Bernoulli's logits), got {final}")
    if cfg.optimized_metric in LIKELIHOOD_METRICS and encoder not in VARIATIONAL:
        problems.append(f"optimized_metric={cfg.optimized_metric} needs a model with an ELBO "
                        f"(encoder={' or '.join(VARIATIONAL)}), got encoder={encoder}")
    try:
        if check_device:
            resolve_device(cfg.device)
    except (ValueError, RuntimeError) as e:
        problems.append(str(e))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def stored_config(container: Any, source: str) -> DictConfig:
    """A config stored resolved (a checkpoint's), read back as data: refused if a value holds
    an interpolation (`${oc.env:...}` would copy this machine's environment into the report),
    then validated; one ConfigError naming `source` either way."""
    def interpolations(node: Any, key: str) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from interpolations(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from interpolations(v, f"{key}[{i}]")
        elif isinstance(node, str) and "${" in node:
            yield key

    if not isinstance(container, dict):
        raise ConfigError(f"{source}: its config is not a mapping")
    if found := list(interpolations(container, "")):
        raise ConfigError(f"{source}: its config holds interpolations ({', '.join(found[:5])}); "
                          "gon stores configs resolved, so it was not written by gon and is "
                          "not read")
    cfg = OmegaConf.create(container)
    try:
        validate_config(cfg, check_device=False)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg
