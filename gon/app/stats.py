"""Statistics over seeds: mean, sd and a t interval per variant; a ranking against the best
(Welch's t-test, Holm's correction); the text tables that print them (and gon.app.factorial's
effects).

Usage:
    interval([19.6, 18.2, 20.2])   # {"mean": 19.33, "sd": 1.0, "ci95_low": .., "n": 3, ..}
    ci95([19.6, 18.2, 20.2])       # (low, high): the same interval, nan where undefined
    ranking({"a": [20.1, 20.3], "b": [19.0, 19.2], "c": [19.1, 19.3]}, higher=True)
    # -> [Ranked("a", place=1), Ranked("c", place=2, worse=True), Ranked("b", place=3, ..)]

The rules are INTERVAL_RULE and RANKING_RULE below, told once: the page prints them and
docs/statistics.md links here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats as st

LEVEL = 0.95  # the interval's coverage
ALPHA = 0.05  # the family-wise error rate of the tests against the best
INTERVAL_RULE = (f"Interval: the two-sided {LEVEL:.0%} Student t interval over the n seeds, "
                 "mean +- t(0.975, n-1) sd/sqrt(n) with the sample sd (n-1); with n = 1, sd and "
                 "the interval are undefined.")
RANKING_RULE = ("Ranking: variants sorted by mean, best first. Each other variant is compared "
                "with the best by a two-sided Welch t-test; the V-1 p-values are adjusted by "
                f"Holm's step-down method (family-wise error {ALPHA}). Adjusted p >= {ALPHA}: it "
                "cannot be told apart from the best and shares first place (=1); adjusted "
                f"p < {ALPHA}: significantly worse, its own place in the order (2, 3, ..), never "
                "first. A variant (or a best) with fewer than 2 finite values is not tested and "
                "shares first place.")


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
    shown = list(ranked)[:top]
    d = decimals([r.mean for r in shown])
    rows = [[("=" if r.tied else "") + str(r.place), r.name, fmt_num(r.mean, d),
             fmt_span(r.stats, d), str(r.stats.get("n", "")), fmt_p(r.p_best)] for r in shown]
    more = [f"  ... {len(ranked) - top} more"] if len(ranked) > top else []
    return "\n".join([f"ranking by {label or 'mean'} (=1: not significantly worse than the "
                      "best; Welch, Holm)",
                      *text_table([["place", "variant", "mean", "95% interval", "n", "p vs best"],
                                 *rows]), *more])


def decimals(xs: Sequence[float | None]) -> int:
    """Decimals that show 3 significant digits of the largest |x| (3 to 6)."""
    m = max((abs(x) for x in xs if x is not None and math.isfinite(x)), default=0.0)
    return 3 if m == 0 else min(6, max(3, 2 - math.floor(math.log10(m))))


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_span(iv: dict, digits: int = 3) -> str:
    lo, hi = iv.get("ci95_low"), iv.get("ci95_high")
    return "-" if lo is None or hi is None else f"[{fmt_num(lo, digits)}, {fmt_num(hi, digits)}]"


def text_table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned lines (numbers, from the third column on, right-aligned)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def fmt_p(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 1e-3 else f"{p:.3f}"
