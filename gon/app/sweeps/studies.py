"""Where a sweep's Optuna study lives, and the lock that makes creating, joining and drawing
trials from it atomic across sweepers.

Storage URLs (hydra.sweeper.storage):
    null                               sqlite:///<sweep dir>/optuna.db (one machine)
    sqlite:///path/optuna.db           any sqlite file (one machine: its locks break on NFS)
    journal:///shared/sweep.log        Optuna's JournalStorage with a file backend: a plain
                                       append-only log, safe on NFS (journal://rel/path too)
    postgresql://user:pw@host:port/db  PostgreSQL via psycopg 3 (pip install 'gon[postgres]');
                                       any SQLAlchemy URL Optuna takes works the same way

Usage:
    storage = open_storage(url)           # what optuna.create_study / load_study take
    with study_lock(url, sweep_dir): ...  # one sweeper at a time in here, for a short while

The lock: PostgreSQL's advisory lock (held by a session, so a killed sweeper's is dropped with
its connection), a flock on <db>.lock for sqlite, Optuna's NFS-safe symlink lock beside a
journal file, and a flock in the sweep dir for other databases. Within it a sweeper creates the
schema and the study (so simultaneous first starts do not race), reads or writes study.json,
and asks for its next trials (so two sweepers never draw more than the budget).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gon.app.reliability.lifecycle import file_lock
from gon.app.trial_link import JOURNAL, journal_path, open_storage  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

ADVISORY_KEY = zlib.crc32(b"gon-optuna-study")  # one lock per database, for every gon study
_engines: dict[str, Any] = {}  # URL -> SQLAlchemy engine for the advisory lock


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


@contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if url not in _engines:
        _engines[url] = create_engine(url.replace("postgres://", "postgresql://", 1),
                                      poolclass=NullPool)
    with _engines[url].connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            conn.commit()


@contextmanager
def study_lock(url: str, sweep_dir: Path) -> Iterator[None]:
    """Exclusive access to the study's storage for a short critical section (see above)."""
    if _is_postgres(url):
        with _advisory_lock(url):
            yield
        return
    if (path := journal_path(url)) is not None:
        from optuna.storages.journal import JournalFileSymlinkLock

        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileSymlinkLock(f"{path}.gon", grace_period=30)  # <log>.gon.lock
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        with file_lock(db.with_name(db.name + ".lock")):
            yield
        return
    with file_lock(sweep_dir / ".gon-study.lock"):
        yield
