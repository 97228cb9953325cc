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
from gon.app.claims.run import batch_dependence, compose_trial, compose_trials
from gon.app.claims.table import (
    BUDGETS,
    COMPARISONS,
    PROBED,
    TRIALS,
    VERDICTS,
    batch_verdict,
    compare,
    entries,
    verdict,
)
from gon.app.claims.trials import run_trial
from gon.app.config import compose
from gon.app.evaluate.page import claims_section
from gon.app.stats import ci95
from gon.app.train.loop import DIVERGED_LOSS_FACTOR, DIVERGED_PSNR_DROP_DB, divergence


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


def test_composed_once_per_trial_equals_composed_per_seed() -> None:
    """compose_trials composes a trial once and copies it per seed: each copy must be the
    config that composing that seed gives (also with a user override)."""
    from omegaconf import OmegaConf

    names, seeds, extra = ["gon", "modulated_linear", "variational"], [0, 3], ["train.lr=0.002"]
    got = compose_trials(names, "digits", seeds, extra, "data")
    for n in names:
        for s in seeds:
            want = compose_trial(n, "digits", s, extra, "data")
            assert OmegaConf.to_container(got[n, s]) == OmegaConf.to_container(want), (n, s)
    assert got["gon", 0].seed == 0 and got["gon", 3].seed == 3
    # an override naming the seed: composed per seed, as before (the override wins)
    pinned = compose_trials(["gon"], "digits", seeds, ["seed=7"], "data")
    assert pinned["gon", 0].seed == pinned["gon", 3].seed == 7


def test_batch_dependence_is_measured_where_a_claim_reads_it() -> None:
    read = {n for c in COMPARISONS if c[4] == "batch_dependence" for n in (c[2], c[3])}
    assert PROBED == read == {"gon", "mean"}


def test_claims_cli_writes_the_table(data_dir: Path, tmp_path: Path, wandb_offline: Path):
    out = tmp_path / "reports"
    tiny = "model.hidden_dim=16 model.latent_dim=8 model.num_layers=2 train.batch_size=16"
    assert main(["--steps", "2", "--seeds", "0", "1", "--jobs", "1", "--overrides", tiny,
                 "--data-dir", str(data_dir), "--out", str(out)]) == 0
    claims = json.loads((out / "claims.json").read_text())
    assert claims["setup"]["seeds"] == [0, 1] and claims["setup"]["steps"] == 2
    assert claims["setup"]["time_budget_s"] > 0
    (b,) = [e for e in claims["entries"] if e["measure"] == "batch_dependence"]
    assert len(b["values"]) == len(b["baseline_values"]) == 2  # gon and mean were probed
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


def test_divergence_rule_on_known_curves() -> None:
    steady = [5.0, 3.0] + [2.1, 1.9] * 14  # window means 2.4, 2.0, 2.0
    assert divergence(steady) is None and divergence(steady, [20.0, 21.0, 20.5]) is None
    assert "non-finite" in divergence([*steady, math.nan])
    exploded = steady + [DIVERGED_LOSS_FACTOR * 2.0 * 1.1] * 10  # its last window
    assert "exploded" in divergence(exploded)
    assert divergence(steady + [DIVERGED_LOSS_FACTOR * 2.0 * 0.9] * 10) is None
    fell = [22.0, 22.0 - DIVERGED_PSNR_DROP_DB - 0.1]  # the issue's +1.48 -> -4.59 dB seed
    assert "fell" in divergence(steady, fell) and divergence(steady, [22.0, 19.5]) is None
    assert divergence(steady, [19.0, math.nan]) is not None
    assert divergence([4.0, 40.0, 4.0], window=1) is None  # it came back: the last counts


def test_diverged_seeds_are_counted_not_averaged() -> None:
    # claim e at equal steps, seed 2's contender diverged (its gain was -4.59 dB, not a number)
    cont = [{"psnr": 21.5, "mse": 1}, {"psnr": 21.2, "mse": 1},
            {"psnr": 15.4, "mse": 1, "diverged": "PSNR fell"}]
    base = [{"psnr": 20.0, "mse": 1}] * 3
    e = compare("gain_db", cont, base)
    assert e["values"] == pytest.approx([1.5, 1.2]) and e["n"] == 2 and e["used"] == [0, 1]
    assert e["ci95"] == pytest.approx(list(ci95([1.5, 1.2])))
    assert e["diverged"] == {"contender": 1, "baseline": 0}
    assert "1 of 3 contender seeds diverged" in e["note"]
    base[1] = base[1] | {"diverged": "non-finite loss"}  # one seed left: no verdict at all
    assert compare("gain_db", cont, base)["verdict"] == "diverged"
    assert compare("batch_dependence", [r | {"batch_dependence": 0.0} for r in cont],
                   [r | {"batch_dependence": 1.0} for r in base])["verdict"] == "diverged"


def test_collapsed_models_are_not_ranked() -> None:
    vgon = [{"nelbo": 150.0, "kl": 0.2}, {"nelbo": 151.0, "kl": 0.4}]
    vae = [{"nelbo": 160.0, "kl": 0.1}, {"nelbo": 161.0, "kl": 0.3}]
    e = compare("nelbo_ratio", vgon, vae)
    assert e["verdict"] == "collapsed" and "collapsed to the prior" in e["note"]
    alive = [r | {"kl": 25.0} for r in vgon], [r | {"kl": 20.0} for r in vae]
    assert compare("nelbo_ratio", *alive)["verdict"] == "holds"


def test_a_diverging_trial_is_reported_not_raised() -> None:
    cfg = compose(["logger=none", "device=cpu", "train.lr=1e3", "model.hidden_dim=16",
                   "model.latent_dim=8", "model.num_layers=2", "train.batch_size=16",
                   "model.latent_updates=3"])
    torch.manual_seed(0)
    images = torch.rand(48, 6, 6, 1)
    r = run_trial(cfg, images[:32], images[32:], steps=30, seconds=60.0)
    for key in ("at_steps", "at_time"):  # it stopped at the first non-finite loss
        assert "non-finite" in r[key]["diverged"] and math.isnan(r[key]["psnr"])
        assert r[key]["step"] < 30
    table = entries({n: [r, r] if n == "k3_fixed" else [_ok(), _ok()] for n in TRIALS}, [0, 1])
    (e,) = [e for e in table if e["id"] == "e.k3_fixed_vs_one_step@steps"]
    assert e["verdict"] == "diverged" and e["diverged"]["contender"] == 2
    assert e["seeds_used"] == [] and "no seeds left" in claims_section(
        {"setup": {"dataset": "d", "seeds": [0, 1], "steps": 30, "time_budget_s": 1.0,
                   "rule": "r"}, "entries": table})


def _ok() -> dict:
    figs = {"step": 30, "seconds": 1.0, "mse": 0.01, "psnr": 20.0, "nelbo": 30.0, "kl": 5.0,
            "diverged": None}
    return {"params": 10, "batch_dependence": 0.0, "at_steps": figs, "at_time": figs}


def test_quality_benchmark_curves_targets_and_json(data_dir: Path, tmp_path: Path) -> None:
    """benchmarks/quality.py in one run: the baseline, a candidate at both budgets, each
    seed's value, wall and CPU seconds, the validation curve's fall and the target line."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    tiny = f"paths.data_dir={data_dir} model.hidden_dim=8 model.latent_dim=4 train.batch_size=8"
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "quality.py"), "--steps", "8", "--seeds",
         "0", "1", "--threads", "1", "--curve-every", "4", "--target-db", "99",
         "--baseline", tiny, "--candidate", f"{tiny} train.lr_schedule=cosine",
         "--json", str(tmp_path / "q.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "target 99 dB at 8 steps: NOT met by the mean of 2 seeds" in out.stdout
    assert "val curve falls" in out.stdout and "wall" in out.stdout
    rows = json.loads((tmp_path / "q.json").read_text())["rows"]
    cand = rows[1]
    assert cand["config"].endswith("train.lr_schedule=cosine") and len(cand["wall_s"]) == 2
    assert [p["step"] for p in cand["val_curves"][0]] == [4, 8]
    assert len(cand["val_fall_db"]) == 2 and all(f >= 0 for f in cand["val_fall_db"])


def test_quality_benchmark_without_baseline_on_a_named_dataset(data_dir: Path,
                                                                 tmp_path: Path) -> None:
    """--baseline none: no baseline and no time budget, the candidates at --steps only, on the
    dataset and data dir given once for every config; the mean validation curve is printed
    with its CPU seconds and kept in the JSON."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    tiny = "model.hidden_dim=8 model.latent_dim=4 train.batch_size=8"

    def quality(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(root / "benchmarks" / "quality.py"), "--steps", "8", "--seeds",
             "0", "1", "--threads", "1", "--curve-every", "4", "--baseline", "none",
             "--dataset", "digits", "--data-dir", str(data_dir), "--candidate", tiny,
             "--target", "4:0", *extra],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)

    out = quality("--json", str(tmp_path / "q.json"))
    assert out.returncode == 0, out.stderr
    # --jobs 2: the seeds in two processes at once, the same figures
    par = quality("--jobs", "2", "--json", str(tmp_path / "q2.json"))
    assert par.returncode == 0, par.stderr
    (both,) = json.loads((tmp_path / "q2.json").read_text())["rows"]
    assert json.loads((tmp_path / "q2.json").read_text())["setup"]["jobs"] == 2
    assert "baseline" not in out.stdout and "at_time" not in out.stdout
    assert "validation curve (mean of the seeds)" in out.stdout
    assert "target 0 dB at 4 steps: met by the mean of 2 seeds" in out.stdout  # on the way
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["setup"]["time_budget_cpu_s"] is None and q["setup"]["dataset"] == "digits"
    (cand,) = q["rows"]
    assert cand["at_time"] is None and len(cand["at_steps"]["psnr"]) == 2
    assert cand["at_4_steps"]["steps_mean"] == 4 and len(cand["at_4_steps"]["psnr"]) == 2
    assert q["setup"]["targets_db"] == {"4": 0.0}
    assert both["at_steps"]["psnr"] == cand["at_steps"]["psnr"] and len(both["wall_s"]) == 2
    assert [[p["psnr"] for p in c] for c in both["val_curves"]] == \
        [[p["psnr"] for p in c] for c in cand["val_curves"]]
    mean = cand["val_curve_mean"]
    assert [p["step"] for p in mean] == [4, 8]
    assert mean[1]["psnr"] == pytest.approx(
        (cand["val_curves"][0][1]["psnr"] + cand["val_curves"][1][1]["psnr"]) / 2)


def test_quality_curve_text_sets_the_anchor_beside_the_curve() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality", path)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    curve = quality.mean_curve([[{"step": 937, "seconds": 10.0, "psnr": 20.0},
                                 {"step": 1875, "seconds": 20.0, "psnr": 22.0}],
                                [{"step": 937, "seconds": 12.0, "psnr": 21.0},
                                 {"step": 1875, "seconds": 22.0, "psnr": 23.0}]])
    assert [(p["step"], p["seconds"], p["psnr"]) for p in curve] == [(937, 11.0, 20.5),
                                                                     (1875, 21.0, 22.5)]
    text = quality.curve_text(curve, quality.ANCHORS["mnist"])
    assert "epoch 1 (937 steps) 12.9 dB" in text and "epoch 5" not in text  # up to the end
    assert "   1875     21.0  22.50" in text


def test_selection_writes_the_validation_choice_from_its_runs(data_dir: Path,
                                                              tmp_path: Path) -> None:
    """benchmarks/selection.py: each run's overrides, params, logged validation PSNR by step and
    at the end, from the run dirs alone; the rule given is kept."""
    import subprocess
    import sys

    from helpers import run, train_cli

    root = Path(__file__).resolve().parents[1]
    for width in (8, 16):
        run(train_cli(data_dir, f"model.hidden_dim={width}", "train.max_steps=6",
                      "train.eval_every=3", f"hydra.run.dir={tmp_path / f'h{width}'}"), tmp_path)
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "selection.py"), str(tmp_path / "h8"),
         str(tmp_path / "h16"), "--title", "widths", "--rule", "the wider if >= 1 dB better",
         "--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    sel = json.loads((tmp_path / "s.json").read_text())
    assert sel["setup"]["rule"] == "the wider if >= 1 dB better"
    h8, h16 = sel["rows"]
    assert "model.hidden_dim=8" in h8["config"] and h16["params"] > h8["params"] > 0
    metrics = json.loads((tmp_path / "h16" / "metrics.json").read_text())
    assert h16["val_psnr_end"] == round(metrics["val/psnr"], 3) and h16["step"] == 6
    points = [point.split(": ") for point in h16["val_psnr_by_step"].split(", ")]
    assert [int(step) for step, _ in points] == [1, 2, 3, 4, 5, 6]  # eval_every 3, 6 points
    assert float(points[-1][1]) == pytest.approx(metrics["val/psnr"], abs=0.005)
    assert h16["diverged"] is False and h16["finished"] and "h16" in out.stdout
    (tmp_path / "h8" / "metrics.json").unlink()  # as if stopped before its end
    subprocess.run([sys.executable, str(root / "benchmarks" / "selection.py"),
                    str(tmp_path / "h8"), "--title", "t", "--rule", "r", "--json",
                    str(tmp_path / "s.json")], check=True, capture_output=True, timeout=120)
    (h8,) = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert not h8["finished"] and h8["val_psnr_end"] is None and h8["step"] == 6
