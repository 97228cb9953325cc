"""From a composed config to checked values, a device, the images and a GON model.

Usage:
    validate_config(cfg)  # raises ConfigError listing every bad value
    device = resolve_device(cfg.device)
    train_images, test_images = load_images(cfg, device)  # prepares the dataset on first use
    model = build_model(cfg, channels=train_images.shape[-1]).to(device)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gon import (
    GON,
    GaussianFourierFeatureTransform,
    IdentityPositionalEncoding,
    ImplicitDecoder,
    LinearBlockFactory,
    NeRFPositionalEncoding,
    SirenBlockFactory,
    TrainStep,
)
from gon.app.data import load_splits, prepare
from gon.app.metrics import HIGHER_IS_BETTER
from gon.core.blocks import ACTIVATIONS


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
    "model.dropout": ((lambda v: _is_num(v) and 0 <= v < 1), "a number in [0, 1)"),
    "train.max_steps": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.lr": _positive(),
    "train.compile": _BOOL,
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
    "eval.fit_images": _int_at_least(2),
    "eval.grid_rows": _int_at_least(1),
    "dataset.image_size": ((lambda v: v is None or (_is_int(v) and v >= 2)), "null or >= 2"),
}
# keys checked only where the chosen group option has them
_OPTIONAL_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "block.w0": _positive(),
    "block.w0_initial": ((lambda v: v is None or (_is_num(v) and v > 0)), "null or > 0"),
    "block.activation": ((lambda v: v in ACTIVATIONS), ", ".join(ACTIVATIONS)),
    "encoding.n": _int_at_least(1),
    "encoding.mapping_size": _int_at_least(1),
    "encoding.sigma": _positive(),
    "encoding.trainable": _BOOL,
    "dataset.source": ((lambda v: v is None or isinstance(v, str)), "null or a folder of images"),
}


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
    try:
        if check_device:
            resolve_device(cfg.device)
    except (ValueError, RuntimeError) as e:
        problems.append(str(e))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def resolve_device(name: str, job_num: int | None = None) -> torch.device:
    """'auto' -> cuda (cuda:<job_num % device count> in a multirun) if available, else cpu;
    'cuda' -> the same GPU, or an error without CUDA (never a silent CPU fallback)."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (job_num or 0) % torch.cuda.device_count())
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
        device = torch.device("cuda", (job_num or 0) % torch.cuda.device_count())
    return device


def load_images(cfg: DictConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) images (N, H, W, C) on `device`, preparing the dataset on first use."""
    d, root = cfg.dataset, Path(cfg.paths.data_dir)
    extra = {"source": d.source, "size": d.image_size} if d.name == "image_folder" else {}
    prepare(d.name, raw_root=root / "raw", out_root=root / "prepared", **extra)
    (train, _), (test, _) = load_splits(  # prepare has just checked the artefact
        d.name, ("train", "test"), root / "prepared", d.image_size, device, verify=False
    )
    return train, test


def build_encoding(cfg: DictConfig, in_dim: int, seed: int) -> torch.nn.Module:
    e = cfg.encoding
    if e.name == "none":
        return IdentityPositionalEncoding(in_dim)
    if e.name == "nerf":
        return NeRFPositionalEncoding(in_dim, n=e.n)
    if e.name == "gaussian":
        return GaussianFourierFeatureTransform(
            in_dim, mapping_size=e.mapping_size, sigma=e.sigma, seed=seed, trainable=e.trainable
        )
    raise ConfigError(f"encoding.name={e.name!r} (must be none, nerf or gaussian)")


def build_model(cfg: DictConfig, channels: int, in_dim: int = 2) -> GON:
    """The GON described by cfg.model and the block, encoding, loss and reduction groups."""
    b, m = cfg.block, cfg.model
    if b.name in ("siren", "modulated"):
        factory = SirenBlockFactory(w0=b.w0, w0_initial=b.w0_initial)
    else:
        factory = LinearBlockFactory(activation=b.activation)
    decoder = ImplicitDecoder(
        latent_dim=m.latent_dim,
        out_dim=channels,
        hidden_dim=m.hidden_dim,
        num_layers=m.num_layers,
        block_factory=factory,
        pos_encoder=build_encoding(cfg, in_dim, cfg.seed),
        modulation=b.modulation,
        dropout=m.dropout,
    )
    return GON(
        decoder,
        latent_updates=m.latent_updates,
        learn_origin=m.learn_origin,
        loss=cfg.loss.name,
        latent_reduction=cfg.latent_reduction.name,
    )
