"""The comparison of a sweep's variants over their seeds: intervals per metric, the ranking with
its significance marks, the validation learning curves and the ranking at every budget.

Usage:
    comp = compare(runs)               # runs: one Variant per trained run (several seeds each)
    comp.variants[0].name, comp.variants[0].stats["psnr"]["ci95_low"], comp.variants[0].rank.place
    comp.curves[0]                     # {"variant", "step", "psnr_mean", "psnr_ci95_low", .., "n"}
    comp.budgets[-1].order             # the variants by mean validation PSNR at the last budget

The statistics (t intervals, Welch + Holm against the best) are gon.app.stats'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gon.app.metrics import HIGHER_IS_BETTER, LIKELIHOOD
from gon.app.stats import Ranked, interval, ranking, spearman
from gon.app.variants import Variant

METRICS = ("psnr", "ssim", "mse", "bce", "probe_acc")  # the test metrics compared


def metric_names(runs: list[Variant]) -> tuple[str, ...]:
    """METRICS, then the LIKELIHOOD metrics where a run has an ELBO (the variational models)."""
    return METRICS + (LIKELIHOOD if any("nelbo" in r.metrics for r in runs) else ())

CURVE_METRIC = "psnr"  # the learning curve's metric (validation)


@dataclass
class VariantSummary:
    """One variant over its seeds."""

    name: str
    runs: list[Variant]  # by seed
    stats: dict[str, dict] = field(default_factory=dict)  # metric -> interval(...)
    rank: Ranked | None = None
    diverged: int = 0  # runs whose training diverged (metrics.json): out of stats and ranking

    @property
    def shown(self) -> Variant:
        """The run whose grids represent the variant (the lowest seed with grids)."""
        return next((r for r in self.runs if r.grids), self.runs[0])


@dataclass
class BudgetRanking:
    """The ranking by validation PSNR after `step` training steps."""

    step: int
    ranked: list[Ranked]
    rho: float | None = None  # Spearman correlation with the final budget's order

    @property
    def order(self) -> list[str]:
        return [r.name for r in self.ranked]

    @property
    def leaders(self) -> list[str]:
        """The variants sharing first place."""
        return [r.name for r in self.ranked if r.place == 1]


@dataclass
class Comparison:
    metric: str  # the objective without "val/", e.g. psnr
    higher: bool
    variants: list[VariantSummary]  # best first (by the ranking)
    curves: list[dict] = field(default_factory=list)  # val_curves.csv rows
    budgets: list[BudgetRanking] = field(default_factory=list)
    effects: Any = None  # gon.app.evaluate.effects.SweepEffects, once write_report set it

    @property
    def best(self) -> VariantSummary:
        return self.variants[0]

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for v in self.variants for r in v.runs})


def objective(runs: list[Variant]) -> tuple[str, bool]:
    """(metric name, higher is better) of the sweep's optimized_metric, e.g. ("psnr", True)."""
    metric = runs[0].config.get("optimized_metric", "val/psnr")
    return metric.removeprefix("val/"), HIGHER_IS_BETTER.get(metric, True)


def finished(runs: list[Variant]) -> list[Variant]:
    """The runs whose training did not diverge (gon.app.train.loop.divergence): the one filter
    of the ranking, the curves and the effects (a diverged run is counted, never averaged in)."""
    return [r for r in runs if not r.metrics.get("diverged")]


def _curve_values(runs: list[Variant], step: int) -> list[float]:
    return [r[f"val/{CURVE_METRIC}"] for run in finished(runs) for r in run.val_curve
            if r["step"] == step and f"val/{CURVE_METRIC}" in r]


def compare(runs: list[Variant]) -> Comparison:
    """Group the runs by variant name and compare the variants (see the module doc)."""
    metric, higher = objective(runs)
    groups: dict[str, list[Variant]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    summaries = {}
    for name, group in groups.items():
        group.sort(key=lambda r: r.seed)
        kept = finished(group)
        stats = {m: interval([r.metrics[m] for r in kept if m in r.metrics])
                 for m in (*METRICS, *LIKELIHOOD) if any(m in r.metrics for r in group)}
        summaries[name] = VariantSummary(name, group, stats, diverged=len(group) - len(kept))
    samples = {n: [r.metrics.get(metric, math.nan) for r in finished(s.runs)]
               for n, s in summaries.items()}
    ranked = ranking(samples, higher)
    for r in ranked:
        summaries[r.name].rank = r
    comp = Comparison(metric, higher, [summaries[r.name] for r in ranked])
    steps = sorted({r["step"] for run in runs for r in run.val_curve})
    for s in comp.variants:  # curves, in the ranking's order
        for step in steps:
            values = _curve_values(s.runs, step)
            if values:
                iv = interval(values)
                comp.curves.append({"variant": s.name, "step": step, "psnr_mean": iv["mean"],
                                    "psnr_ci95_low": iv["ci95_low"],
                                    "psnr_ci95_high": iv["ci95_high"], "n": iv["n"]})
    for step in steps:
        at = {s.name: _curve_values(s.runs, step) for s in comp.variants}
        at = {n: v for n, v in at.items() if v}
        if len(at) == len(comp.variants):  # a budget every variant reached
            comp.budgets.append(BudgetRanking(step, ranking(at, higher=True)))
    if comp.budgets:
        final = comp.budgets[-1].order
        for b in comp.budgets:
            b.rho = spearman(b.order, final)
    return comp


def reversals(earlier: BudgetRanking, later: BudgetRanking) -> list[tuple[str, str]]:
    """Pairs (a, b) where a shares first place and b is significantly worse than the best in
    `earlier`, and the other way round in `later`: the lead really changed with the budget (a
    swap of order among the tied or among the worse does not count)."""
    def lead(b: BudgetRanking) -> tuple[set[str], set[str]]:
        return {r.name for r in b.ranked if r.place == 1}, {r.name for r in b.ranked if r.worse}

    (top0, worse0), (top1, worse1) = lead(earlier), lead(later)
    return [(a, b) for a in sorted(top0 & worse1) for b in sorted(worse0 & top1)]
