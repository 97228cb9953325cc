"""A sweep's summary: its best trial, each trial's row, written to summary.json and printed.

The sweeper plugin (hydra_plugins/gon_sweeper) writes it at the end of a sweep; `python -m
gon.sweep <sweep dir>` prints it again (gon.app.sweeps.cli).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gon.app.reliability.checkpoint import save_json
from gon.app.sweeps.checks import FINGERPRINT
from gon.app.sweeps.record import mask_url
from gon.app.sweeps.trials import DIR, ERROR, Fate, classify

log = logging.getLogger(__name__)


SUMMARY = "summary.json"


def _overrides(t: FrozenTrial) -> list[str]:
    """The trial's overrides: swept params, then the sweep's fixed ones (stored as user attrs)."""
    fixed = {k: v for k, v in t.user_attrs.items() if not k.startswith("sweep:")}
    return [f"{k}={v}" for k, v in {**fixed, **t.params}.items()]


def trial_row(t: FrozenTrial, fate: Fate, sweep_dir: Path) -> dict[str, Any]:
    """A trial's row: number, state, fate (trials.Fate), params, run dir, value(s), error."""
    subdir = t.user_attrs.get(DIR, str(t.number))
    row = {"number": t.number, "state": t.state.name, "fate": fate.value, "params": t.params,
           "dir": str(sweep_dir / subdir)}
    if t.values is not None:
        row["value" if len(t.values) == 1 else "values"] = t.values[0] if len(
            t.values) == 1 else t.values
    if ERROR in t.user_attrs:
        row["error"] = t.user_attrs[ERROR]
    return row


def summarize(study: optuna.Study, sweep_dir: Path, n_trials: int,
              storage: str | None = None) -> dict[str, Any]:
    """The sweep's summary: best trial (value, params, overrides, config file), failures,
    and one row per trial."""
    fates = classify(study)
    states: dict[str, int] = {}
    for _, fate in fates:
        states[fate.value] = states.get(fate.value, 0) + 1
    summary: dict[str, Any] = {
        "study_name": study.study_name, "storage": mask_url(storage) if storage else None,
        "directions": [d.name.lower() for d in study.directions],
        "objective": study.user_attrs.get(FINGERPRINT, {}).get("objective"),
        "n_trials": n_trials, "states": states, "best": None,
        "failures": [trial_row(t, f, sweep_dir) for t, f in fates if f is Fate.FAILED],
        "trials": [trial_row(t, f, sweep_dir) for t, f in fates],
    }
    if any(t.state == TrialState.COMPLETE for t, _ in fates):  # what best_trial needs
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
        fate = {t.number: f for t, f in fates}
        rows = []
        for t in best:
            row = trial_row(t, fate[t.number], sweep_dir)
            row["overrides"] = _overrides(t)
            row["config"] = str(Path(row["dir"]) / ".hydra" / "config.yaml")
            rows.append(row)
        summary["best"] = rows[0] if len(rows) == 1 else rows
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short text block: counts, best trial, failures."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["states"].items()))
    lines = [f"== sweep {summary['study_name']}: {states or 'no trials'} "
             f"(budget {summary['n_trials']}) =="]
    best = summary["best"]
    for b in best if isinstance(best, list) else [best] if best else []:
        value = b.get("value", b.get("values"))
        value = f"{value:.6g}" if isinstance(value, float) else value
        lines.append(f"best: trial {b['number']} {summary['objective'] or 'value'}={value} "
                     f"{' '.join(f'{k}={v}' for k, v in b['params'].items())}")
        lines.append(f"      dir {b['dir']}")
    if not best:
        lines.append("best: none (no trial completed)")
    for f in summary["failures"]:
        lines.append(f"failed: trial {f['number']} {f['params']}: {f.get('error', '?')}")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], sweep_dir: Path) -> Path:
    path = sweep_dir / SUMMARY
    save_json(path, summary, sort_keys=False, default=str)  # atomic: never half a summary
    return path


def write_upstream_results(summary: dict[str, Any], sweep_dir: Path) -> None:
    """The upstream Optuna sweeper's optimization_results.yaml (best params and value), for
    tools that read it; nothing when the sweep has no single best (multi-objective, none)."""
    from omegaconf import OmegaConf

    best = summary["best"]
    if isinstance(best, dict):
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best["params"],
                                         "best_value": best["value"]}),
                       sweep_dir / "optimization_results.yaml")
