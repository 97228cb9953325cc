"""Statistics over seeds: mean, sd and a t interval per variant; a ranking whose neighbouring
differences are tested (Welch's t-test, Holm's correction), ties where they cannot be told apart.

Usage:
    interval([19.6, 18.2, 20.2])   # {"mean": 19.33, "sd": 1.0, "ci95_low": .., "n": 3, ..}
    ci95([19.6, 18.2, 20.2])       # (low, high): the same interval, nan where undefined
    ranking({"a": [20.1, 20.3], "b": [19.0, 19.2], "c": [19.1, 19.3]}, higher=True)
    # -> [Ranked("a", place=1, ..), Ranked("b", place=2, tied=True), Ranked("c", place=2, ..)]

The rule, written once (README "Statistics"):
- interval: the two-sided 95 % Student t interval over the n seeds,
  mean +- t(0.975, n-1) sd/sqrt(n), with the sample sd (n-1). n = 1: sd and the interval are None.
- ranking: variants sorted by mean (best first). Each pair of neighbours is compared by a two-sided
  Welch t-test; the m = V-1 p-values are adjusted by Holm's step-down method (family-wise error
  0.05). A neighbour difference with adjusted p < 0.05 starts a new place; otherwise the two share
  a place (a chain of indistinguishable neighbours is one tied group). Places are competition
  ranks (1, 2, 2, 4). A pair with fewer than 2 finite values on either side is not tested (tied).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as st

LEVEL = 0.95  # the interval's coverage
ALPHA = 0.05  # the family-wise error rate of the neighbour tests


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
    place: int  # competition rank of its tied group: 1, 2, 2, 4
    tied: bool = False  # shares its place with a neighbour
    p_next: float | None = None  # Holm-adjusted p of the difference to the next variant
    significant_next: bool = False  # that difference is significant (p_next < ALPHA)


def ranking(samples: dict[str, Sequence[float]], higher: bool = True) -> list[Ranked]:
    """The variants best first, with places from the neighbour tests (see the module doc)."""
    def key(name: str) -> tuple[bool, float]:
        m = interval(samples[name])["mean"]
        return m is None, (-m if higher else m) if m is not None else 0.0

    names = sorted(samples, key=key)
    pairs = zip(names[:-1], names[1:], strict=True)
    adjusted = holm([welch_p(samples[a], samples[b]) for a, b in pairs])
    out: list[Ranked] = []
    for i, name in enumerate(names):
        new_place = i == 0 or out[-1].significant_next
        place = i + 1 if new_place else out[-1].place
        p = adjusted[i] if i < len(adjusted) else None
        out.append(Ranked(name, interval(samples[name])["mean"], place, p_next=p,
                          significant_next=p is not None and p < ALPHA))
        if not new_place:
            out[-2].tied = out[-1].tied = True
    return out


def spearman(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Spearman's rank correlation of two orderings of the same names (None for < 2 names)."""
    common = [x for x in a if x in b]
    n = len(common)
    if n < 2:
        return None
    pos = {x: i for i, x in enumerate(y for y in b if y in common)}
    d2 = sum((i - pos[x]) ** 2 for i, x in enumerate(common))
    return 1 - 6 * d2 / (n * (n * n - 1))
