"""Is a sweep finished? gon.evaluate asks before it scores one, so that a partial sweep (a
killed sweeper, failed trials, a deleted run dir) never looks like a finished comparison.

Usage:
    status = sweep_status(Path("outputs/sweep"))   # None: no study recorded (not a gon sweep)
    if not status.complete:
        print(refusal(status, reports_dir))        # which trials, and how to resume
    fields = report_fields(status)                 # {"complete": False, "failed_trials": ...}

A sweep is complete when its study has finished trials for its whole budget (n_trials), none
failed (or all were retried), none is running or waiting, and every finished trial's run dir
holds its checkpoint.pt and metrics.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gon.app.sweeps import checks as chk
from gon.app.sweeps import record as rec
from gon.app.sweeps import summary as summ
from gon.app.sweeps import trials as st

log = logging.getLogger(__name__)


@dataclass
class SweepStatus:
    """What a sweep dir's study holds, trial by trial (rows: number, params, dir, error)."""

    sweep_dir: Path
    study_name: str
    n_trials: int
    finished: list[dict[str, Any]] = field(default_factory=list)  # complete, run dir present
    failed: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)  # complete, run dir gone
    unfinished: list[dict[str, Any]] = field(default_factory=list)  # running or waiting
    pruned: list[dict[str, Any]] = field(default_factory=list)  # stopped by the pruner: done
    command: str | None = None  # the command that resumes the sweep (study.json)
    source: str = "study"  # "study", or "summary.json" when the study could not be opened

    @property
    def not_started(self) -> int:
        return max(0, self.n_trials - len(self.finished) - len(self.missing) - len(self.failed)
                   - len(self.unfinished) - len(self.pruned))

    @property
    def complete(self) -> bool:
        return not (self.failed or self.missing or self.unfinished or self.not_started)


def _params(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in row.get("params", {}).items())


def _add(status: SweepStatus, row: dict[str, Any], fate: st.Fate) -> None:
    """File a trial's row under its fate; an interrupted or retried trial's copy stands for it,
    and a pruned one is done (gon-evaluate leaves it out)."""
    if fate is st.Fate.FINISHED:
        ok = all((Path(row["dir"]) / f).exists() for f in ("checkpoint.pt", "metrics.json"))
        (status.finished if ok else status.missing).append(row)
    elif fate is st.Fate.FAILED:
        status.failed.append(row)
    elif fate in (st.Fate.RUNNING, st.Fate.WAITING):
        status.unfinished.append(row)
    elif fate is st.Fate.PRUNED:  # stopped by the pruner: done
        status.pruned.append(row)


def _from_summary(record: rec.StudyRecord) -> SweepStatus | None:
    path = record.sweep_dir / summ.SUMMARY
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    status = SweepStatus(record.sweep_dir, record.study_name, int(summary["n_trials"]),
                         command=record.command, source=str(path))
    failed = {f["number"] for f in summary.get("failures", [])}
    for row in summary.get("trials", []):
        _add(status, row, st.Fate(row["fate"]) if "fate" in row else  # older summaries:
             st.Fate.FAILED if row["number"] in failed else  # an unlisted failure was retried
             st.Fate.INTERRUPTED if row["state"] == "FAIL" else st.Fate(row["state"]))
    return status


def sweep_status(sweep_dir: Path, storage: str | None = None) -> SweepStatus | None:
    """The sweep's status from its study (storage: the URL, when study.json keeps it masked),
    or from its summary.json if the study cannot be opened; None if the dir records no study
    (a plain multirun, or runs trained one by one)."""
    if (record := rec.read_record(sweep_dir)) is None:
        return None
    path, url = record.path, storage or record.storage
    if url and "***" in url:  # record_study masked the password
        status = _from_summary(record)
        if status is None:
            raise FileNotFoundError(
                f"{path} keeps the storage URL without its password ({url}) and there is no "
                f"{summ.SUMMARY}: export GON_STORAGE_URL=<the full URL> (or set PGPASSWORD)")
        log.info("checked the sweep against %s (set GON_STORAGE_URL to ask the study)",
                 status.source)
        return status
    study = record.load(storage)
    n_trials = study.user_attrs.get(chk.N_TRIALS)
    if n_trials is None and (sweep_dir / summ.SUMMARY).exists():
        n_trials = json.loads((sweep_dir / summ.SUMMARY).read_text()).get("n_trials")
    status = SweepStatus(sweep_dir, study.study_name, 0, command=record.command)
    for t, fate in st.classify(study):
        _add(status, summ.trial_row(t, fate, sweep_dir), fate)
    counted = len(status.finished) + len(status.missing) + len(status.failed) + len(
        status.pruned)
    status.n_trials = int(n_trials) if n_trials is not None else counted + len(status.unfinished)
    return status


def describe(status: SweepStatus) -> str:
    """One line: how far the sweep got."""
    parts = [f"{n} {what}" for n, what in (
        (len(status.failed), "failed"), (len(status.missing), "with its run dir missing"),
        (len(status.unfinished), "running or interrupted"), (status.not_started, "not started"))
        if n]
    return (f"{len(status.finished)} of {status.n_trials} trials finished"
            + (f" ({', '.join(parts)})" if parts else ""))


def refusal(status: SweepStatus, reports_dir: Path) -> str:
    """Why evaluate will not score this sweep, which trials, and the commands that go on."""
    lines = [f"sweep {status.sweep_dir} (study {status.study_name}) is incomplete: "
             f"{describe(status)}; not scoring it"]
    for row in status.failed:
        lines.append(f"  failed: trial {row['number']} ({_params(row)}): "
                     f"{row.get('error', 'no error recorded')}")
    for row in status.missing:
        lines.append(f"  missing: trial {row['number']} ({_params(row)}): {row['dir']} has no "
                     "checkpoint.pt and metrics.json")
    for row in status.unfinished:
        lines.append(f"  not finished: trial {row['number']} ({_params(row)}), {row['state']}")
    command = status.command or f"python -m gon.train ... hydra.sweep.dir={status.sweep_dir}"
    retry = " hydra.sweeper.retry_failed=true" if status.failed or status.missing else ""
    lines.append(f"resume it: {command}{retry}")
    if retry:
        lines.append("  (retry_failed=true re-runs the failed trials, and the finished ones whose"
                     " run dir is gone, each in its own run dir)")
    lines.append(f"or report what is there, marked partial: python -m gon.evaluate "
                 f"{status.sweep_dir} {reports_dir} --partial")
    return "\n".join(lines)


def report_fields(status: SweepStatus | None) -> dict[str, Any]:
    """What a partial report adds to metrics.json (and W&B): {} for a complete sweep."""
    if status is None or status.complete:
        return {}
    def rows(items: list[dict[str, Any]], with_error: bool) -> list[dict[str, Any]]:
        return [{"trial": r["number"], "params": r.get("params", {}), "dir": r["dir"],
                 **({"error": r.get("error", "")} if with_error else {})} for r in items]

    return {"complete": False, "trials": {"finished": len(status.finished),
                                          "budget": status.n_trials,
                                          "not_started": status.not_started},
            "failed_trials": rows(status.failed, True),
            "missing_trials": rows(status.missing, False),
            "unfinished_trials": rows(status.unfinished, False)}
