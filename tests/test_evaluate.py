"""gon.app.evaluate and gon.app.report on tiny trained runs (two variants, one of them with two
seeds): metrics, latents, grids, the report files with intervals and curves, the offline HTML
page, the CLI and the W&B eval/summary runs read back.

$ python -m pytest tests/test_evaluate.py -q
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, compose_config, make_gon
from omegaconf import OmegaConf
from PIL import Image
from wandb_reader import read_run

from gon import make_grid
from gon.app.build import build_model
from gon.app.evaluate.cli import main
from gon.app.evaluate.compare import compare
from gon.app.evaluate.page import STRIP
from gon.app.evaluate.report import GRIDS, log_wandb, summary_columns, write_report
from gon.app.evaluate.runs import (
    encode,
    encoding_curve,
    evaluate_sweep,
    find_runs,
    variant_name,
)
from gon.app.metrics import LIKELIHOOD, SAMPLE_SEED, image_grid, render
from gon.app.reliability.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gon.app.train.job import train


@pytest.fixture(scope="module")
def variants(tiny_sweep: Path) -> list:
    return evaluate_sweep(tiny_sweep, torch.device("cpu"), probe_images=200, rows=4)


def test_find_runs_in_numeric_order(tmp_path: Path) -> None:
    for job in ("10", "2", "x"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "checkpoint.pt").touch()
        (tmp_path / job / "metrics.json").touch()
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "checkpoint.pt").touch()  # unfinished: no metrics.json
    assert [p.name for p in find_runs(tmp_path)] == ["2", "10", "x"]


def test_every_run_scored(variants: list) -> None:
    # by variant name, then seed: not by trial number, which a resumed sweep assigns otherwise
    assert [v.name for v in variants] == ["nerf-modulated-mse-mean", "none-siren-bce-sum",
                                          "none-siren-bce-sum"]
    assert [v.seed for v in variants] == [0, 0, 1]
    for v in variants:
        m = v.metrics
        assert {"mse", "psnr", "ssim", "bce", "probe_acc", "steps", "params"} <= set(m)
        assert m["diverged"] == 0.0  # train.loop.divergence, through metrics.json
        # the encoding curve: k' = 1 .. 2k latent steps for k = 1; k' = k is the test PSNR
        assert [r["steps"] for r in v.encoding_curve] == [1, 2]
        assert v.encoding_curve[0]["psnr"] == pytest.approx(m["psnr"]) and math.isfinite(
            v.encoding_curve[1]["psnr"]) and v.encoding_curve[1]["psnr"] != m["psnr"]
        done = json.loads((v.run_dir / "metrics.json").read_text())
        assert done["diverged"] is False and done["divergence"] is None
        assert all(isinstance(x, int | float) and math.isfinite(x) for x in m.values())
        assert 0 < m["mse"] < 1 and 0 <= m["probe_acc"] <= 1 and m["steps"] == 12
        assert [r["step"] for r in v.curve] == [2, 4, 5, 6, 8, 10, 12]  # log and eval steps
        assert [r["step"] for r in v.val_curve] == [2, 4, 6, 8, 10, 12]  # every 12 // 6 steps
    assert variants[0].metrics["psnr"] != variants[2].metrics["psnr"]  # the seed matters
    assert not variants[2].grids  # drawn once per variant, for its first run


@pytest.mark.parametrize("updates", [1, 2])
def test_encoding_curve_reuses_the_trained_renders_exactly(updates: int) -> None:
    """The curve's point at the trained k, from the renders evaluate_run already made, is the
    point it computes itself (the same call), to the last bit; the other points are computed."""
    model, images = make_gon(updates=updates, seed=0).eval(), torch.rand(40, 6, 6, 1)
    coords = make_grid(6, 6)
    with torch.no_grad():
        trained = render(model, encode(model, coords, images, 16), (6, 6))
        assert encoding_curve(model, coords, images, 16, trained) == \
            encoding_curve(model, coords, images, 16)
        fake = torch.zeros_like(trained)  # only the trained k's point reads `trained`
        points = encoding_curve(model, coords, images, 16, fake)
    assert [p["steps"] for p in points] == list(range(1, 2 * updates + 1))
    assert [p for p in points if p["steps"] != updates] == [
        p for p in encoding_curve(model, coords, images, 16) if p["steps"] != updates]


def test_grids_are_images_not_blank(variants: list) -> None:
    for v in variants[:2]:
        assert set(v.grids) == {*GRIDS, *STRIP}
        for name, grid in v.grids.items():
            assert grid.dtype.name == "uint8" and grid.ndim == 3 and grid.shape[2] == 3, name
            assert grid.std() > 0 and (grid != 128).mean() > 0.3, f"{v.name}/{name} is blank"
        # super-resolution: 3 lines of 4 images, each 4x the native 8 px, with 2 px borders
        assert v.grids["superres"].shape[:2] == (3 * 34 + 2, 4 * 34 + 2)
        # the grids above also hold originals; these parts hold renders only
        for name, renders in [("samples", v.grids["samples"]),
                              ("superres 4x", v.grids["superres"][2 * 34 + 2 :])]:
            assert renders.std() > 0 and (renders != 128).mean() > 0.3, f"{v.name}/{name}"


def test_variant_order_does_not_depend_on_trial_numbers(tiny_sweep: Path, variants: list,
                                                         tmp_path: Path) -> None:
    """A resumed sweep numbers its trials differently; the runs' order stays."""
    swapped = tmp_path / "swapped"
    for old, new in (("0", "2"), ("1", "0"), ("2", "1")):
        shutil.copytree(tiny_sweep / old, swapped / new)
    again = evaluate_sweep(swapped, torch.device("cpu"), probe_images=200, rows=4)
    assert [(v.name, v.seed) for v in again] == [(v.name, v.seed) for v in variants]


@pytest.mark.parametrize("updates", [1, 2])
def test_mean_reduction_latents_as_in_training(data_dir: Path, tmp_path: Path, updates: int):
    cfg = compose_config([*TINY, "latent_reduction=mean", f"model.latent_updates={updates}",
                          f"paths.output_dir={tmp_path}"])
    torch.manual_seed(0)
    model = build_model(cfg, channels=1)
    images, coords = torch.rand(20, 8, 8, 1), make_grid(8, 8)
    z = encode(model, coords, images, batch=16)
    # what training saw: a batch of exactly 16 images
    assert torch.allclose(z[:16], model.encode(coords, images[:16], batch_size=16), atol=1e-5)
    assert torch.allclose(z[16:], encode(model, coords, images[16:], batch=16), atol=1e-5)
    if updates == 1:  # an unpadded chunk of 4 would give latents 4x the trained scale
        raw = model.encode(coords, images[16:], batch_size=16)
        assert torch.allclose(raw, 4 * z[16:], rtol=1e-4, atol=1e-7)
    assert variant_name(cfg) == "none-siren-bce-mean"


def test_report_files(variants: list, tmp_path: Path) -> None:
    (tmp_path / "images" / "stale-variant").mkdir(parents=True)
    comp = write_report(variants, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    names = ["none-siren-bce-sum", "nerf-modulated-mse-mean"]
    assert set(metrics) == {*names, "best"}
    two = [v.metrics["psnr"] for v in variants if v.name == names[0]]  # seeds 0 and 1
    psnr = metrics[names[0]]["psnr"]
    assert psnr["n"] == 2 and psnr["mean"] == pytest.approx(sum(two) / 2)
    assert psnr["sd"] == pytest.approx(abs(two[0] - two[1]) / math.sqrt(2))
    half = 12.706 * psnr["sd"] / math.sqrt(2)  # t(0.975, 1) = 12.706
    assert psnr["ci95_high"] == pytest.approx(psnr["mean"] + half, rel=1e-4)
    one = metrics[names[1]]["psnr"]  # one seed: the fields exist, undefined ones are null
    assert one["n"] == 1 and one["sd"] is one["ci95_low"] is one["ci95_high"] is None
    assert metrics["best"] == metrics[comp.best.name] and metrics["best"]["rank"] == 1
    assert set(metrics[names[1]]) >= {"psnr", "ssim", "mse", "bce", "probe_acc", "rank"}
    rows = list(csv.DictReader(open(tmp_path / "variants.csv")))
    assert [r["variant"] for r in rows] == [s.name for s in comp.variants]  # best first
    row = next(r for r in rows if r["variant"] == names[1])
    assert row["block"] == "modulated" and row["n"] == "1" and row["psnr_ci95_low"] == ""
    curves = list(csv.DictReader(open(tmp_path / "val_curves.csv")))
    assert list(curves[0]) == ["variant", "step", "psnr_mean", "psnr_ci95_low",
                               "psnr_ci95_high", "n"]
    mine = [r for r in curves if r["variant"] == names[0]]
    assert [int(r["step"]) for r in mine] == [2, 4, 6, 8, 10, 12]
    assert {r["n"] for r in mine} == {"2"} and all(
        float(r["psnr_ci95_low"]) <= float(r["psnr_mean"]) <= float(r["psnr_ci95_high"])
        for r in mine)
    for name in names:
        curve = list(csv.DictReader(open(tmp_path / "curves" / f"{name}.csv")))
        assert len(curve) == 7 and all(math.isfinite(float(r["loss_outer"])) for r in curve)
        for grid in GRIDS:
            with Image.open(tmp_path / "images" / name / f"{grid}.png") as img:
                assert img.format == "PNG"
    assert not (tmp_path / "images" / "stale-variant").exists()
    # one row per run, from which the effects can be recomputed
    runs = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [(r["variant"], r["seed"]) for r in runs] == [(v.name, str(v.seed)) for v in variants]
    assert runs[0]["encoding"] == "nerf" and runs[0]["encoder"] == "gradient_origin"
    assert float(runs[1]["psnr"]) == pytest.approx(variants[1].metrics["psnr"])
    # the two variants differ on every axis: one effect is estimable, the rest are confounded
    eff = json.loads((tmp_path / "effects.json").read_text())
    psnr = eff["test"]["psnr"]
    assert [r["factor"] for r in psnr["main"]] == ["encoding"] and psnr["df_resid"] == 1
    assert [d["term"] for d in psnr["dropped"]] == ["block", "loss", "latent_reduction"]
    nerf = [float(r["psnr"]) for r in runs if r["encoding"] == "nerf"]
    none = [float(r["psnr"]) for r in runs if r["encoding"] == "none"]
    assert psnr["main"][0]["estimate"] == pytest.approx(sum(nerf) / 1 - sum(none) / 2)
    assert {r["step"] for r in eff["by_step"]} == {2, 4, 6, 8, 10, 12}
    head = json.loads((tmp_path / "headline.json").read_text())
    assert head["best"]["variant"] == comp.best.name and head["indistinguishable"]
    assert list(head["effects"]) == ["encoding"] and "nerf-none" in head["effects"]["encoding"]


def test_index_html_is_offline_and_complete(variants: list, tmp_path: Path) -> None:
    comp = write_report(variants, tmp_path, study="study-x")
    page = (tmp_path / "index.html").read_text()
    assert "<script src" not in page
    body = page[page.index("<body>"):page.index("<script>const SPECS")]  # no bundle
    assert not re.search(r'(src|href)="(https?:)?//', body)  # nothing to fetch
    sources = re.findall(r'<img src="([^"]+)"', body)
    assert len(sources) == 2 * len(GRIDS) + 1 + 2  # grids per variant; the strip's rows
    assert all((tmp_path / s).is_file() for s in sources)  # relative paths that exist
    section = body[body.index('id="encoding"'):body.index('id="claims"') if 'id="claims"'
                   in body else None]  # the encoding curve: k' = 1, 2 for the trained k = 1
    assert "k&#x27;=2" in section or "k'=2" in section
    assert section.count("<tr>") == 1 + 2  # the head, a row per variant
    best = comp.best.name
    # one seed on a side: the pair is not tested, so both share place 1 (shown as =1)
    assert f'<tr class="best"><td>=1</td><td><a href="#{best}"' in page
    assert "Welch" in page and "Holm" in page and "&plusmn;" in page  # the rule, the intervals
    assert "Ranking at every budget" in page and "Spearman" in page
    # it opens with the answer: provenance, the best and its equals, the effects
    top = page[page.index("<body>"):page.index("<h2>Variants</h2>")]
    for word in ("dataset</b> digits", "steps</b> 12", "seeds</b> 0, 1", "commit</b> ",
                 "study</b> study-x", "date</b> 20", f"<b>{best}</b>", "Cannot be told apart",
                 "Effects on test psnr", 'id="forest"', "Effects at every budget"):
        assert word in top, word
    # the charts: Vega-Lite specs drawn by the inlined bundle, one div each
    specs = json.loads(re.search(r"const SPECS = (.*?);\n", page).group(1))
    assert {"forest", "by-budget", "bars", "curves"} <= set(specs)
    assert len([k for k in specs if k.startswith("loss-")]) == 2  # a training curve each
    assert all(f'<div class="vega" id="{k}"></div>' in page for k in specs)
    assert "vegaEmbed" in page and "window.vegaEmbed=" in page  # the bundle, inlined
    # the strip: the originals first, marked, then one row of reconstructions per variant
    strip = page[page.index('<table class="strip">'):]
    strip = strip[:strip.index("</table>")]
    assert strip.count("<tr") == 1 + 2 and strip.startswith('<table class="strip"><tr '
                                                             'class="original">')
    assert [re.findall(r'images/([^/]+)/strip.png', strip)] == [[s.name for s in comp.variants]]


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_a_crafted_variant_name_reaches_no_live_tag(variants: list, tmp_path: Path) -> None:
    """A variant name holding markup and a `/` (a block.name that bypassed validate_config,
    e.g. from an old checkpoint) is text on the page and a slug in every id, link and file."""
    bad = '<img src=x onerror=alert(1)>/"x'
    crafted = []
    for v in variants:
        config = copy.deepcopy(v.config)
        if v.name == "none-siren-bce-sum":
            config["block"]["name"] = bad
        crafted.append(dataclasses.replace(v, config=config, name=v.name.replace(
            "siren", bad)))
    write_report(crafted, tmp_path)
    parser = _Tags()
    parser.feed((tmp_path / "index.html").read_text())
    assert parser.tags and not [(t, a) for t, a in parser.tags
                                if any(k.startswith("on") for k in a)], "a live handler"
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) == 2 * (len(GRIDS) + 1) + 1 and "x" not in images  # + the strip
    assert all((tmp_path / s).is_file() and ".." not in s for s in images)
    assert all(p.parent.parent == tmp_path / "images" for p in tmp_path.glob("images/*/*"))
    ids = [a["id"] for _, a in parser.tags if "id" in a]
    links = [a["href"][1:] for t, a in parser.tags if t == "a" and a["href"].startswith("#")]
    assert len(set(ids)) == len(ids) and set(links) <= set(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", i) for i in ids)
    assert bad.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in (
        tmp_path / "index.html").read_text()


PARTIAL = {"complete": False, "trials": {"finished": 3, "budget": 4, "not_started": 0},
           "failed_trials": [{"trial": 3, "params": {"seed": 1}, "dir": "s/3",
                              "error": "boom <b>"}],
           "missing_trials": [], "unfinished_trials": []}


def test_partial_report_is_written_once_and_marked_everywhere(variants: list, tmp_path: Path):
    """A partial sweep's fields reach metrics.json, every CSV dvc plots draws and the page's
    banner in one write (no file is re-opened and patched afterwards)."""
    write_report(variants, tmp_path, PARTIAL)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["complete"] is False and metrics["failed_trials"][0]["trial"] == 3
    assert {"best", "none-siren-bce-sum"} <= set(metrics)
    for csv_path in [tmp_path / "variants.csv", tmp_path / "val_curves.csv",
                     *(tmp_path / "curves").glob("*.csv")]:
        rows = list(csv.DictReader(open(csv_path)))
        assert rows and {r["complete"] for r in rows} == {"false"}, csv_path
    page = (tmp_path / "index.html").read_text()
    assert page.count("Partial report") == 1 and "<title>PARTIAL: " in page
    assert "boom &lt;b&gt;" in page and "3 of 4 trials" in page
    write_report(variants, tmp_path)  # complete: no trace of the partial one
    assert "complete" not in json.loads((tmp_path / "metrics.json").read_text())
    assert "complete" not in next(csv.DictReader(open(tmp_path / "variants.csv")))
    assert "Partial report" not in (tmp_path / "index.html").read_text()


def test_cli(tiny_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tiny_sweep), str(tmp_path / "r"), "--no-wandb", "--probe-images", "100",
                 "--rows", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out  # the answer, printed: effects, then the ranking's top
    assert "effects on test psnr (3 runs" in out and "nerf - none" in out
    assert "dropped block: confounded" in out and "ranking by test psnr" in out
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()).keys() >= {"best"}
    assert not any((tmp_path / "r" / "wandb").iterdir())  # there (a DVC out), but empty
    curve = json.loads((tmp_path / "r" / "encoding_curve.json").read_text())
    siren = [r for r in curve if r["variant"] == "none-siren-bce-sum"]
    assert [(r["steps"], r["n"], r["seeds"]) for r in siren] == [(1, 2, [0, 1]), (2, 2, [0, 1])]
    assert siren[0]["psnr_ci95_low"] < siren[0]["psnr_mean"] < siren[0]["psnr_ci95_high"]
    assert siren[0]["trained_steps"] == 1 and len(siren[0]["psnr_per_seed"]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "r2"), "--no-wandb"]) == 1


def test_wandb_eval_and_summary_runs(variants: list, wandb_offline: Path, tmp_path: Path):
    comp = write_report(variants, tmp_path)
    log_wandb(comp, tmp_path, group_default="sweep")
    runs = [read_run(d) for d in sorted((tmp_path / "wandb").glob("offline-run-*"))]
    evals = {r["run"]["name"]: r for r in runs if r["run"]["job_type"] == "eval"}
    (summary,) = [r for r in runs if r["run"]["job_type"] == "summary"]
    assert set(evals) == {s.name for s in comp.variants}
    assert {r["run"]["group"] for r in runs} == {"study-1"}  # the trials' group
    for s in comp.variants:
        run = evals[s.name]
        assert run["exit_code"] == 0 and "block=" + s.runs[0].config["block"]["name"] in run[
            "run"]["tags"]
        assert run["summary"]["test/psnr/mean"] == pytest.approx(s.stats["psnr"]["mean"])
        assert run["config"]["variant"] == s.name and run["config"]["seeds"] == [
            r.seed for r in s.runs]
        assert run["history"][0]["recon/_type"] == "image-file"
    row = summary["history"][0]
    assert row["variants/_type"] == "table-file" and row["variants/nrows"] == 2
    files = next((tmp_path / "wandb").glob("offline-run-*" + summary["run"]["id"])) / "files"
    table = json.loads((files / row["variants/path"]).read_text())
    assert table["columns"] == summary_columns() and "psnr/ci95_low" in table["columns"]
    by_name = {r[0]: dict(zip(table["columns"], r, strict=True)) for r in table["data"]}
    assert by_name[comp.best.name]["psnr/mean"] == pytest.approx(comp.best.stats["psnr"]["mean"])
    assert by_name["nerf-modulated-mse-mean"]["psnr/sd"] is None  # one seed
    curves = json.loads((files / row["val_curves/path"]).read_text())
    assert curves["columns"][:3] == ["variant", "step", "psnr_mean"] and len(curves["data"]) == 12
    assert row["val_psnr_curves_table/_type"] == "table-file"  # the line-series chart's data
    assert summary["summary"]["best"] == comp.best.name
    effects = json.loads((files / row["effects/path"]).read_text())  # the effects table
    assert effects["columns"][:4] == ["metric", "step", "term", "factor"]
    assert ["psnr", None, "encoding: nerf - none"] in [r[:3] for r in effects["data"]]
    assert row["psnr_effects_table/_type"] == "table-file"  # the bar chart's data
    assert summary["config"]["seeds"] == [0, 1]


def test_variational_run_reports_its_likelihood(data_dir: Path, tmp_path: Path,
                                                wandb_offline: Path) -> None:
    """A variational GON on binary pixels: its negative ELBO and IW bound in metrics.json,
    variants.csv, the page's likelihood table and W&B; its sample grid decodes the prior."""
    sweep = tmp_path / "sweep"
    train(compose_config([*TINY, "logger=wandb", "train.max_steps=12", "encoder=variational",
                          "dataset.binarize=fixed", f"paths.data_dir={data_dir}",
                          f"paths.output_dir={sweep / '0'}"]))
    (v,) = evaluate_sweep(sweep, torch.device("cpu"), probe_images=200, rows=4, iw_samples=16)
    m = v.metrics
    assert v.name == "none-siren-bce-sum-variational" and set(LIKELIHOOD) <= set(m)
    assert m["nelbo"] == pytest.approx(m["nelbo_recon"] + m["nelbo_kl"])
    assert m["nelbo_bpd"] == pytest.approx(m["nelbo"] / (64 * math.log(2)))
    assert m["iw_nelbo"] <= m["nelbo"] and m["iw_bpd"] <= m["nelbo_bpd"]
    ckpt = torch.load(v.run_dir / "checkpoint.pt", weights_only=True)
    model = build_model(OmegaConf.create(ckpt["config"]), channels=1)
    model.load_state_dict(ckpt["model"])
    codes = model.eval().prior_sample(16, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    np.testing.assert_array_equal(v.grids["samples"], image_grid(model.render(codes, 8), 4))

    reports = tmp_path / "reports"
    comp = write_report([v], reports)
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics[v.name]["iw_nelbo"]["mean"] == pytest.approx(m["iw_nelbo"])
    (row,) = csv.DictReader(open(reports / "variants.csv"))
    assert float(row["nelbo_mean"]) == pytest.approx(m["nelbo"])
    page = (reports / "index.html").read_text()
    assert "<h2>Likelihood</h2>" in page and f"<td>{v.name}</td><td>fixed</td>" in page
    log_wandb(comp, reports, group_default="sweep")
    runs = [read_run(d) for d in (reports / "wandb").glob("offline-run-*")]
    (ev,) = [r for r in runs if r["run"]["job_type"] == "eval"]
    assert ev["summary"]["test/nelbo/mean"] == pytest.approx(m["nelbo"])
    (summary,) = [r for r in runs if r["run"]["job_type"] == "summary"]
    files = next((reports / "wandb").glob("offline-run-*" + summary["run"]["id"])) / "files"
    table = json.loads((files / summary["history"][0]["variants/path"]).read_text())
    assert "iw_nelbo/mean" in table["columns"]


@pytest.mark.parametrize("key,value,says", [
    ("dataset.name", "${oc.env:GON_PROBE_SECRET}", "holds interpolations (dataset.name)"),
    ("train.batch_size", 0, "train.batch_size=0"),
])
def test_a_crafted_checkpoint_config_is_refused(tiny_sweep: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, key: str,
                                                value: object, says: str) -> None:
    """A checkpoint's config is read as data (issue 22, item 3): an ${oc.env:...} in it would
    put this machine's environment into metrics.json; an invalid value is refused too. One
    line, exit 1, no report."""
    monkeypatch.setenv("GON_PROBE_SECRET", "leaked-value")
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep / "0", sweep / "0")
    ckpt = load_checkpoint(sweep / "0" / "checkpoint.pt")
    cfg = OmegaConf.create(ckpt["config"])
    OmegaConf.update(cfg, key, value)
    ckpt["config"] = OmegaConf.to_container(cfg)
    save_checkpoint(sweep / "0" / "checkpoint.pt", ckpt)
    with pytest.raises(CheckpointError, match=re.escape(says)):
        evaluate_sweep(sweep, torch.device("cpu"), probe_images=50, rows=2)
    assert main([str(sweep), str(tmp_path / "r"), "--no-wandb", "--probe-images", "50"]) == 1
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_report_files_are_replaced_not_rewritten(variants: list, tmp_path: Path) -> None:
    """Each report file is written beside and renamed into place (issue 22): a second report
    gives every file a new inode, so a reader (or a kill mid-write) never sees half a file."""
    write_report(variants, tmp_path)
    names = ("metrics.json", "variants.csv", "val_curves.csv", "index.html", "runs.csv",
             "effects.json", "headline.json")
    first = {n: (tmp_path / n).stat().st_ino for n in names}
    keep = [(tmp_path / n).open() for n in names]  # hold the old inodes so none is reused
    try:
        write_report(variants, tmp_path)
        assert {n: (tmp_path / n).stat().st_ino for n in names}.items().isdisjoint(
            first.items())
        assert json.loads(keep[0].read())  # the old metrics.json is still whole
    finally:
        for f in keep:
            f.close()


def test_an_unfinished_extension_is_not_scored(tiny_sweep: Path, tmp_path: Path) -> None:
    """A run extended to more steps and killed midway: its checkpoint is ahead of metrics.json
    and short of max_steps. gon.evaluate scores only the runs whose two agree at max_steps."""
    sweep = tmp_path / "sweep"
    for k in ("0", "1"):
        shutil.copytree(tiny_sweep / k, sweep / k)
    ckpt = load_checkpoint(sweep / "1" / "checkpoint.pt")
    ckpt["config"]["train"]["max_steps"], ckpt["step"] = 20, 16  # as the killed extension left
    save_checkpoint(sweep / "1" / "checkpoint.pt", ckpt)
    scored = evaluate_sweep(sweep, torch.device("cpu"), probe_images=50, rows=2)
    assert [v.run_dir.name for v in scored] == ["0"]
    shutil.rmtree(sweep / "0")
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        evaluate_sweep(sweep, torch.device("cpu"), probe_images=50, rows=2)


def test_a_run_flagged_diverged_is_left_out(tiny_sweep: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep)
    flagged = next(r for r in find_runs(sweep) if r.name == "2")  # siren seed 1 (of 2 seeds)
    done = json.loads((flagged / "metrics.json").read_text())
    (flagged / "metrics.json").write_text(json.dumps(done | {"diverged": True}))
    variants = evaluate_sweep(sweep, torch.device("cpu"), probe_images=64, rows=2)
    (v,) = [v for v in variants if v.run_dir == flagged]
    assert v.metrics["diverged"] == 1.0
    (summary,) = [s for s in compare(variants).variants if s.name == v.name]
    assert summary.diverged == 1 and summary.stats["psnr"]["n"] == 1 and len(summary.runs) == 2
    assert summary.stats["psnr"]["mean"] == next(r for r in variants if r.name == v.name
                                                 and r is not v).metrics["psnr"]
