"""gon.app.workspace offline: the W&B workspace object `gon-workspace` would save (nothing is
sent): the sweep's group, runs grouped by variant, bars and curves over the logged keys, images.

$ python -m pytest tests/test_workspace.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wandb_reader import read_run

from gon.app.evaluate.page import GRIDS
from gon.app.evaluate.workspace import build_workspace, main
from gon.app.sweeps.record import RECORD
from gon.app.variants import VARIANT_AXES


def _panels(view: dict) -> list[dict]:
    sections = view["spec"]["section"]["panel_bank_config"]["sections"]
    return [p for s in sections for p in s["panels"]]


def test_workspace_groups_the_sweeps_runs_by_variant(tiny_sweep: Path) -> None:
    view = build_workspace("me", "gon", "study-1")._to_model().model_dump(mode="json")
    assert view["entity"] == "me" and view["project"] == "gon"
    (runset,) = view["spec"]["section"]["run_sets"]
    text = json.dumps(runset)
    assert '"group"' in text and '"study-1"' in text  # filtered to the sweep's group
    assert runset["grouping"] == [{"section": "config", "name": "variant.value"}]
    panels = _panels(view)
    configs = json.dumps([p["config"] for p in panels])
    for key in ("val/psnr", "train/loss_outer", "test/psnr/mean", *GRIDS, "variants"):
        assert f'"{key}"' in configs, key
    assert '"stderr"' in configs  # error bars / bands over the seeds
    assert '"effects"' in configs  # the summary run's effects table
    # a section per axis, its panels grouped by the axis's level (a nested config key)
    sections = view["spec"]["section"]["panel_bank_config"]["sections"]
    names = [s["name"] for s in sections]
    assert all(f"By {a}" in names for a in VARIANT_AXES)
    block = json.dumps(sections[names.index("By block")]["panels"])
    assert "block.value.name" in block and '"val/psnr"' in block
    # the keys it charts are the ones a train run logs
    (run_dir,) = (tiny_sweep / "0" / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    logged = {k for row in run["history"] for k in row}
    assert {"val/psnr", "train/loss_outer", "recon/_type", "samples/_type"} <= logged
    assert run["config"]["variant"] == "none-siren-bce-sum" and run["run"]["group"] == "study-1"


def test_cli_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / RECORD).write_text(json.dumps({"study_name": "gon-variants-digits-1",
                                               "storage": None}))
    assert main([str(tmp_path), "--entity", "me", "--dry-run"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["display_name"] == "gon gon-variants-digits-1"
    assert main([str(tmp_path / "nope"), "--entity", "me", "--dry-run"]) == 1
    assert "not a gon sweep dir" in capsys.readouterr().err
