"""The effects of factors (the variant axes, swept values) on a metric, from one linear model over
per-run values: main effects and two-way interactions with t intervals and p-values.

Usage:
    fit = effects(rows, ["block", "loss"], "psnr", reference={"block": "siren"})
    fit.main     # [{"factor": "block", "level": "modulated", "reference": "siren",
                 #   "estimate": -0.61, "ci95_low": .., "ci95_high": .., "p": .., "n": .., ..}]
    print(fit.table("test psnr"))

The rule is EFFECTS_RULE below, told once (the page prints it; docs/statistics.md, "Effects of
the axes", says why this model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations, product
from typing import Any

from gon.app.stats import LEVEL, decimals, fmt_num, fmt_p, fmt_span, text_table

EFFECTS_RULE = ("Effects: OLS of the metric on the factors that vary, each sum-coded, and all "
                "their two-way interactions, over one row per run. A main effect is the "
                "difference of two levels' marginal means (the model's cell means averaged "
                "equally over the other factors' levels), an interaction the difference of "
                f"differences; each with its two-sided {LEVEL:.0%} t interval and p-value on the "
                "residual df (higher-order interactions pool into the residual). A term that "
                "would make the design rank-deficient (a confounded factor, a pair of levels "
                "never run together) or leave no residual df is dropped and listed.")


@dataclass
class Effects:
    """The effects of factors on one metric, from one OLS fit over per-run values (docs/
    statistics.md, "Effects"). Rows are plain dicts: factor, level, reference, estimate,
    ci95_low, ci95_high, p, n, n_ref (None where undefined)."""

    metric: str
    n: int  # runs with a finite value
    levels: dict[str, list[str]]  # each factor that varies -> its levels, the reference first
    main: list[dict] = field(default_factory=list)  # level's marginal mean - the reference's
    interactions: list[dict] = field(default_factory=list)  # factor "a:b": difference of
    # differences (a's level - ref at b's level) - (the same at b's reference)
    dropped: list[dict] = field(default_factory=list)  # {"term", "reason"}: not in the model
    df_resid: int = 0
    formula: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, label: str = "") -> str:
        """The effects as a short text table (printed by gon-evaluate and after a multirun)."""
        effects = self.main + self.interactions
        d = decimals([r["estimate"] for r in effects])
        rows = [[r["factor"], f"{r['level']} - {r['reference']}", fmt_num(r["estimate"], d),
                 fmt_span(r, d), fmt_p(r["p"])] for r in effects]
        return "\n".join([f"effects on {label or self.metric} ({self.n} runs; OLS, sum coding, "
                          f"two-way interactions; residual df {self.df_resid})",
                          *text_table([["factor", "level - reference", "effect", "95% interval",
                                      "p"], *rows]),
                          *(["  (no factor varies)"] if not self.levels else []),
                          *(f"  dropped {x['term']}: {x['reason']}" for x in self.dropped)])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def effects(rows: Sequence[dict[str, Any]], factors: Sequence[str], metric: str,
            reference: dict[str, str] | None = None) -> Effects:
    """Main effects of each factor that varies and two-way interactions on `metric` from the
    linear model metric ~ 1 + factors + their pairs (sum coding) over `rows` (one per run);
    a term that is not estimable (confounded, a level pair never run, no residual df) is
    dropped and listed. The reference level of a factor: reference[f] if it occurs, else the
    first in sorted order."""
    import numpy as np
    import pandas as pd
    import patsy
    from statsmodels.regression.linear_model import OLS

    data = [r for r in rows if _finite(r.get(metric))]
    levels: dict[str, list[str]] = {}
    for f in factors:
        seen = sorted({str(r.get(f)) for r in data})
        if len(seen) > 1:
            ref = (reference or {}).get(f)
            ref = ref if ref in seen else seen[0]
            levels[f] = [ref, *(x for x in seen if x != ref)]
    out = Effects(metric, len(data), levels)

    def frame(records: list[dict], names: list[str]) -> pd.DataFrame:
        return pd.DataFrame({f: pd.Categorical([str(r.get(f)) for r in records],
                                               categories=levels[f]) for f in names},
                            index=range(len(records)))

    x = frame(data, list(levels))

    def formula(terms: list[tuple[str, ...]]) -> str:
        return " + ".join(["1", *(":".join(f"C(Q({f!r}), Sum)" for f in t) for t in terms)])

    # every candidate term's columns once; a term joins the model if it keeps it full rank
    candidates = [(f,) for f in levels] + list(combinations(levels, 2))
    full = patsy.dmatrix(formula(candidates), x, return_type="dataframe")
    where = dict(zip(candidates, list(full.design_info.term_name_slices.values())[1:],
                     strict=True))
    design, cols, terms = np.asarray(full), [0], []

    def add(term: tuple[str, ...]) -> tuple[bool, int]:
        c = cols + list(range(where[term].start, where[term].stop))
        return np.linalg.matrix_rank(design[:, c]) == len(c), len(c)

    for f in levels:
        if add((f,))[0]:
            cols += list(range(where[(f,)].start, where[(f,)].stop))
            terms.append((f,))
        else:
            out.dropped.append({"term": f, "reason": "confounded with the factors before it "
                                "(its levels never vary on their own)"})
    mains = [t[0] for t in terms]
    for a, b in combinations(mains, 2):
        ok, k = add((a, b))
        if not ok:
            out.dropped.append({"term": f"{a}:{b}", "reason": "not estimable: some pairs of "
                                "their levels never ran (not a full factorial)"})
        elif len(data) - k < 1:
            out.dropped.append({"term": f"{a}:{b}", "reason": "no residual degrees of freedom"})
        else:
            cols += list(range(where[(a, b)].start, where[(a, b)].stop))
            terms.append((a, b))
    if not data:
        return out
    out.formula = f"{metric} ~ {formula(terms)}"
    fit = OLS(np.asarray([float(r[metric]) for r in data]), design[:, cols]).fit()
    out.df_resid = int(round(fit.df_resid))
    cells = [dict(zip(levels, c, strict=True)) for c in product(*levels.values())]
    grid = np.asarray(patsy.build_design_matrices([full.design_info],
                                                  frame(cells, list(levels)))[0])[:, cols]

    def marginal(**fixed: str) -> np.ndarray:  # the model's mean, other factors averaged
        mask = [all(c[f] == v for f, v in fixed.items()) for c in cells]
        return grid[np.asarray(mask)].mean(0)

    def row(factor: str, level: str, ref: str, contrast: np.ndarray, n: int, n_ref: int) -> dict:
        est = float(contrast @ fit.params)
        lo = hi = p = None
        if out.df_resid > 0:
            t = fit.t_test(contrast[None, :])
            lo, hi = (float(v) for v in np.asarray(t.conf_int(alpha=1 - LEVEL))[0])
            p = float(np.asarray(t.pvalue).reshape(-1)[0])
        return {"factor": factor, "level": level, "reference": ref, "estimate": est,
                "ci95_low": lo, "ci95_high": hi, "p": p, "n": n, "n_ref": n_ref}

    def count(**fixed: str) -> int:
        return sum(all(str(r[f]) == v for f, v in fixed.items()) for r in data)

    for f in mains:
        ref = levels[f][0]
        for lv in levels[f][1:]:
            out.main.append(row(f, lv, ref, marginal(**{f: lv}) - marginal(**{f: ref}),
                                count(**{f: lv}), count(**{f: ref})))
    for t in terms:
        if len(t) == 2:
            a, b = t
            ra, rb = levels[a][0], levels[b][0]
            for la, lb in product(levels[a][1:], levels[b][1:]):
                c = (marginal(**{a: la, b: lb}) - marginal(**{a: ra, b: lb})
                     - marginal(**{a: la, b: rb}) + marginal(**{a: ra, b: rb}))
                out.interactions.append(row(f"{a}:{b}", f"{la}:{lb}", f"{ra}:{rb}", c,
                                            count(**{a: la, b: lb}), count(**{a: ra, b: rb})))
    return out
