"""gon.app.stats against hand computations: t intervals, Welch's test, Holm's correction, the
ranking against the best, Spearman's rho; and gon.app.compare on hand-made runs.

$ python -m pytest tests/test_stats.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gon.app.evaluate.compare import compare, reversals
from gon.app.stats import holm, indistinguishable, interval, ranking, spearman, welch_p
from gon.app.variants import Variant


def test_interval_by_hand() -> None:
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.303 (tables), half-width 4.303 / sqrt(3) = 2.484
    iv = interval([1.0, 2.0, 3.0])
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(2.0) and iv["sd"] == pytest.approx(1.0)
    assert iv["ci95_low"] == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
    assert iv["ci95_high"] == pytest.approx(2 + 2.484, abs=1e-3)
    # five values 10..14: mean 12, sd sqrt(2.5), t(0.975, 4) = 2.776
    iv = interval([10, 11, 12, 13, 14])
    assert iv["ci95_high"] - iv["mean"] == pytest.approx(2.776 * math.sqrt(2.5 / 5), abs=1e-3)


def test_interval_with_one_or_no_value() -> None:
    assert interval([19.5]) == {"mean": 19.5, "sd": None, "ci95_low": None, "ci95_high": None,
                                "n": 1}
    assert interval([math.nan, 3.0])["n"] == 1  # a non-finite value is not a sample
    assert interval([])["mean"] is None and interval([])["n"] == 0


def test_welch_by_hand() -> None:
    # x = [1, 2, 3], y = [4, 5, 6, 7]: var 1 and 5/3; se^2 = 1/3 + 5/12 = 0.75, t = -3.5/sqrt(.75)
    # = -4.0415; Welch-Satterthwaite df = 0.75^2 / ((1/3)^2/2 + (5/12)^2/3) = 4.959; p = 0.0101
    assert welch_p([1, 2, 3], [4, 5, 6, 7]) == pytest.approx(0.01008, abs=1e-4)
    assert welch_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert welch_p([1.0], [2.0, 3.0]) is None  # one seed: not tested
    assert welch_p([1, 1], [2, 2]) == 0.0 and welch_p([1, 1], [1, 1]) == 1.0  # no variance


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]
    assert holm([]) == []


def test_ranking_against_the_best() -> None:
    samples = {"low": [10.0, 10.1, 9.9], "top": [20.0, 20.2, 19.8], "mid": [15.0, 15.1, 14.9],
               "near": [19.9, 20.3, 19.6]}
    r = ranking(samples, higher=True)
    assert [x.name for x in r] == ["top", "near", "mid", "low"]
    assert [x.place for x in r] == [1, 1, 3, 4]  # near cannot be told apart from top
    assert [x.tied for x in r] == [True, True, False, False]
    assert [x.worse for x in r] == [False, False, True, True]
    assert r[0].p_best is None and r[1].p_best > 0.05 and r[2].p_best < 0.05
    # Holm over the 3 comparisons with the best, by hand
    raw = [welch_p(samples["top"], samples[n]) for n in ("near", "mid", "low")]
    assert [x.p_best for x in r[1:]] == pytest.approx(holm(raw))
    assert r[1].stats == interval(samples["near"])  # mean, sd, interval and n kept
    assert indistinguishable(r) == ["top", "near"]
    lower = ranking(samples, higher=False)  # e.g. mse: the smallest first
    assert lower[0].name == "low" and lower[0].place == 1 and lower[1].worse
    single = ranking({"a": [1.0], "b": [2.0]})  # one seed each: untested, so tied
    assert [x.place for x in single] == [1, 1] and single[1].p_best is None


def test_a_variant_significantly_worse_than_the_best_is_never_tied() -> None:
    """The issue's case: a chain of close neighbours once tied a variant 3 dB below the best
    (direct Welch p = 0.0002) with it; against the best it gets its own place."""
    best, worst = [18.9, 19.0, 18.98], [15.8, 16.0, 15.87]
    assert welch_p(best, worst) < 0.001
    chain = {f"v{i}": [x - 0.4 * i for x in (18.9, 19.4, 18.6)] for i in range(1, 8)}
    r = ranking({"best": best, "worst": worst, **chain})
    assert r[0].name == "best" and r[-1].name == "worst"
    assert r[-1].worse and not r[-1].tied and r[-1].place == len(r) and r[-1].p_best < 0.05
    assert all(x.place != 1 for x in r if x.worse)
    assert "worst" not in indistinguishable(r)


def test_spearman() -> None:
    assert spearman(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert spearman(["a", "b", "c"], ["c", "b", "a"]) == -1.0
    assert spearman(["a"], ["a"]) is None


def _run(name: str, seed: int, psnr: float, curve: list[float]) -> Variant:
    steps = [10 * (i + 1) for i in range(len(curve))]
    return Variant(name, Path(f"/runs/{name}/{seed}"), {"seed": seed, "optimized_metric":
                   "val/psnr"}, {"psnr": psnr, "mse": 0.1, "steps": steps[-1], "params": 5},
                   val_curve=[{"step": s, "val/psnr": v} for s, v in zip(steps, curve,
                                                                          strict=True)])


def test_compare_groups_seeds_and_ranks_every_budget() -> None:
    # a learns fast and stops; b starts slow and overtakes it: the budgets disagree
    runs = [_run("a", s, 20 + 0.1 * s, [18 + 0.1 * s, 19 + 0.1 * s, 20 + 0.1 * s])
            for s in range(3)]
    runs += [_run("b", s, 22 + 0.1 * s, [10 + 0.1 * s, 15 + 0.1 * s, 22 + 0.1 * s])
             for s in (2, 0, 1)]
    comp = compare(runs)
    assert [s.name for s in comp.variants] == ["b", "a"] and comp.seeds == [0, 1, 2]
    assert [r.seed for r in comp.best.runs] == [0, 1, 2]
    assert comp.best.stats["psnr"]["mean"] == pytest.approx(22.1)
    assert comp.best.stats["psnr"]["n"] == 3 and comp.variants[1].rank.worse
    rows = [r for r in comp.curves if r["variant"] == "a"]
    assert [r["step"] for r in rows] == [10, 20, 30] and rows[0]["psnr_mean"] == pytest.approx(
        18.1) and rows[0]["n"] == 3
    assert [b.step for b in comp.budgets] == [10, 20, 30]
    assert comp.budgets[0].leaders == ["a"] and comp.budgets[-1].leaders == ["b"]
    assert comp.budgets[0].rho == -1.0 and comp.budgets[-1].rho == 1.0
    assert reversals(comp.budgets[0], comp.budgets[-1]) == [("a", "b")]


def test_compare_leaves_diverged_runs_out_and_counts_them() -> None:
    runs = [_run("a", s, 20.0 + 0.1 * s, [19.0, 20.0 + 0.1 * s]) for s in range(3)]
    runs[2].metrics |= {"psnr": 9.0, "diverged": 1.0}  # metrics.json said diverged
    runs += [_run("b", s, 19.0 + 0.1 * s, [18.0, 19.0 + 0.1 * s]) for s in range(3)]
    comp = compare(runs)
    a = next(v for v in comp.variants if v.name == "a")
    assert a.diverged == 1 and a.stats["psnr"]["n"] == 2 and len(a.runs) == 3
    assert a.stats["psnr"]["mean"] == pytest.approx(20.05) and comp.best.name == "a"
    assert [r["n"] for r in comp.curves if r["variant"] == "a"] == [2, 2]
    assert next(v for v in comp.variants if v.name == "b").diverged == 0
