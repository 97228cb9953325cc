"""Optuna sweeps over GON variants: study name and storage, resume checks, summary.

The sweeper plugin (hydra_plugins/gon_sweeper, `hydra/sweeper=gon_optuna`) calls these; they
are plain functions of a sweep dir or a study (per-trial bookkeeping: gon.app.sweep_trials).

Usage:
    python -m gon.train hparams_search=variants hydra.sweep.dir=outputs/sweeps/v1  # run or resume
    python -m gon.sweep outputs/sweeps/v1          # print the summary of that sweep's study again
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gon.app.checkpoint import save_json
from gon.app.metrics import HIGHER_IS_BETTER
from gon.app.studies import journal_path, open_storage
from gon.app.sweep_trials import DIR, ERROR, INTERRUPTED, failures, superseded

log = logging.getLogger(__name__)

RECORD = "study.json"  # in the sweep dir: the study's name and storage, written on the first run
DEFAULT_DB = "optuna.db"  # the sqlite file in the sweep dir when no storage URL is given
SUMMARY = "summary.json"
FINGERPRINT = "sweep:fingerprint"  # study user attribute: what its trials were run with
N_TRIALS = "sweep:n_trials"  # study user attribute: the budget of its latest run


class SweepError(RuntimeError):
    """The sweep cannot start or go on (mismatched resume, bad settings, too many failures)."""


def mask_url(url: str) -> str:
    """A storage URL with its password hidden, safe to log and to write to disk."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (journal file etc.): keep it as it is
        return url


def default_study_name(search: str, dataset: str, storage: Any) -> str:
    """gon-<search>-<dataset>-<YYYYmmdd-HHMMSS>, with -2, -3, ... if the storage has it already
    (`storage`: a URL or an Optuna storage)."""
    base = f"gon-{search}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    taken = set(optuna.study.get_all_study_names(storage))
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}-{i}"
    return name


def resolve_storage(sweep_dir: Path, storage: str | None) -> str:
    """The storage URL: `storage`, or sqlite in the sweep dir (its folder created)."""
    if storage:
        if storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if (path := journal_path(storage)) is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return storage
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(sweep_dir / DEFAULT_DB).resolve()}"


def recorded_study(sweep_dir: Path, study_name: str | None, storage: str | None) -> str | None:
    """The study name recorded in the sweep dir (None on a first run); refuses a re-run that
    names another study or storage, which would silently start over."""
    path = sweep_dir / RECORD
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    asked = mask_url(storage) if storage else None
    if (study_name and study_name != record["study_name"]) or asked != record["storage"]:
        raise SweepError(
            f"{sweep_dir} holds study {record['study_name']!r} in "
            f"{record['storage'] or 'its ' + DEFAULT_DB}; this run asks for "
            f"{study_name or record['study_name']!r} in {asked or 'its ' + DEFAULT_DB}. "
            "Resume with the same settings, or use another hydra.sweep.dir"
        )
    return record["study_name"]


def record_study(sweep_dir: Path, study_name: str, storage: str | None,
                 command: str | None = None) -> None:
    """Write the sweep dir's record (after the study was created, so a bad URL leaves none):
    the study's name and storage, and the command that resumes it (passwords masked)."""
    record = {"study_name": study_name, "storage": mask_url(storage) if storage else None}
    if command:
        record["command"] = command
    save_json(sweep_dir / RECORD, record)  # atomic: readers never see half a record


def resume_command(argv: list[str]) -> str:
    """`python -m gon.train <argv>` as a shell line, storage passwords masked."""
    args = [f"{a.split('=', 1)[0]}={mask_url(a.split('=', 1)[1])}"
            if a.split("=", 1)[0].endswith("hydra.sweeper.storage") else a
            for a in argv if a not in ("--multirun", "-m")]
    if not any(a.split("=", 1)[0] == "hparams_search" for a in args):
        args.insert(0, "-m")
    return shlex.join(["python", "-m", "gon.train", *args])


def check_direction(metric: str | None, directions: list[str]) -> None:
    """Refuse a direction that contradicts the objective (e.g. minimising val/psnr)."""
    if metric in HIGHER_IS_BETTER and len(directions) == 1:
        want = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"
        if directions[0] != want:
            raise SweepError(
                f"hydra.sweeper.direction={directions[0]} but optimized_metric={metric} "
                f"should be {want}d; set hydra.sweeper.direction={want}"
            )


def _change(key: str, old: Any, new: Any) -> str:
    if isinstance(old, list) and isinstance(new, list):
        return f"{key}: " + " ".join([f"-{x}" for x in old if x not in new]
                                     + [f"+{x}" for x in new if x not in old])
    if isinstance(old, dict) and isinstance(new, dict):
        return "; ".join(f"{key}.{k}: {old.get(k)} -> {new.get(k)}" for k in sorted({*old, *new})
                         if old.get(k) != new.get(k))
    return f"{key}: {old} -> {new}"


def check_fingerprint(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
    """Store what defines the study's trials on its first run; refuse to resume it with
    different overrides, search space or direction (the trials would not be comparable)."""
    old = study.user_attrs.get(FINGERPRINT)
    if old is None:
        study.set_user_attr(FINGERPRINT, fingerprint)
        return
    if old != fingerprint:
        diff = [_change(k, old.get(k), fingerprint.get(k)) for k in sorted(fingerprint)
                if old.get(k) != fingerprint.get(k)]
        raise SweepError(
            f"study {study.study_name!r} was started with other settings ({'; '.join(diff)}); "
            "resume it with the same command, or use another hydra.sweep.dir"
        )


def check_launcher_gpus(launcher: dict[str, Any], device: str, gpus: int) -> str | None:
    """Refuse a submitit launcher that would hide the GPUs from jobs that want one (their
    device=auto would silently train on the CPU); a warning for a partial view, else None."""
    target = str(launcher.get("_target_", ""))
    if "submitit" not in target or device == "cpu":
        return None
    asked = launcher.get("gpus_per_node") or launcher.get("gpus_per_task") or (
        "gpu" in str(launcher.get("gres") or ""))
    if target.endswith("SlurmLauncher") and not asked:
        raise SweepError(
            f"hydra/launcher=submitit_slurm without hydra.launcher.gpus_per_node (or "
            f"gpus_per_task, gres) gives each job no GPU, so device={device} would not get "
            "one: add hydra.launcher.gpus_per_node=1, or device=cpu to train on CPUs")
    if target.endswith("LocalLauncher") and gpus:
        if not asked:
            raise SweepError(
                "hydra/launcher=submitit_local sets CUDA_VISIBLE_DEVICES='' for its jobs unless "
                f"hydra.launcher.gpus_per_node is set, so device={device} would train on the "
                f"CPU: add hydra.launcher.gpus_per_node={gpus} (each job then sees every GPU "
                "and takes trial number modulo GPUs), or device=cpu")
        if int(launcher.get("gpus_per_node") or 0) < gpus:
            return (f"submitit_local with gpus_per_node={launcher.get('gpus_per_node')} shows "
                    f"each job only the first of {gpus} GPUs (hydra#2757): the trials share them")
    return None


def _overrides(t: FrozenTrial) -> list[str]:
    """The trial's overrides: swept params, then the sweep's fixed ones (stored as user attrs)."""
    fixed = {k: v for k, v in t.user_attrs.items() if not k.startswith("sweep:")}
    return [f"{k}={v}" for k, v in {**fixed, **t.params}.items()]


def _trial_row(t: FrozenTrial, sweep_dir: Path) -> dict[str, Any]:
    subdir = t.user_attrs.get(DIR, str(t.number))
    row = {"number": t.number, "state": t.state.name, "params": t.params,
           "dir": str(sweep_dir / subdir)}
    if t.values is not None:
        row["value" if len(t.values) == 1 else "values"] = t.values[0] if len(
            t.values) == 1 else t.values
    if ERROR in t.user_attrs:
        row["error"] = t.user_attrs[ERROR]
    return row


def summarize(study: optuna.Study, sweep_dir: Path, n_trials: int,
              storage: str | None = None) -> dict[str, Any]:
    """The sweep's summary: best trial (value, params, overrides, config file), failures,
    and one row per trial."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    retried = superseded(study)
    for t in trials:
        key = "INTERRUPTED" if t.user_attrs.get(INTERRUPTED) else \
            "RETRIED" if t.number in retried else t.state.name
        states[key] = states.get(key, 0) + 1
    summary: dict[str, Any] = {
        "study_name": study.study_name, "storage": mask_url(storage) if storage else None,
        "directions": [d.name.lower() for d in study.directions],
        "objective": study.user_attrs.get(FINGERPRINT, {}).get("objective"),
        "n_trials": n_trials, "states": states, "best": None,
        "failures": [_trial_row(t, sweep_dir) for t in failures(study)],
        "trials": [_trial_row(t, sweep_dir) for t in trials],
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
        rows = []
        for t in best:
            row = _trial_row(t, sweep_dir)
            row["overrides"] = _overrides(t)
            row["config"] = str(Path(row["dir"]) / ".hydra" / "config.yaml")
            rows.append(row)
        summary["best"] = rows[0] if len(rows) == 1 else rows
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short text block: counts, best trial, failures."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["states"].items()))
    lines = [f"== sweep {summary['study_name']}: {states or 'no trials'} "
             f"(budget {summary['n_trials']}) =="]
    best = summary["best"]
    for b in best if isinstance(best, list) else [best] if best else []:
        value = b.get("value", b.get("values"))
        value = f"{value:.6g}" if isinstance(value, float) else value
        lines.append(f"best: trial {b['number']} {summary['objective'] or 'value'}={value} "
                     f"{' '.join(f'{k}={v}' for k, v in b['params'].items())}")
        lines.append(f"      dir {b['dir']}")
    if not best:
        lines.append("best: none (no trial completed)")
    for f in summary["failures"]:
        lines.append(f"failed: trial {f['number']} {f['params']}: {f.get('error', '?')}")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], sweep_dir: Path) -> Path:
    path = sweep_dir / SUMMARY
    path.write_text(json.dumps(summary, indent=2, default=str, allow_nan=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m gon.sweep SWEEP_DIR [--storage URL]` (or `gon-sweep`): print and rewrite the
    summary of a sweep dir's study."""
    parser = argparse.ArgumentParser(
        prog="gon-sweep", description="Summarise the Optuna study of a gon sweep dir.")
    parser.add_argument("sweep_dir", type=Path, help="the sweep dir (hydra.sweep.dir)")
    parser.add_argument("storage", nargs="?", default=None,
                        help="the study's storage URL (default: the one recorded in study.json;"
                             " pass it when the recorded one is masked)")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir
    if not (sweep_dir / RECORD).exists():
        print(f"{sweep_dir / RECORD} not found: not a gon sweep dir", file=sys.stderr)
        return 1
    record = json.loads((sweep_dir / RECORD).read_text())
    storage = args.storage or record["storage"]
    if args.storage is None and storage and "***" in storage:  # record_study masked it
        print(f"{sweep_dir / RECORD} keeps the storage URL without its password ({storage}); "
              "pass the full URL: python -m gon.sweep SWEEP_DIR STORAGE_URL", file=sys.stderr)
        return 1
    study = optuna.load_study(study_name=record["study_name"],
                              storage=open_storage(resolve_storage(sweep_dir, storage)))
    old = json.loads((sweep_dir / SUMMARY).read_text()) if (sweep_dir / SUMMARY).exists() else {}
    n_trials = study.user_attrs.get(N_TRIALS) or old.get("n_trials", len(study.trials))
    print(format_summary(summarize(study, sweep_dir, n_trials, storage)))
    return 0


def cli() -> None:
    """Console script `gon-sweep`."""
    sys.exit(main())
