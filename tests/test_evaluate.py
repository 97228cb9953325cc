"""gon.app.evaluate and gon.app.report on tiny trained runs: metrics, latents, grids, the report
files, the offline HTML page, the CLI and the W&B eval/summary runs read back.

$ python -m pytest tests/test_evaluate.py -q
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config
from PIL import Image
from wandb_reader import read_run

from gon import make_grid
from gon.app.builders import build_model
from gon.app.evaluate import encode, evaluate_sweep, find_runs, main, variant_name
from gon.app.report import GRIDS, log_wandb, write_report
from gon.app.train import train

VARIANTS = {"0": ["block=siren", "latent_reduction=sum"],
            "1": ["block=modulated", "latent_reduction=mean", "loss=mse", "encoding=nerf"]}
WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Two tiny trained runs, as a sweep dir with trials 0 and 1 (W&B offline, own group)."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**WANDB_ENV, "WANDB_DIR": str(root)}.items():
            mp.setenv(key, value)
        mp.setenv("WANDB_RUN_GROUP", "study-1")
        mp.delenv("WANDB_API_KEY", raising=False)
        for job, overrides in VARIANTS.items():
            train(compose_config([*TINY, "logger=wandb", "train.max_steps=12",
                                  f"paths.data_dir={data_dir}",
                                  f"paths.output_dir={root / 'sweep' / job}", *overrides]))
    return root / "sweep"


@pytest.fixture(scope="module")
def variants(sweep: Path) -> list:
    return evaluate_sweep(sweep, torch.device("cpu"), probe_images=200, rows=4)


def test_find_runs_in_numeric_order(tmp_path: Path) -> None:
    for job in ("10", "2", "x"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "checkpoint.pt").touch()
        (tmp_path / job / "metrics.json").touch()
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "checkpoint.pt").touch()  # unfinished: no metrics.json
    assert [p.name for p in find_runs(tmp_path)] == ["2", "10", "x"]


def test_every_variant_scored(variants: list) -> None:
    assert [v.name for v in variants] == ["none-siren-bce-sum", "nerf-modulated-mse-mean"]
    for v in variants:
        m = v.metrics
        assert {"mse", "psnr", "ssim", "bce", "probe_acc", "steps", "params"} <= set(m)
        assert all(isinstance(x, int | float) and math.isfinite(x) for x in m.values())
        assert 0 < m["mse"] < 1 and 0 <= m["probe_acc"] <= 1 and m["steps"] == 12
        assert [r["step"] for r in v.curve] == [2, 4, 5, 6, 8, 10, 12]  # log and eval steps


def test_grids_are_images_not_blank(variants: list) -> None:
    for v in variants:
        assert set(v.grids) == set(GRIDS)
        for name, grid in v.grids.items():
            assert grid.dtype.name == "uint8" and grid.ndim == 3 and grid.shape[2] == 3, name
            assert grid.std() > 0 and (grid != 128).mean() > 0.3, f"{v.name}/{name} is blank"
        # super-resolution: 3 lines of 4 images, each 4x the native 8 px, with 2 px borders
        assert v.grids["superres"].shape[:2] == (3 * 34 + 2, 4 * 34 + 2)
        # the grids above also hold originals; these parts hold renders only
        for name, renders in [("samples", v.grids["samples"]),
                              ("superres 4x", v.grids["superres"][2 * 34 + 2 :])]:
            assert renders.std() > 0 and (renders != 128).mean() > 0.3, f"{v.name}/{name}"


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
    best = write_report(variants, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {v.name for v in variants} | {"best"}
    assert best == max(variants, key=lambda v: v.metrics["psnr"]).name
    assert metrics["best"] == metrics[best]
    rows = list(csv.DictReader(open(tmp_path / "variants.csv")))
    assert [r["variant"] for r in rows] == [v.name for v in variants]
    assert rows[1]["block"] == "modulated" and float(rows[1]["psnr"]) > 0
    for v in variants:
        curve = list(csv.DictReader(open(tmp_path / "curves" / f"{v.name}.csv")))
        assert len(curve) == 7 and all(math.isfinite(float(r["loss_outer"])) for r in curve)
        for grid in GRIDS:
            with Image.open(tmp_path / "images" / v.name / f"{grid}.png") as img:
                assert img.format == "PNG"
    assert not (tmp_path / "images" / "stale-variant").exists()


def test_index_html_is_offline_and_complete(variants: list, tmp_path: Path) -> None:
    best = write_report(variants, tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert "<script" not in page and "http" not in page  # nothing to fetch
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(variants) * len(GRIDS)
    assert all((tmp_path / s).is_file() for s in sources)  # relative paths that exist
    assert page.count("<tr") == len(variants) + 1 and f'class="best"><td><a href="#{best}"' in page
    assert page.count("<polyline") == len(variants)  # the training curves, inline SVG


def test_cli(sweep: Path, tmp_path: Path) -> None:
    assert main([str(sweep), str(tmp_path / "r"), "--no-wandb", "--probe-images", "100",
                 "--rows", "4", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()).keys() >= {"best"}
    assert not any((tmp_path / "r" / "wandb").iterdir())  # there (a DVC out), but empty
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "r2"), "--no-wandb"]) == 1


def test_wandb_eval_and_summary_runs(variants: list, wandb_offline: Path, tmp_path: Path):
    best = write_report(variants, tmp_path)
    log_wandb(variants, best, tmp_path, group_default="sweep")
    runs = [read_run(d) for d in sorted((tmp_path / "wandb").glob("offline-run-*"))]
    evals = {r["run"]["name"]: r for r in runs if r["run"]["job_type"] == "eval"}
    (summary,) = [r for r in runs if r["run"]["job_type"] == "summary"]
    assert set(evals) == {v.name for v in variants}
    assert {r["run"]["group"] for r in runs} == {"study-1"}  # the trials' group
    for v in variants:
        run = evals[v.name]
        assert run["exit_code"] == 0 and "block=" + v.config["block"]["name"] in run["run"]["tags"]
        assert run["summary"]["test/psnr"] == pytest.approx(v.metrics["psnr"])
        assert run["history"][0]["recon/_type"] == "image-file"
    row = summary["history"][0]
    assert row["variants/_type"] == "table-file" and row["variants/nrows"] == len(variants)
    table = json.loads((next((tmp_path / "wandb").glob("offline-run-*" + summary["run"]["id"]))
                        / "files" / row["variants/path"]).read_text())
    assert table["columns"][:2] == ["variant", "encoding"] and "psnr" in table["columns"]
    assert sorted(r[0] for r in table["data"]) == sorted(v.name for v in variants)
    assert summary["summary"]["best"] == best and summary["config"]["best"] == best
