"""The claims table: the interval and verdict rules on known numbers, the file's schema, the
batch-dependence measurement, and a tiny end-to-end run of `python -m gon.claims`.

$ python -m pytest tests/test_claims.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import make_gon
from wandb_reader import read_run

from gon import make_grid
from gon.app.claims.cli import main
from gon.app.claims.run import batch_dependence
from gon.app.claims.table import (
    BUDGETS,
    COMPARISONS,
    TRIALS,
    VERDICTS,
    batch_verdict,
    compare,
    entries,
    verdict,
)
from gon.app.evaluate.page import claims_section
from gon.app.stats import ci95


def test_t_interval_on_known_numbers() -> None:
    lo, hi = ci95([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: t(0.975, 2) = 4.3027
    assert (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    assert all(math.isnan(x) for x in ci95([1.0]))


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0.1, 0.5, "holds"), (-0.5, -0.1, "does_not_hold"), (-0.1, 0.5, "inconclusive"),
    (math.nan, math.nan, "inconclusive")])
def test_verdict_rule(lo: float, hi: float, expected: str) -> None:
    assert verdict(lo, hi, 0.0) == expected


def _rows(mse: list[float], psnr: list[float] | None = None) -> list[dict]:
    psnr = psnr or [-10 * math.log10(m) for m in mse]
    return [{"mse": m, "psnr": p} for m, p in zip(mse, psnr, strict=True)]


def test_mse_ratio_and_gain_verdicts_on_known_numbers() -> None:
    gon, worse = _rows([0.010, 0.011, 0.009]), _rows([0.020, 0.023, 0.017])
    held = compare("mse_ratio", gon, worse)  # baseline / contender, about 2 each seed
    assert held["verdict"] == "holds" and held["mean"] == pytest.approx(2.0, rel=0.05)
    assert held["values"] == pytest.approx([2.0, 23 / 11, 17 / 9])
    assert compare("mse_ratio", worse, gon)["verdict"] == "does_not_hold"
    mixed = _rows([0.005, 0.022, 0.009])
    assert compare("mse_ratio", mixed, gon)["verdict"] == "inconclusive"
    gain = compare("gain_db", _rows([1, 1, 1], [21.0, 22.0, 21.5]), _rows([1, 1, 1],
                                                                          [20.0, 20.5, 20.5]))
    assert gain["values"] == pytest.approx([1.0, 1.5, 1.0]) and gain["verdict"] == "holds"
    lo, hi = gain["ci95"]
    assert (lo, hi) == pytest.approx(ci95([1.0, 1.5, 1.0]))
    # claim f near the anchor's epoch-5 figures: the VAE's lower negative ELBO is the GON's loss
    ratio = compare("nelbo_ratio", [{"nelbo": 193.9}, {"nelbo": 195.0}, {"nelbo": 192.0}],
                    [{"nelbo": 159.6}, {"nelbo": 160.0}, {"nelbo": 158.0}])
    assert ratio["values"] == pytest.approx([159.6 / 193.9, 160 / 195, 158 / 192])
    assert ratio["verdict"] == "does_not_hold" and ratio["mean"] < 1
    assert batch_verdict([1e-7, 2e-7], [0.98, 0.98]) == "holds"
    assert batch_verdict([0.5, 1e-7], [0.98, 0.98]) == "does_not_hold"
    assert batch_verdict([1e-7], [1e-7]) == "inconclusive"


def test_entries_schema_and_section() -> None:
    def row(i: int, seed: int) -> dict:
        figs = {"step": 10, "seconds": 1.0, "mse": 0.01 * (1 + i) * (1 + seed / 10),
                "psnr": 20.0 - i, "nelbo": 30.0 + i + seed}
        return {"params": 100 + i, "batch_dependence": 1e-8 * i, "at_steps": figs,
                "at_time": figs}

    results = {n: [row(i, s) for s in (0, 1)] for i, n in enumerate(TRIALS)}
    table = entries(results, [0, 1])
    assert len(table) == sum(1 if c[4] == "batch_dependence" else len(BUDGETS)
                             for c in COMPARISONS)
    for e in table:
        assert {"id", "claim", "statement", "budget", "contender", "baseline", "measure",
                "seeds", "n", "params", "values", "mean", "ci95", "verdict", "anchor",
                "figures"} <= set(e)
        assert e["verdict"] in VERDICTS and len(e["values"]) == e["n"] == 2
    assert {e["claim"] for e in table} == set("abcdef")
    (linear,) = [e for e in table if e["id"] == "d.linear_map_vs_mlp@steps"]  # the ablation
    assert (linear["contender"], linear["baseline"]) == ("modulated_linear", "modulated_matched")
    assert "block.linear_map=true" in TRIALS["modulated_linear"]
    ids = [e["id"] for e in table]
    assert len(set(ids)) == len(ids) and "a.second_order@time" in ids
    setup = {"dataset": "digits", "seeds": [0, 1], "steps": 10, "time_budget_s": 1.0,
             "rule": "r"}
    page = claims_section({"setup": setup, "entries": table})
    assert page.count("<tr class=") == len(table) and 'id="claims"' in page
    assert claims_section(None) == ""


def test_batch_dependence_of_sum_and_mean() -> None:
    coords, x = make_grid(6, 6), torch.rand(64, 6, 6, 1)
    assert batch_dependence(make_gon(reduction="sum", seed=0), coords, x) < 1e-5
    mean = batch_dependence(make_gon(reduction="mean", seed=0), coords, x)
    assert mean == pytest.approx(63 / 64, rel=1e-4)  # alone: -g; in the batch: -g / 64


def test_claims_cli_writes_the_table(data_dir: Path, tmp_path: Path, wandb_offline: Path):
    out = tmp_path / "reports"
    tiny = "model.hidden_dim=16 model.latent_dim=8 model.num_layers=2 train.batch_size=16"
    assert main(["--steps", "2", "--seeds", "0", "1", "--jobs", "1", "--overrides", tiny,
                 "--data-dir", str(data_dir), "--out", str(out)]) == 0
    claims = json.loads((out / "claims.json").read_text())
    assert claims["setup"]["seeds"] == [0, 1] and claims["setup"]["steps"] == 2
    assert claims["setup"]["time_budget_s"] > 0
    env = claims["setup"]["environment"]  # what "the same values" depends on (issue 22)
    assert env["versions"]["torch"] == torch.__version__ and env["cpu_capability"]
    for e in claims["entries"]:
        assert e["verdict"] in VERDICTS
        if e["budget"] == "steps":
            assert e["figures"]["contender"]["step"] == [2, 2]
    (d,) = [e for e in claims["entries"] if e["id"] == "d.linear_map_vs_mlp@steps"]
    # num_layers=2: one modulation, one linear layer either way, so equal at the same width
    assert d["params"]["contender"] == d["params"]["baseline"]
    (f,) = [e for e in claims["entries"] if e["id"] == "f.variational_gon_vs_vae@steps"]
    nelbo = f["figures"]["contender"]["nelbo"] + f["figures"]["baseline"]["nelbo"]
    assert len(nelbo) == 4 and all(math.isfinite(x) and x > 0 for x in nelbo)
    assert f["values"] == pytest.approx([b / c for c, b in zip(
        f["figures"]["contender"]["nelbo"], f["figures"]["baseline"]["nelbo"], strict=True)])
    (run_dir,) = (out / "claims_wandb" / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["run"]["job_type"] == "claims"
    assert run["history"][0]["claims/_type"] == "table-file"
