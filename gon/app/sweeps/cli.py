"""`python -m gon.sweep <sweep dir>` (`gon-sweep`): print the summary of a sweep's study again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gon.app.reliability import secrets
from gon.app.sweeps.checks import N_TRIALS
from gon.app.sweeps.record import RECORD, read_record
from gon.app.sweeps.summary import SUMMARY, format_summary, summarize
from gon.app.train.callbacks import validation_answer


def main(argv: list[str] | None = None) -> int:
    """`python -m gon.sweep SWEEP_DIR [--storage URL]` (or `gon-sweep`): print and rewrite the
    summary of a sweep dir's study."""
    parser = argparse.ArgumentParser(
        prog="gon-sweep", description="Summarise the Optuna study of a gon sweep dir.")
    parser.add_argument("sweep_dir", type=Path, help="the sweep dir (hydra.sweep.dir)")
    parser.add_argument("storage", nargs="?", default=None,
                        help="the study's storage URL (default: $GON_STORAGE_URL, else the one "
                             "recorded in study.json; a password here is visible in ps)")
    args = parser.parse_args(argv)
    if args.storage and secrets.has_password(args.storage):
        print(f"warning: {secrets.literal_password_warning('the storage argument')}",
              file=sys.stderr)
    args.storage = secrets.storage_from_env(args.storage)
    sweep_dir = args.sweep_dir
    if (record := read_record(sweep_dir)) is None:
        print(f"{sweep_dir / RECORD} not found: not a gon sweep dir", file=sys.stderr)
        return 1
    storage = args.storage or record.storage
    if args.storage is None and storage and "***" in storage:  # record_study masked it
        print(f"{sweep_dir / RECORD} keeps the storage URL without its password ({storage}); "
              f"export {secrets.STORAGE_ENV}=<the full URL> (or set PGPASSWORD) and run again",
              file=sys.stderr)
        return 1
    study = record.load(storage)
    old = json.loads((sweep_dir / SUMMARY).read_text()) if (sweep_dir / SUMMARY).exists() else {}
    n_trials = study.user_attrs.get(N_TRIALS) or old.get("n_trials", len(study.trials))
    print(format_summary(summarize(study, sweep_dir, n_trials, storage)))
    if answer := validation_answer(sweep_dir, top=None):  # every variant's mean over seeds
        print(answer)
    return 0


def cli() -> None:
    """Console script `gon-sweep`."""
    sys.exit(main())
