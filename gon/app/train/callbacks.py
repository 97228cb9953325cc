"""The answer printed at the end of every multirun (`python -m gon.train -m ...`): the effects of
what varied and the top of the ranking, on the validation objective each run's metrics.json
holds (no test scoring at the end of training: `gon-evaluate` scores the test split).

conf/hydra/default.yaml registers MultirunAnswer as a Hydra callback, so it runs after any
launcher and sweeper (basic, joblib, submitit; the Optuna grid and tuned sweeps); `gon-sweep`
prints the same table with every variant's mean.

Usage:
    python -m gon.train -m block=siren,modulated 'seed=range(0,3)'   # ... then the table
    print(validation_answer(Path("outputs/sweep"), top=16))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gon.app.config import default_choices
from gon.app.factorial import effects
from gon.app.metrics import HIGHER_IS_BETTER
from gon.app.stats import ranking, ranking_table
from gon.app.variants import SEED, VARIANT_AXES, variant_choices, variant_name

log = logging.getLogger(__name__)

NOT_FACTORS = ("hydra", "hparams_search", "paths", "logger", "device", SEED)  # override keys
MAX_LEVELS = 5  # a swept value with more levels than this (a tuned float) is not a factor


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    items = OmegaConf.load(path) if path.exists() else []
    pairs = (str(o).lstrip("+~").partition("=") for o in items)
    return {k: v for k, _, v in pairs if k.split(".")[0] not in NOT_FACTORS}


def read_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per finished run under a sweep dir (metrics.json next to .hydra/config.yaml):
    its variant axes, the other overridden values, seed, objective name and value."""
    rows = []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        config = path.parent / ".hydra" / "config.yaml"
        if not config.exists():
            continue
        cfg, metrics = OmegaConf.load(config), json.loads(path.read_text())
        metric = metrics.get("optimized_metric") or cfg.get("optimized_metric", "val/psnr")
        rows.append({**_overrides(path.parent),
                     **dict(zip(VARIANT_AXES, variant_choices(cfg, VARIANT_AXES), strict=True)),
                     "variant": variant_name(cfg), "seed": cfg.get(SEED, 0),
                     "metric": metric, "value": metrics.get(metric),
                     "diverged": bool(metrics.get("diverged"))})
    return rows


def validation_answer(sweep_dir: Path, top: int | None = 5) -> str | None:
    """The effects of what varied and the ranking's top `top` on the validation objective of a
    sweep's runs (top None: every variant); None without finished runs."""
    rows = [r for r in read_runs(sweep_dir) if isinstance(r["value"], (int, float))]
    diverged = [r for r in rows if r["diverged"]]  # counted, never averaged in
    rows = [r for r in rows if not r["diverged"]]
    if not rows:
        return None
    metric = rows[0]["metric"]
    rows = [r for r in rows if r["metric"] == metric]
    extra = sorted({k for r in rows for k in r} - {*VARIANT_AXES, "variant", "seed", "metric",
                                                   "value", "diverged"})
    extra = [k for k in extra if 1 < len({r.get(k) for r in rows}) <= MAX_LEVELS]
    samples: dict[str, list[float]] = {}
    for r in rows:  # a variant is its axes and the other values that vary
        key = " ".join([r["variant"], *(f"{k}={r.get(k)}" for k in extra)])
        samples.setdefault(key, []).append(float(r["value"]))
    factors = [f for f in (*VARIANT_AXES, *extra) if len({str(r.get(f)) for r in rows}) > 1]
    label = f"validation {metric.removeprefix('val/')}"
    fit = effects(rows, factors, "value", default_choices())
    fit.metric = metric
    ranked = ranking(samples, HIGHER_IS_BETTER.get(metric, True))
    left_out = f" ({len(diverged)} diverged, left out)" if diverged else ""
    head = (f"== {sweep_dir}: {len(rows)} runs{left_out}, {label} at the end of training "
            "(test split: gon-evaluate) ==")
    return "\n".join([head, fit.table(label),
                      ranking_table(ranked, top, label)])


class MultirunAnswer(Callback):
    """Prints validation_answer(sweep dir) when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            text = validation_answer(sweep_dir)
        except Exception as e:  # a summary must not fail the multirun that trained
            log.warning("no effects table for %s: %s: %s", sweep_dir, type(e).__name__, e)
            return
        if text:
            print(text, flush=True)
