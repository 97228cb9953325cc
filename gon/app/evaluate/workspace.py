"""A saved W&B workspace for one sweep's group: runs grouped by variant, PSNR bars with error
bars over the seeds, the validation and training curves, a section per axis (runs grouped by
its level), the image panels, the summary tables (variants, effects, curves).

Usage (after `wandb sync`, with network and an API key; needs the [workspace] extra):
    python -m gon.workspace outputs/sweep --entity ME            # saves it, prints its URL
    python -m gon.workspace outputs/sweep --entity ME --dry-run  # prints the view, saves nothing

The group is the sweep's study name (its study.json), as the runs were logged. W&B's bars and
bands are mean +- standard error over a variant's runs (W&B has no t interval); the summary
run's `variants` table holds the 95 % t intervals of reports/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

from gon.app.evaluate.page import GRIDS
from gon.app.sweeps.record import require_record
from gon.app.variants import VARIANT_AXES

TRAIN_IMAGES = ("recon", "samples")  # what each train run logs at its evaluations


def axis_section(axis: str) -> ws.Section:
    """The runs grouped by one axis's level (config <axis>.name): its marginal means over the
    other axes, mean +- s.e.; the effects with t intervals are the summary run's `effects`."""
    stats = {"groupby": wr.Config(f"{axis}.name"), "groupby_aggfunc": "mean",
             "groupby_rangefunc": "stderr"}
    return ws.Section(name=f"By {axis}", is_open=False, panels=[
        wr.BarPlot(title=f"test PSNR by {axis} (eval runs: variant means)",
                   metrics=["test/psnr/mean"], orientation="h", **stats),
        wr.BarPlot(title=f"final validation PSNR by {axis} (train runs)", metrics=["val/psnr"],
                   orientation="h", **stats),
        wr.LinePlot(title=f"validation PSNR by step and {axis}", x="Step", y=["val/psnr"],
                    **stats),
    ])


def build_workspace(entity: str, project: str, group: str, name: str | None = None
                    ) -> ws.Workspace:
    """The workspace (not saved): the group's runs, grouped by config.variant."""
    by_variant = wr.Config("variant")
    stats = {"groupby": by_variant, "groupby_aggfunc": "mean", "groupby_rangefunc": "stderr"}
    comparison = ws.Section(name="Comparison (mean +- s.e. over seeds)", is_open=True, panels=[
        wr.BarPlot(title="test PSNR by variant", metrics=["test/psnr/mean"], orientation="h"),
        wr.BarPlot(title="final validation PSNR by variant (train runs)",
                   metrics=["val/psnr"], orientation="h", **stats),
        wr.LinePlot(title="validation PSNR by step", x="Step", y=["val/psnr"], **stats),
        wr.LinePlot(title="training loss by step", x="Step", y=["train/loss_outer"], **stats),
    ])
    images = ws.Section(name="Images", is_open=True, panels=[
        wr.MediaBrowser(title="eval grids (first seed of each variant)", media_keys=list(GRIDS),
                        num_columns=4),
        wr.MediaBrowser(title="train grids by step", media_keys=list(TRAIN_IMAGES),
                        num_columns=2),
    ])
    summary = ws.Section(name="Summary table", is_open=True, panels=[
        wr.WeavePanelSummaryTable(table_name="variants"),
        wr.WeavePanelSummaryTable(table_name="effects"),
        wr.WeavePanelSummaryTable(table_name="val_curves"),
    ])
    by_axis = [axis_section(axis) for axis in VARIANT_AXES]
    runset = ws.RunsetSettings(filters=ws.And(ws.Metric("Group") == group),
                               groupby=[ws.Config("variant")])
    return ws.Workspace(entity=entity, project=project, name=name or f"gon {group}",
                        sections=[comparison, *by_axis, images, summary],
                        runset_settings=runset)


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of a sweep's runs: its study name (FileNotFoundError: no study.json)."""
    return require_record(sweep_dir).study_name


def main(argv: list[str] | None = None) -> int:
    """`gon-workspace SWEEP_DIR --entity E [--project gon] [--name N] [--dry-run]`."""
    parser = argparse.ArgumentParser(prog="gon-workspace", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path,
                        help="the sweep dir (its study.json names the group)")
    parser.add_argument("--entity", required=True, help="your W&B entity (user or team)")
    parser.add_argument("--project", default="gon", help="the W&B project (default: gon)")
    parser.add_argument("--name", default=None, help="the workspace's name (default: gon <group>)")
    parser.add_argument("--dry-run", action="store_true", help="print the view; save nothing")
    args = parser.parse_args(argv)
    try:
        group = sweep_group(args.sweep_dir)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    workspace = build_workspace(args.entity, args.project, group, args.name)
    if args.dry_run:
        print(json.dumps(workspace._to_model().model_dump(mode="json"), indent=1))
        return 0
    print(workspace.save().url)
    return 0


def cli() -> None:
    """Console script `gon-workspace`."""
    sys.exit(main())
