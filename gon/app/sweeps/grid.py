"""Grid sweeps with replicate seeds: every point of (variant axes x seed) is queued explicitly,
so that resuming with more seeds (or any larger grid) trains only the points not yet run.

Optuna's GridSampler numbers its points by position in the grid; a grid with one more seed
renumbers them, and it would train duplicates. The sweeper therefore enqueues the missing
points (fixed params; GridSampler leaves enqueued trials alone) before it asks for trials.

Usage:
    for params in missing_points(study, {"block": ["siren", "modulated"], "seed": [0, 1, 2]}):
        study.enqueue_trial(params)
"""

from __future__ import annotations

import itertools
from typing import Any

import optuna

from gon.app.sweeps.trials import Fate, classify
from gon.app.variants import AXES, ENCODER_AXIS, SEED, variant_name


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the grid, the last key varying fastest (so a variant's seeds are
    neighbours when the seed is the last key)."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def taken_points(study: optuna.Study, keys: list[str]) -> set[tuple]:
    """Points the study has run, is running or has queued; a failed trial counts (it is not
    retried), an interrupted one does not (its re-queued copy is WAITING)."""
    return {tuple(t.params.get(k, t.system_attrs.get("fixed_params", {}).get(k)) for k in keys)
            for t, fate in classify(study) if fate is not Fate.INTERRUPTED}


def missing_points(study: optuna.Study, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The grid's points the study has not taken, in grid order."""
    taken = taken_points(study, list(grid))
    return [p for p in grid_points(grid) if tuple(p.values()) not in taken]


def fingerprint_excludes(grid: dict[str, list[Any]] | None) -> set[str]:
    """Keys left out of a study's fingerprint: the seed of a grid, so that a resume may ask
    for more (or fewer) seeds without being refused as a different sweep."""
    return {SEED} if grid and SEED in grid else set()


def point_variant(point: dict[str, Any], config: Any) -> str:
    """The variant (gon.app.variants.variant_name, the encoder axis included) that a trial with
    these swept and fixed values trains: the config's choice on every axis the point leaves."""
    return variant_name({a: {"name": point[a]} if a in point else config.get(a) or {}
                         for a in (*AXES, ENCODER_AXIS)})
