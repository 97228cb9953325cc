"""Statistics over seeds: mean, sd and a t interval per variant; a ranking against the best
(Welch's t-test, Holm's correction) and a short text table of its top; the effects of factors
on a metric from a linear model over per-run values (effects, Effects).

Usage:
    interval([19.6, 18.2, 20.2])   # {"mean": 19.33, "sd": 1.0, "ci95_low": .., "n": 3, ..}
    ci95([19.6, 18.2, 20.2])       # (low, high): the same interval, nan where undefined
    ranking({"a": [20.1, 20.3], "b": [19.0, 19.2], "c": [19.1, 19.3]}, higher=True)
    # -> [Ranked("a", place=1), Ranked("c", place=2, worse=True), Ranked("b", place=3, ..)]
    effects(rows, ["block", "loss"], "psnr", reference={"block": "siren"}).main
    # -> [{"factor": "block", "level": "modulated", "reference": "siren", "estimate": .., ..}]

The rule, written once (README "Statistics"):
- interval: the two-sided 95 % Student t interval over the n seeds,
  mean +- t(0.975, n-1) sd/sqrt(n), with the sample sd (n-1). n = 1: sd and the interval are None.
- ranking: variants sorted by mean (best first). Each other variant is compared with the best by
  a two-sided Welch t-test; the m = V-1 p-values are adjusted by Holm's step-down method
  (family-wise error 0.05). A variant with adjusted p >= 0.05 cannot be told apart from the best
  and shares first place with it (tied); one with adjusted p < 0.05 is significantly worse and
  gets its own position in the order (2, 3, ..), never place 1. A variant with fewer than 2
  finite values (or a best with fewer than 2) is not tested: it shares first place.
- effects (docs/statistics.md, "Effects"): OLS of the metric on the factors that vary, each
  sum-coded, and all their two-way interactions, over one row per run. A main effect is the
  difference of two levels' marginal means (the model's cell means averaged equally over the
  other factors' levels), an interaction the difference of differences; each a contrast of the
  coefficients with its t interval and p-value on the residual df (higher-order interactions
  pool into the residual). A term that would make the design rank-deficient (a confounded
  factor, a pair of levels never run together) or leave no residual df is dropped and listed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations, product
from typing import Any

from scipy import stats as st

LEVEL = 0.95  # the interval's coverage
ALPHA = 0.05  # the family-wise error rate of the tests against the best


def interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """{"mean", "sd", "ci95_low", "ci95_high", "n"} of the finite values (None where undefined)."""
    xs = [float(x) for x in values if x is not None and math.isfinite(x)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "sd": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = math.fsum(xs) / n
    if n == 1:
        return {"mean": mean, "sd": None, "ci95_low": None, "ci95_high": None, "n": 1}
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(st.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """(ci95_low, ci95_high) of `interval` as floats: (nan, nan) below 2 values or when a
    value is not finite (a claim or a benchmark counts every seed)."""
    iv = interval(values)
    if iv["ci95_low"] is None or iv["n"] != len(values):
        return math.nan, math.nan
    return iv["ci95_low"], iv["ci95_high"]


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test of equal means; None with < 2 values on a side."""
    a = [x for x in a if math.isfinite(x)]
    b = [x for x in b if math.isfinite(x)]
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:  # no variance: the means are equal or not
        return 1.0 if a[0] == b[0] else 0.0
    return float(st.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1); None entries stay None and
    do not count towards the number of tests."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(tested), list(pvalues), 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


@dataclass
class Ranked:
    """One variant's place in a ranking."""

    name: str
    mean: float | None
    place: int  # 1 for the best and every variant indistinguishable from it, else its position
    tied: bool = False  # shares first place: not significantly worse than the best
    p_best: float | None = None  # Holm-adjusted p of its difference to the best (None: best,
    # or untested)
    worse: bool = False  # significantly worse than the best (p_best < ALPHA): never tied
    stats: dict = field(default_factory=dict)  # interval(...) of its values: mean, sd, ci, n


def ranking(samples: dict[str, Sequence[float]], higher: bool = True) -> list[Ranked]:
    """The variants best first; each compared with the best (see the module doc)."""
    def key(name: str) -> tuple[bool, float]:
        m = interval(samples[name])["mean"]
        return m is None, (-m if higher else m) if m is not None else 0.0

    names = sorted(samples, key=key)
    best = names[0] if names else None
    adjusted = holm([welch_p(samples[best], samples[n]) for n in names[1:]])
    ivs = {n: interval(samples[n]) for n in names}
    out = [Ranked(best, ivs[best]["mean"], 1, stats=ivs[best])] if best is not None else []
    for i, (name, p) in enumerate(zip(names[1:], adjusted, strict=True), start=2):
        worse = p is not None and p < ALPHA
        out.append(Ranked(name, ivs[name]["mean"], i if worse else 1, tied=not worse, p_best=p,
                          worse=worse, stats=ivs[name]))
    if len(out) > 1 and out[1].tied:
        out[0].tied = True
    return out


def indistinguishable(ranked: Sequence[Ranked]) -> list[str]:
    """The names sharing first place: the best and those not significantly worse than it."""
    return [r.name for r in ranked if r.place == 1]


def spearman(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Spearman's rank correlation of two orderings of the same names (None for < 2 names)."""
    common = [x for x in a if x in b]
    n = len(common)
    if n < 2:
        return None
    pos = {x: i for i, x in enumerate(y for y in b if y in common)}
    d2 = sum((i - pos[x]) ** 2 for i, x in enumerate(common))
    return 1 - 6 * d2 / (n * (n * n - 1))


def ranking_table(ranked: Sequence[Ranked], top: int | None = 5, label: str = "") -> str:
    """The top of a ranking (None: all of it) as a short text table: place, variant, mean
    [95 % interval], n, Holm p against the best; `label` names the metric and split."""
    top = len(ranked) if top is None else top
    lines = [f"ranking by {label or 'mean'} (=1: not significantly worse than the best; "
             "Welch, Holm)",
             f"  {'place':<6}{'variant':<32}{'mean':>9}  {'95% interval':<19}{'n':>3}  p vs best"]
    for r in list(ranked)[:top]:
        iv = r.stats or {"mean": r.mean, "n": 0}
        lines.append(f"  {('=' if r.tied else '') + str(r.place):<6}{r.name:<32}"
                     f"{_num(iv.get('mean')):>9}  {_span(iv):<19}{iv.get('n', 0):>3}  "
                     f"{_p(r.p_best)}")
    if len(ranked) > top:
        lines.append(f"  ... {len(ranked) - top} more")
    return "\n".join(lines)


# ------------------------------------------------------------------ effects (a linear model)
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
        head = (f"effects on {label or self.metric} ({self.n} runs; OLS, sum coding, "
                f"two-way interactions; residual df {self.df_resid})")
        lines = [head, f"  {'factor':<28}{'level - reference':<28}{'effect':>9}  "
                       f"{'95% interval':<19}p"]
        for r in self.main + self.interactions:
            lines.append(f"  {r['factor']:<28}{r['level'] + ' - ' + r['reference']:<28}"
                         f"{_num(r['estimate']):>9}  {_span(r):<19}{_p(r['p'])}")
        if not self.levels:
            lines.append("  (no factor varies)")
        lines += [f"  dropped {d['term']}: {d['reason']}" for d in self.dropped]
        return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3g}" if abs(x) < 1e-3 else f"{x:.3f}"


def _span(iv: dict) -> str:
    lo, hi = iv.get("ci95_low"), iv.get("ci95_high")
    return "-" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def _p(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 1e-3 else f"{p:.3f}"


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
