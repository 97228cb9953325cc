"""`python -m gon.claims` (the DVC `claims` stage): train the claims' trials, write the table.

    python -m gon.claims                                  # digits, 3 seeds, 100 steps, 2 jobs
    python -m gon.claims --dataset mnist --steps 1000     # once data/prepared/mnist exists

Every trial of gon.app.claims.TRIALS is trained for each seed, in --jobs worker processes of
one torch thread each (start-up and evaluation are not timed). The GON trials run first: their
mean training time for --steps steps is the equal-time budget of all the others. Writes
<out>/claims.json ({"setup": ..., "entries": [...]}, see gon.app.claims) and, unless
--no-wandb, an offline W&B run (job_type=claims) with the table under <out>/claims_wandb."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gon.app.claims.run import log_wandb, run_claims
from gon.app.claims.table import CLAIMS_FILE
from gon.app.config import ConfigError, compose, overrides_from
from gon.app.reliability.checkpoint import save_json

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gon-claims", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    p.add_argument("--overrides", default="", help="Hydra overrides for every trial")
    p.add_argument("--overrides-from", metavar="FILE:KEY",
                   help="overrides in a params file's value, e.g. params.yaml:claims.overrides")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--no-wandb", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    if args.steps < 1 or args.jobs < 1 or len(args.seeds) < 1:
        p.error("--steps and --jobs must be >= 1 and --seeds non-empty")
    try:
        overrides = overrides_from(args.overrides_from) if args.overrides_from else []
    except ConfigError as e:
        p.error(str(e))
    claims = run_claims(args.dataset, args.steps, args.seeds, args.jobs,
                        [*args.overrides.split(), *overrides], args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / CLAIMS_FILE, claims)
    for e in claims["entries"]:
        log.info("%-45s %-14s %s", e["id"], e["verdict"], e["ci95"])
    wandb_dir = args.out / "claims_wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)  # a DVC out, even without the W&B run
    if not args.no_wandb:
        log_wandb(claims, wandb_dir, project=compose([]).logger.wandb.project)
    return 0


def cli() -> None:
    sys.exit(main())
