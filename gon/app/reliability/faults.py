"""One clear line for every fault a user can cause or meet: the CLIs' last word.

A fault is an error of the setting, not of the code: a bad value, a full disk, a read-only
dir, a corrupt file, too little memory, a busy run dir, Ctrl-C. Each gets one line saying what
happened and what to do; anything else (a bug) keeps its traceback.

Usage:
    run_cli(main, expected=(ConfigError,))   # exit 0/1; Ctrl-C: 130 (SIGTERM: 143), one line
    msg = describe(exc, expected)            # the line, or None for an unexpected error
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from gon.app.reliability.lifecycle import bind_to_launcher

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted; rerun the same command to resume"
SAFE = ("nothing already saved is lost (checkpoints, metrics and datasets are written to a "
        "temporary file, then renamed into place)")


class Fault(RuntimeError):
    """A fault already described in one line (e.g. a job's disk-full error, for its sweeper)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM's cancel or time limit, `kill`, a dying `dvc repro`), handled as Ctrl-C."""


def one_line(text: object, limit: int = 600) -> str:
    """`text` (an exception, a message) on one line, whitespace runs as one space, cut at
    `limit` characters: the project's one way to put an error in a log line or a record."""
    return " ".join(str(text).split())[:limit]


def _mro_names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


def _memory(e: BaseException) -> str | None:
    text = str(e)
    if "OutOfMemoryError" in _mro_names(e) or "out of memory" in text.lower() or \
            "can't allocate memory" in text:
        first = one_line(text.splitlines()[0] if text else type(e).__name__, 200)
        return (f"out of memory ({first}): use a smaller model (model.hidden_dim, "
                "model.num_layers, model.latent_dim), a smaller train.batch_size or eval sizes, "
                "or fewer trials at once (hydra.launcher.n_jobs)")
    return None


def _os_error(e: OSError) -> str | None:
    where = f" {e.filename}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"disk full ({os.strerror(e.errno)}) writing{where}: {SAFE}; free some space "
                "and rerun the same command to resume")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write{where} ({os.strerror(e.errno)}): the run dir (hydra.run.dir, "
                "hydra.sweep.dir), paths.data_dir and the reports dir must be writable, also "
                "for a finished run (its logs and .hydra/ are written again); copy them to a "
                "writable place or choose another dir")
    return None


def _database(e: BaseException) -> str | None:
    names = _mro_names(e)
    if "DatabaseError" in names and ("not a database" in str(e) or "malformed" in str(e)):
        return (f"the study database is corrupt or not an Optuna database ({one_line(e, 200)}):"
                " move it away (the next run starts a new study) or choose another "
                "hydra.sweep.dir / hydra.sweeper.storage")
    if "NoSuchModuleError" in names or (isinstance(e, ModuleNotFoundError) and
                                        str(getattr(e, "name", "")).startswith("psycopg")):
        return (f"{one_line(e, 200)}: a postgresql:// storage needs the psycopg driver: "
                "pip install 'gon[postgres]' (postgresql:// means psycopg 3 in SQLAlchemy 2)")
    if "OperationalError" in names:
        return (f"cannot reach the study's database ({one_line(e, 300)}): check "
                "hydra.sweeper.storage and that the server is up, then rerun the same command")
    return None


def _hydra(e: BaseException) -> str | None:
    names = _mro_names(e)
    if "MissingConfigException" in names and getattr(e, "options", None):
        head = str(e).strip().splitlines()[0]
        return f"{head}; valid options: {', '.join(sorted(e.options))}"
    if "CompactHydraException" in names or "OverrideParseException" in names:
        return one_line(e)
    return None


def _worker(e: BaseException) -> str | None:
    if {"TerminatedWorkerError", "BrokenProcessPool"} & _mro_names(e):
        return ("a trial's worker process died (killed, or out of memory): its trials were "
                "re-queued; rerun the same command to resume")
    return None


def describe(e: BaseException, expected: tuple[type[BaseException], ...] = ()) -> str | None:
    """The one-line message for a fault, or None for an unexpected error (a bug)."""
    if isinstance(e, (Fault, *expected)):
        return one_line(e, 2000)
    for cause in (e, e.__cause__, e.__context__):
        if cause is None:
            continue
        if isinstance(cause, OSError) and (msg := _os_error(cause)):
            return msg
        for check in (_memory, _database, _hydra, _worker):
            if msg := check(cause):
                return msg
    return None


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def run_cli(main: Callable[[], Any], expected: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """Run a CLI's main: its int return (or 0) is the exit status; a fault ends it with one
    line (exit 1), Ctrl-C with "interrupted; rerun the same command to resume" (exit 130;
    SIGTERM: 143). HYDRA_FULL_ERROR=1 in the environment keeps full tracebacks."""
    full = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing a trimmed traceback
    signal.signal(signal.SIGTERM, _terminate)
    bind_to_launcher()
    try:
        code = main()
    except KeyboardInterrupt as e:
        sys.stderr.write(f"\n{INTERRUPTED}\n")
        sys.exit(143 if isinstance(e, Terminated) else 130)
    except Exception as e:
        msg = describe(e, expected)
        if msg is None or full:
            raise
        sys.stderr.write(f"error: {msg}\n")
        sys.exit(1)
    finally:
        if not full:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    sys.exit(code if isinstance(code, int) else 0)
