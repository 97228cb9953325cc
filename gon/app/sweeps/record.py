"""A sweep dir's record of its study (study.json): the study's name and storage, written on the
first run and read by every later command; the storage URL's password is masked
(gon.app.reliability.secrets).
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from gon.app.reliability.checkpoint import save_json
from gon.app.reliability.secrets import mask_argv, mask_url
from gon.app.sweeps.checks import SweepError
from gon.app.sweeps.studies import journal_path, open_storage

RECORD = "study.json"  # in the sweep dir: the study's name and storage, written on the first run


DEFAULT_DB = "optuna.db"  # the sqlite file in the sweep dir when no storage URL is given


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


@dataclass(frozen=True)
class StudyRecord:
    """What study.json says: the study's name, its storage URL (password masked; None: sqlite in
    the sweep dir) and the command that resumes the sweep."""

    sweep_dir: Path
    study_name: str
    storage: str | None
    command: str | None = None

    @property
    def path(self) -> Path:
        return self.sweep_dir / RECORD

    @property
    def masked(self) -> bool:
        """Whether the recorded URL lost its password (record_study masks it)."""
        return bool(self.storage) and "***" in str(self.storage)

    def load(self, storage: str | None = None) -> optuna.Study:
        """The recorded study, in `storage` (a URL) or the recorded storage; a SweepError if
        that is masked and no URL was given."""
        if storage is None and self.masked:
            raise SweepError(f"{self.path} keeps the storage URL without its password "
                             f"({self.storage}); pass the full URL")
        url = resolve_storage(self.sweep_dir, storage or self.storage)
        return optuna.load_study(study_name=self.study_name, storage=open_storage(url))


def read_record(sweep_dir: Path) -> StudyRecord | None:
    """The sweep dir's study.json, or None if it has none (a first run, a plain multirun): the
    one reader of it, e.g. `study = read_record(sweep_dir).load(storage)`."""
    path = sweep_dir / RECORD
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return StudyRecord(sweep_dir, record["study_name"], record.get("storage"),
                       record.get("command"))


def require_record(sweep_dir: Path) -> StudyRecord:
    """The sweep dir's study.json; a FileNotFoundError (one line) if it has none."""
    if (record := read_record(sweep_dir)) is None:
        raise FileNotFoundError(f"{sweep_dir / RECORD} not found: not a gon sweep dir")
    return record


def recorded_study(sweep_dir: Path, study_name: str | None, storage: str | None) -> str | None:
    """The study name recorded in the sweep dir (None on a first run); refuses a re-run that
    names another study or storage, which would silently start over."""
    if (record := read_record(sweep_dir)) is None:
        return None
    asked = mask_url(storage) if storage else None
    if (study_name and study_name != record.study_name) or asked != record.storage:
        raise SweepError(
            f"{sweep_dir} holds study {record.study_name!r} in "
            f"{record.storage or 'its ' + DEFAULT_DB}; this run asks for "
            f"{study_name or record.study_name!r} in {asked or 'its ' + DEFAULT_DB}. "
            "Resume with the same settings, or use another hydra.sweep.dir"
        )
    return record.study_name


def record_study(sweep_dir: Path, study_name: str, storage: str | None,
                 command: str | None = None) -> None:
    """Write the sweep dir's record (after the study was created, so a bad URL leaves none):
    the study's name and storage, and the command that resumes it (passwords masked)."""
    record = {"study_name": study_name, "storage": mask_url(storage) if storage else None}
    if command:
        record["command"] = command
    save_json(sweep_dir / RECORD, record)  # atomic: readers never see half a record


def resume_command(argv: list[str]) -> str:
    """`python -m gon.train <argv>` as a shell line, passwords in URLs masked."""
    args = [a for a in mask_argv(argv) if a not in ("--multirun", "-m")]
    if not any(a.split("=", 1)[0] == "hparams_search" for a in args):
        args.insert(0, "-m")
    return shlex.join(["python", "-m", "gon.train", *args])
