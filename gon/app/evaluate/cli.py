"""Score every trained variant of a sweep on the held-out split and write the comparison report.

Usage:
    python -m gon.evaluate outputs/sweep reports            # the DVC `evaluate` stage
    python -m gon.evaluate outputs/sweep reports --probe-images 10000 --rows 8 --no-wandb
    python -m gon.evaluate outputs/sweep reports --partial  # score an unfinished sweep anyway
    GON_STORAGE_URL=postgresql://... python -m gon.evaluate ...  # a study in a server

An incomplete sweep (trials failed, unfinished or not started, run dirs missing: see
gon.app.sweeps.status) is refused with the list of those trials and the command that resumes it;
--partial scores what is there and marks the report partial ("complete": false in metrics.json,
a complete=false column in its CSVs, a banner in index.html, the W&B summary run), listing the
failed trials with their errors; each file is written once.

For each run dir under <sweep_dir> (a checkpoint.pt holding the resolved config): MSE, PSNR,
SSIM and BCE of the test-split reconstructions, the accuracy of a linear probe on the latents
(where labels exist), for a variational model the negative ELBO and the importance-weighted
bound (nats per image and bits per dimension), the validation curve recorded in training, and,
for the first run of each variant, four PNG grids: reconstructions, samples (from a Gaussian
fitted to the train latents, or from the prior),
slerp interpolations and a 4x super-resolution render. gon.app.compare groups the runs by
variant (the seeds are replicates) and ranks them; gon.app.report writes <reports_dir>/
{metrics.json, variants.csv, val_curves.csv, curves/, images/, index.html} and the W&B runs;
encoding_curve.json: test PSNR when encoding with 1 .. 2k latent steps (k as trained)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from gon.app.config import resolve_device
from gon.app.data.datasets import DatasetError
from gon.app.evaluate.effects import answer
from gon.app.evaluate.report import log_wandb, wandb_target, write_report
from gon.app.evaluate.runs import evaluate_sweep, write_encoding_curve
from gon.app.reliability import secrets
from gon.app.reliability.checkpoint import CheckpointError
from gon.app.reliability.faults import run_cli
from gon.app.sweeps import status as completeness
from gon.app.tracking import gather_runs

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Parse argv, evaluate the sweep, write the report; 0, or 1 if there is nothing to score."""
    parser = argparse.ArgumentParser(prog="gon-evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="Hydra sweep dir of the trained variants")
    parser.add_argument("reports_dir", type=Path, help="where the report is written")
    parser.add_argument("--probe-images", type=int, default=5000,
                        help="train images whose latents fit the probe and the Gaussian")
    parser.add_argument("--rows", type=int, default=8, help="images per grid row")
    parser.add_argument("--iw-samples", type=int, default=64,
                        help="samples of the importance-weighted bound (variational models)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<index>")
    parser.add_argument("--no-wandb", action="store_true", help="skip the W&B eval/summary runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of torch, BLAS and OpenMP (default 1: these small "
                             "models and the probe run fastest on one; 0: the libraries' own)")
    parser.add_argument("--partial", action="store_true",
                        help="score an incomplete sweep too; the report says it is partial")
    parser.add_argument("--storage", default=None,
                        help="the study's storage URL, if study.json keeps it masked (default: "
                             f"${secrets.STORAGE_ENV}; a password here is visible in ps)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    if args.storage and secrets.has_password(args.storage):
        log.warning("%s", secrets.literal_password_warning("--storage"))
    args.storage = secrets.storage_from_env(args.storage)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # so autograd's cuBLAS calls find this GPU's context
    try:
        status = completeness.sweep_status(args.sweep_dir, args.storage)
        if status is not None and not status.complete and not args.partial:
            log.error("%s", completeness.refusal(status, args.reports_dir))
            return 2
        with threadpool_limits(args.threads or None):
            variants = evaluate_sweep(args.sweep_dir, device, args.probe_images, args.rows,
                                      args.iw_samples)
    except (FileNotFoundError, CheckpointError, DatasetError) as e:
        log.error("%s", e)
        return 1
    partial = completeness.report_fields(status)
    target = wandb_target(variants, args.sweep_dir.name) if variants else None
    comp = write_report(variants, args.reports_dir, partial,
                        status.study_name if status is not None else None, target)
    write_encoding_curve(variants, args.reports_dir)
    print(answer(comp, comp.effects), flush=True)
    log.info("best variant: %s (%d seeds); report: %s%s", comp.best.name, len(comp.best.runs),
             args.reports_dir / "index.html",
             f" (PARTIAL: {completeness.describe(status)})" if partial else "")
    wandb_dir = args.reports_dir / "wandb"
    wandb_dir.mkdir(exist_ok=True)  # a DVC out, even without W&B runs
    if not args.no_wandb:
        log_wandb(comp, args.reports_dir, group_default=args.sweep_dir.name, extra=partial)
        # one W&B dir for the whole sweep: its train runs (<sweep>/wandb, or <sweep>/<k>/wandb
        # of older sweeps) and the claims run next to the report, linked in
        n = gather_runs([args.sweep_dir / "wandb", *sorted(args.sweep_dir.glob("*/wandb")),
                         args.reports_dir / "claims_wandb" / "wandb"], wandb_dir)
        log.info("W&B: %d train and claims runs linked into %s; view them all with: "
                 "wandb leet %s", n, wandb_dir, wandb_dir)
    return 0


def cli() -> None:
    """Console script `gon-evaluate`: one line for every fault, exit 130 on Ctrl-C."""
    run_cli(main)
