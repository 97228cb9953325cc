"""gon.app.factorial.effects against a hand computation on a small known table; what is dropped
when the grid is not a full factorial; gon.app.evaluate.effects on hand-made runs (runs.csv,
effects.json, headline.json, effects at every budget, the printed answer); the answer printed at
the end of a multirun (slow).

$ python -m pytest tests/test_effects.py -q
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from helpers import run, train_cli

from gon.app.evaluate.compare import compare
from gon.app.evaluate.effects import answer, headline, run_rows, sweep_effects, write_tables
from gon.app.factorial import effects
from gon.app.train.callbacks import read_runs, validation_answer
from gon.app.variants import Variant

# a 2 x 2 table, 2 runs per cell; cell means 2, 5, 6, 13; every run 1 off its cell's mean
TABLE = {("a0", "b0"): (1, 3), ("a0", "b1"): (4, 6), ("a1", "b0"): (5, 7), ("a1", "b1"): (12, 14)}
ROWS = [{"A": a, "B": b, "y": float(y)} for (a, b), ys in TABLE.items() for y in ys]


def test_effects_by_hand() -> None:
    # residual SS 8 on 8 - 4 = 4 df: MSE 2. Main effect of A: (6 + 13)/2 - (2 + 5)/2 = 6, its
    # contrast weights +-1/2 on 4 cells of 2 runs: se = sqrt(2 * 4 * (1/4) / 2) = 1;
    # t(0.975, 4) = 2.776 (tables): [3.224, 8.776]; t = 6 on 4 df: p = 0.00388.
    # B: (5 + 13)/2 - (2 + 6)/2 = 5, se 1, p = 0.00749 (t = 5). The interaction:
    # (13 - 6) - (5 - 2) = 4, weights +-1: se = sqrt(2 * 4 / 2) = 2, t = 2: p = 0.116.
    e = effects(ROWS, ["A", "B", "C"], "y")  # C: not in the rows, so it does not vary
    assert e.n == 8 and e.df_resid == 4 and e.levels == {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    (a, b), (ab,) = e.main, e.interactions
    assert (a["factor"], a["level"], a["reference"], a["n"], a["n_ref"]) == ("A", "a1", "a0", 4, 4)
    assert a["estimate"] == pytest.approx(6.0)
    assert (a["ci95_low"], a["ci95_high"]) == pytest.approx((6 - 2.776, 6 + 2.776), abs=1e-3)
    assert a["p"] == pytest.approx(0.00388, abs=1e-4)
    assert b["estimate"] == pytest.approx(5.0) and b["p"] == pytest.approx(0.00749, abs=1e-4)
    assert (ab["factor"], ab["level"], ab["reference"]) == ("A:B", "a1:b1", "a0:b0")
    assert ab["estimate"] == pytest.approx(4.0) and ab["p"] == pytest.approx(0.116, abs=1e-3)
    assert ab["ci95_high"] - ab["estimate"] == pytest.approx(2 * 2.776, abs=1e-3)
    assert not e.dropped and json.loads(json.dumps(e.to_dict())) == e.to_dict()


def test_the_reference_level_sets_the_sign() -> None:
    e = effects(ROWS, ["A", "B"], "y", reference={"A": "a1", "B": "nowhere"})
    assert e.levels["A"] == ["a1", "a0"] and e.levels["B"] == ["b0", "b1"]
    assert e.main[0]["estimate"] == pytest.approx(-6.0)
    assert e.interactions[0]["estimate"] == pytest.approx(-4.0)


def test_three_levels_each_against_the_reference() -> None:
    rows = [{"A": a, "y": y + off} for a, y in (("p", 1.0), ("q", 3.0), ("r", 6.0))
            for off in (-0.5, 0.5)]
    e = effects(rows, ["A"], "y", reference={"A": "q"})
    assert [(r["level"], r["reference"]) for r in e.main] == [("p", "q"), ("r", "q")]
    assert [r["estimate"] for r in e.main] == pytest.approx([-2.0, 3.0])


def test_not_a_full_factorial() -> None:
    # a missing cell: the interaction is not estimable; main effects from the additive model
    e = effects(ROWS[:6], ["A", "B"], "y")
    assert [d["term"] for d in e.dropped] == ["A:B"] and "not a full factorial" in \
        e.dropped[0]["reason"]
    assert [r["factor"] for r in e.main] == ["A", "B"] and not e.interactions
    # additive fit of cells (a0b0 2, a0b1 5, a1b0 6): A = 4 and B = 3 exactly
    assert [r["estimate"] for r in e.main] == pytest.approx([4.0, 3.0])
    # one run per cell: the interaction would leave no residual df
    one = effects([r for r in ROWS if r["y"] in (1, 4, 5, 12)], ["A", "B"], "y")
    assert one.dropped[0]["reason"] == "no residual degrees of freedom" and one.df_resid == 1
    # B always moves with A: confounded, dropped
    tied = effects([{**r, "B": "b1" if r["A"] == "a1" else "b0"} for r in ROWS], ["A", "B"], "y")
    assert [d["term"] for d in tied.dropped] == ["B"] and [r["factor"] for r in tied.main] == ["A"]
    # two runs, one per level: an estimate, no interval
    bare = effects([{"A": "x", "y": 1.0}, {"A": "z", "y": 2.0}], ["A"], "y")
    assert bare.main[0]["estimate"] == pytest.approx(1.0) and bare.main[0]["p"] is None
    assert effects([], ["A"], "y").main == [] and "no factor varies" in effects([], ["A"], "y"
                                                                                ).table()


def _run(encoding: str, loss: str, seed: int, psnr: float) -> Variant:
    config = {"seed": seed, "optimized_metric": "val/psnr", "encoding": {"name": encoding},
              "block": {"name": "siren"}, "loss": {"name": loss},
              "latent_reduction": {"name": "sum"}}
    curve = [{"step": 10, "val/psnr": psnr - 5}, {"step": 20, "val/psnr": psnr}]
    return Variant(f"{encoding}-siren-{loss}-sum", Path(f"/r/{encoding}{loss}{seed}"), config,
                   {"psnr": psnr, "mse": 0.01 * psnr, "steps": 20}, val_curve=curve)


def test_sweep_effects_tables_and_answer(tmp_path: Path) -> None:
    cells = {("none", "bce"): 20.0, ("nerf", "bce"): 18.0, ("none", "mse"): 16.0,
             ("nerf", "mse"): 14.0}
    runs = [_run(e, lo, s, m + 0.1 * s) for (e, lo), m in cells.items() for s in range(3)]
    comp, eff = compare(runs), sweep_effects(runs)
    assert eff.factors == ["encoding", "loss"]  # block and reduction did not vary
    assert eff.reference == {"encoding": "none", "loss": "bce"}  # conf/'s defaults
    main = {r["factor"]: r for r in eff.test["psnr"].main}
    assert main["encoding"]["level"] == "nerf" and main["encoding"]["estimate"] == \
        pytest.approx(-2.0)
    assert main["loss"]["estimate"] == pytest.approx(-4.0) and main["loss"]["p"] < 1e-6
    assert {r["step"] for r in eff.by_step} == {10, 20}
    assert [r["estimate"] for r in eff.by_step if r["factor"] == "loss"] == pytest.approx(
        [-4.0, -4.0])
    assert write_tables(runs, comp, tmp_path) == eff and comp.effects == eff
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and list(rows[0])[:8] == ["variant", "encoding", "block", "loss",
                                                     "latent_reduction", "encoder", "seed",
                                                     "steps"]
    # every effect can be recomputed from runs.csv
    again = effects([{**r, "psnr": float(r["psnr"])} for r in rows], eff.factors, "psnr",
                    eff.reference)
    assert again.main == eff.test["psnr"].main
    head = json.loads((tmp_path / "headline.json").read_text())
    assert head == json.loads(json.dumps(headline(comp, eff)))
    assert head["best"]["variant"] == "none-siren-bce-sum" and head["indistinguishable"] == \
        "none-siren-bce-sum"
    assert head["effects"]["loss"]["mse-bce"]["estimate"] == pytest.approx(-4.0)
    assert json.loads((tmp_path / "effects.json").read_text())["factors"] == eff.factors
    text = answer(comp, eff)
    assert "effects on test psnr" in text and "nerf - none" in text and "mse - bce" in text
    assert "ranking by test psnr" in text and text.count("\n") < 20


def test_a_diverged_run_is_left_out_of_the_effects_too() -> None:
    """One filter (compare.finished) for the ranking and the effects: a diverged seed's value
    would move the loss effect by -2 dB if it were averaged in."""
    cells = {("none", "bce"): 20.0, ("nerf", "bce"): 18.0, ("none", "mse"): 16.0,
             ("nerf", "mse"): 14.0}
    runs = [_run(e, lo, s, m + 0.1 * s) for (e, lo), m in cells.items() for s in range(3)]
    runs.append(_run("none", "mse", 3, -8.0))  # a fourth seed of none-mse that diverged
    runs[-1].metrics["diverged"] = 1.0
    eff, comp = sweep_effects(runs), compare(runs)
    main = {r["factor"]: r for r in eff.test["psnr"].main}
    assert main["loss"]["estimate"] == pytest.approx(-4.0)  # not -5.x with the diverged run
    rows = [r for r in run_rows(runs) if not r["diverged"]]  # what runs.csv lets one redo
    assert len(rows) == 12 and effects(rows, eff.factors, "psnr", eff.reference).main == \
        eff.test["psnr"].main
    assert main["loss"]["n"] == 6 and {r["step"] for r in eff.by_step} == {10, 20}
    assert next(v for v in comp.variants if v.name == "none-siren-mse-sum").diverged == 1


def test_the_multirun_answer_counts_diverged_runs_apart(tmp_path: Path) -> None:
    for i, (block, value, diverged) in enumerate([("siren", 20.0, None), ("siren", 20.5, None),
                                                   ("modulated", 18.0, None),
                                                   ("modulated", 18.4, None),
                                                   ("modulated", 3.0, "loss exploded")]):
        run_dir = tmp_path / str(i)
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(f"- block={block}\n- seed={i}\n")
        (run_dir / ".hydra" / "config.yaml").write_text(
            f"seed: {i}\noptimized_metric: val/psnr\nblock: {{name: {block}}}\n"
            "encoding: {name: none}\nloss: {name: bce}\nlatent_reduction: {name: sum}\n"
            "encoder: {name: gradient_origin}\n")
        (run_dir / "metrics.json").write_text(json.dumps(
            {"optimized_metric": "val/psnr", "val/psnr": value, "diverged": diverged}))
    text = validation_answer(tmp_path)
    assert f"== {tmp_path}: 4 runs (1 diverged, left out), validation psnr" in text
    assert re.search(r"\n  block +modulated - siren +-2\.050 +\[", text), text


@pytest.mark.slow
def test_a_multirun_ends_with_the_answer(tmp_path: Path, data_dir: Path) -> None:
    """`python -m gon.train -m block=siren,modulated train.lr=...` with the basic launcher:
    the Hydra callback prints the effects of both (validation, not test) and the ranking, and
    gon-sweep's reader sees the same runs."""
    sweep = tmp_path / "multirun"
    out = run(train_cli(data_dir, "-m", "block=siren,modulated", "train.lr=1e-3,1e-2",
                        "train.max_steps=2", f"hydra.sweep.dir={sweep}"), tmp_path)
    tail = out[out.index(f"== {sweep}: 4 runs, validation psnr"):]
    assert "effects on validation psnr (4 runs" in tail and "execution_whitelist" not in out
    assert re.search(r"\n  block +modulated - siren +-?\d+\.\d{3} +\[", tail), tail
    assert re.search(r"\n  train\.lr +0\.01 - 0\.001 +-?\d", tail)  # a swept non-axis value
    assert "dropped block:train.lr: no residual degrees of freedom" in tail
    assert "ranking by validation psnr" in tail and "none-siren-bce-sum train.lr=" in tail
    rows = read_runs(sweep)
    assert len(rows) == 4 and {r["metric"] for r in rows} == {"val/psnr"}
    assert sorted((r["block"], r["train.lr"]) for r in rows) == [  # as Hydra writes them
        ("modulated", "0.001"), ("modulated", "0.01"), ("siren", "0.001"), ("siren", "0.01")]
    assert all(math.isfinite(r["value"]) for r in rows)
    assert validation_answer(tmp_path / "nothing") is None
