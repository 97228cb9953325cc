"""The variant axes: what makes two runs of one sweep different GON variants, defined once.

A variant is one choice in each config group of ``AXES``; its name joins them in that order,
e.g. ``none-siren-bce-sum``. The dataset is not part of the name (a sweep trains one dataset)
but is a key of the run's tags and of the checks that a checkpoint belongs to its run.
Tracking, evaluation, the report, the sweep overlay check and the tests all read this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

AXES = ("encoding", "block", "loss", "latent_reduction")  # a variant's name, in this order
SEED = "seed"  # the replicate key: one run per seed and variant; a swept param of the grid
# the latent's encoder (GON or a baseline); in the name only when it is not the default, so the
# names (and report keys) of gradient-origin variants stay e.g. none-siren-bce-sum
ENCODER_AXIS, DEFAULT_ENCODER = "encoder", "gradient_origin"
# the options of conf/encoder/; VARIATIONAL: those whose model has an ELBO (a Gaussian posterior)
ENCODERS = (DEFAULT_ENCODER, "detached", "autoencoder", "autoencoder_matched", "variational",
            "vae")
VARIATIONAL = ("variational", "vae")
VARIANT_AXES = (*AXES, ENCODER_AXIS)  # every axis a variant differs on (effects are per axis)
# what identifies a run's variant across sweeps (tags, resume)
RUN_AXES = ("dataset", *VARIANT_AXES)


def encoder_choice(cfg: DictConfig | dict[str, Any]) -> str:
    """The config's encoder (a config without the group, from before it existed: the GON)."""
    group = cfg.get(ENCODER_AXIS) or {}
    return str(group.get("name", DEFAULT_ENCODER))


def variant_choices(cfg: DictConfig | dict[str, Any], axes: tuple[str, ...] = AXES) -> list[str]:
    """The config's choice on each axis, e.g. ["none", "siren", "bce", "sum"]."""
    return [encoder_choice(cfg) if axis == ENCODER_AXIS else str(cfg[axis]["name"])
            for axis in axes]


def variant_name(cfg: DictConfig | dict[str, Any]) -> str:
    """`<encoding>-<block>-<loss>-<latent_reduction>`, e.g. nerf-siren-bce-sum, then
    `-<encoder>` unless it is the GON's (none-siren-bce-sum-detached)."""
    encoder = encoder_choice(cfg)
    return "-".join(variant_choices(cfg) + ([encoder] if encoder != DEFAULT_ENCODER else []))


def variant_tags(cfg: DictConfig | dict[str, Any]) -> list[str]:
    """One tag per run axis, e.g. ["dataset=digits", "encoding=none", "block=siren", ...]."""
    return [f"{a}={c}" for a, c in zip(RUN_AXES, variant_choices(cfg, RUN_AXES), strict=True)]


def run_name(cfg: DictConfig | dict[str, Any]) -> str:
    """`<variant>/seed<k>`, e.g. none-siren-bce-sum/seed2: a run's name (W&B, logs)."""
    return f"{variant_name(cfg)}/seed{cfg[SEED]}"


@dataclass
class Variant:
    """One trained run of a variant: its scores, grids (uint8 RGB arrays) and curves."""

    name: str  # e.g. nerf-siren-bce-sum
    run_dir: Path
    config: dict[str, Any]  # the resolved training config
    metrics: dict[str, float] = field(default_factory=dict)
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # empty for all but one seed
    curve: list[dict[str, float]] = field(default_factory=list)  # rows of step + train losses
    val_curve: list[dict[str, float]] = field(default_factory=list)  # rows of step + val/*
    # rows {"steps", "psnr"}: test PSNR encoding with 1 .. 2k latent steps (k: as trained)
    encoding_curve: list[dict[str, float]] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return int(self.config.get(SEED, 0))
