"""The answer of a sweep: the effect of each axis that varied on every test metric, the same
effects at every validation budget, one row per run (reports/runs.csv) and the headline metrics
(reports/headline.json, what `dvc metrics show` prints).

Usage:
    eff = sweep_effects(runs)              # runs: one Variant per trained run
    eff.test["psnr"].main[0]               # {"factor": "block", "level": "modulated",
                                           #  "reference": "siren", "estimate": -0.61, ..}
    eff.by_step[0]                         # {"step": 100, "factor": .., "estimate": .., ..}
    eff = write_tables(runs, comp, Path("reports"))  # the same, and runs.csv, effects.json,
                                                     # headline.json; comp.effects = eff
    print(answer(comp, eff))               # the printed effects table and the ranking's top

The model, its coding and the reference levels are gon.app.factorial.effects' (docs/statistics.md,
"Effects"): one OLS fit per metric over the per-run values, the references being conf/'s
defaults (none, siren, bce, sum, gradient_origin), so an effect reads "switching from the
default to this level changes the metric by ..".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gon.app.config import default_choices
from gon.app.evaluate.compare import CURVE_METRIC, Comparison, finished, metric_names
from gon.app.factorial import Effects, effects
from gon.app.reliability.checkpoint import save_csv, save_json
from gon.app.stats import indistinguishable, ranking_table
from gon.app.variants import VARIANT_AXES as FACTORS
from gon.app.variants import Variant, variant_choices

RUNS_FILE, EFFECTS_FILE, HEADLINE_FILE = "runs.csv", "effects.json", "headline.json"
# the W&B effects table's columns (one row per effect and test metric; step: by_step's rows)
EFFECT_COLUMNS = ["metric", "step", "term", "factor", "level", "reference", "estimate",
                  "ci95_low", "ci95_high", "p", "n", "n_ref"]


@dataclass
class SweepEffects:
    """The effects of a sweep's axes: per test metric, and on validation PSNR per budget."""

    factors: list[str]  # the axes that varied
    reference: dict[str, str]  # each factor's reference level
    test: dict[str, Effects] = field(default_factory=dict)  # metric -> its effects
    by_step: list[dict] = field(default_factory=list)  # rows: step + an Effects row (main
    # effects and interactions on validation CURVE_METRIC after `step` training steps)

    def to_dict(self) -> dict[str, Any]:
        return {"factors": self.factors, "reference": self.reference,
                "test": {m: e.to_dict() for m, e in self.test.items()},
                "by_step": self.by_step, "by_step_metric": f"val/{CURVE_METRIC}"}


def run_row(run: Variant, metrics: tuple[str, ...]) -> dict[str, Any]:
    """runs.csv's row of a run: variant, each axis, seed, steps, diverged (1: left out of the
    ranking and the effects), every test metric."""
    axes = dict(zip(FACTORS, variant_choices(run.config, FACTORS), strict=True))
    return {"variant": run.name, **axes, "seed": run.seed, "steps": run.metrics.get("steps"),
            "diverged": int(bool(run.metrics.get("diverged"))),
            **{m: run.metrics.get(m) for m in metrics}}


def run_rows(runs: list[Variant]) -> list[dict[str, Any]]:
    """One row per run, in the runs' order (gon.app.evaluate.runs sorts them by name, seed)."""
    names = metric_names(runs)
    return [run_row(r, names) for r in runs]


def _at_step(runs: list[Variant], step: int) -> list[dict[str, Any]]:
    key = f"val/{CURVE_METRIC}"
    rows = []
    for run in runs:
        value = next((r[key] for r in run.val_curve if r["step"] == step and key in r), None)
        if value is not None:
            rows.append({**run_row(run, ()), CURVE_METRIC: value})
    return rows


def sweep_effects(runs: list[Variant]) -> SweepEffects:
    """The effects of the axes that varied, on every test metric and at every budget that
    every run reached (the validation curve's steps), over the runs that did not diverge."""
    runs = finished(runs)
    rows = run_rows(runs)
    factors = [f for f in FACTORS if len({r[f] for r in rows}) > 1]
    reference = default_choices()  # where a factor's default did not run: its first level
    out = SweepEffects(factors, {})
    for m in metric_names(runs):
        if any(r.get(m) is not None for r in rows):
            out.test[m] = effects(rows, factors, m, reference)
            out.reference = {f: lv[0] for f, lv in out.test[m].levels.items()}
    steps = sorted({r["step"] for run in runs for r in run.val_curve})
    for step in steps:
        at = _at_step(runs, step)
        if factors and len(at) == len(runs):  # a budget every run reached
            fit = effects(at, factors, CURVE_METRIC, reference)
            out.by_step += [{"step": step, **r} for r in fit.main + fit.interactions]
    return out


def effect_table(eff: SweepEffects) -> list[list[Any]]:
    """Rows of EFFECT_COLUMNS: every test metric's effects (step None), then those on
    validation CURVE_METRIC at every budget; term reads "block: modulated - siren"."""
    rows = [{"metric": m, "step": None, **r} for m, e in eff.test.items()
            for r in e.main + e.interactions]
    rows += [{"metric": f"val/{CURVE_METRIC}", **r} for r in eff.by_step]
    for r in rows:
        r["term"] = f"{r['factor']}: {r['level']} - {r['reference']}"
    return [[r.get(c) for c in EFFECT_COLUMNS] for r in rows]


def headline(comp: Comparison, eff: SweepEffects,
             wandb: dict[str, str] | None = None) -> dict[str, Any]:
    """headline.json: the best variant, its objective's mean and interval, the set that cannot
    be told apart from it, each axis's main effect and interval (a few flat numbers), and the
    W&B project and group of the sweep's runs (`wandb`, if they logged to W&B)."""
    m, best = comp.metric, comp.best
    iv = best.stats.get(m, {})
    out: dict[str, Any] = {"best": {"variant": best.name, f"{m}_mean": iv.get("mean"),
                                    f"{m}_ci95_low": iv.get("ci95_low"),
                                    f"{m}_ci95_high": iv.get("ci95_high"), "n": iv.get("n")},
                           "indistinguishable": ", ".join(indistinguishable(
                               [s.rank for s in comp.variants])),
                           "effects": {}}
    if m in eff.test:
        for r in eff.test[m].main:
            out["effects"].setdefault(r["factor"], {})[f"{r['level']}-{r['reference']}"] = {
                "estimate": r["estimate"], "ci95_low": r["ci95_low"],
                "ci95_high": r["ci95_high"], "p": r["p"]}
    if wandb:
        out["wandb"] = {"project": wandb["project"], "group": wandb["group"]}
    return out


def write_tables(runs: list[Variant], comp: Comparison, reports_dir: Path,
                 wandb: dict[str, str] | None = None) -> SweepEffects:
    """The sweep's effects, written with one row per run: reports_dir/{runs.csv, effects.json,
    headline.json}; also set as comp.effects (for the page, the printout and W&B)."""
    eff = comp.effects = sweep_effects(runs)
    rows = run_rows(runs)
    save_csv(reports_dir / RUNS_FILE, rows, list(rows[0]))  # atomic, as every report file
    save_json(reports_dir / EFFECTS_FILE, eff.to_dict(), indent=1, sort_keys=False)
    save_json(reports_dir / HEADLINE_FILE, headline(comp, eff, wandb), sort_keys=False)
    return eff


def answer(comp: Comparison, eff: SweepEffects, split: str = "test", top: int = 5) -> str:
    """The printed answer: the effects of the axes that varied on the objective, then the top
    of the ranking."""
    label = f"{split} {comp.metric}"
    parts = [eff.test[comp.metric].table(label)] if comp.metric in eff.test else []
    parts.append(ranking_table([s.rank for s in comp.variants], top, label))
    return "\n".join(parts)
