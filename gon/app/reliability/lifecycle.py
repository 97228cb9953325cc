"""Who may run what: one process per run dir (a lock a killed process cannot leave stuck),
short cross-process critical sections (file locks), and processes that die with their parent.

Usage:
    with hold_run_dir(run_dir):          # RunDirBusy (naming the holder's pid) if another has it
        ...train...
    with file_lock(path):                # blocks until no other process holds `path`
        ...create or join the study...
    bind_to_sweeper()                    # in a job: die if the sweeper that started it dies
    bind_to_launcher()                   # in a DVC stage's command: stop if `dvc repro` dies

The locks are fcntl.flock locks: the kernel drops them when their holder exits, however it
exits (SIGKILL included), so nothing is ever left locked. On NFS, Linux emulates flock with
byte-range locks, which the server arbitrates between machines.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_LOCK = ".gon-run.lock"  # in each run dir: {"pid", "host", "since"} of the process training it
SWEEPER_ENV = "GON_SWEEPER"  # "<host>:<pid>" of the sweeper, inherited by the jobs it starts
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class RunDirBusy(RuntimeError):
    """Another process is training this run dir."""


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {since})"


def _open_lock(path: Path) -> int:
    """Open (or create) a lock file, never through a symlink: a link planted in a shared run or
    sweep dir would make gon create or truncate the file it points to."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"{path} is a symbolic link, which gon does not follow for "
                          "a lock file; remove it and rerun") from None
        raise


@contextmanager
def hold_run_dir(run_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the run dir's lock while the block runs; waits up to `wait_s` for another holder
    to finish, then raises RunDirBusy naming it."""
    path = run_dir / RUN_LOCK
    fd = _open_lock(path)
    try:
        deadline, told = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _describe(_holder(path))
                if time.monotonic() >= deadline:
                    raise RunDirBusy(
                        f"{run_dir} is being trained by {holder}; wait for it to finish (or "
                        "stop it), or use another hydra.run.dir") from None
                if not told:
                    log.info("waiting for %s, which is training %s", holder, run_dir)
                    told = True
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock (the file stays: deleting it would race a new holder)


def run_dir_holder(run_dir: Path) -> int | None:
    """The pid of the process holding the run dir's lock on this machine, else None."""
    path = run_dir / RUN_LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        return _holder(path).get("pid")
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """An exclusive lock on `path` for a short critical section. The file exists only while
    it is held: the holder removes it before letting go, and a waiter that got the lock of a
    removed file tries again with the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        fd = _open_lock(path)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{path} stayed locked for {timeout_s:.0f} s") from None
                    time.sleep(0.05)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break  # the lock of the file that is still there
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits (prctl PR_SET_PDEATHSIG);
    False where that is not available (other systems)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        log.debug("prctl(PR_SET_PDEATHSIG) failed: %s", e)
        return False
    return True


def mark_sweeper() -> None:
    """Record this process as the sweeper, for the job processes it starts (bind_to_sweeper)."""
    os.environ[SWEEPER_ENV] = f"{socket.gethostname()}:{os.getpid()}"


def bind_to_sweeper() -> None:
    """In a job that a sweeper on this machine started as its child (a joblib worker, a
    submitit_local job): be killed when the sweeper dies, so no orphan keeps training a trial
    that the next run re-queues. Jobs elsewhere (SLURM) and in-process jobs are left alone."""
    host, _, pid = os.environ.get(SWEEPER_ENV, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return
    if os.getppid() == int(pid):
        die_with_parent(signal.SIGKILL)
        if os.getppid() != int(pid):  # the sweeper died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)


def _ppid(pid: int) -> int | None:
    """The parent pid of process `pid` (Linux /proc), None if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _launched_by_dvc(pid: int, stage: str) -> bool:
    """Whether process `pid` was started for DVC stage `stage` (its environment says so)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"DVC_STAGE={stage}".encode() in env


def _launcher_chain(stage: str) -> list[int]:
    """[parent, ..., DVC]: this process's ancestors up to the DVC process that ran `stage`.
    DVC runs a stage's cmd with `$SHELL -c`; a shell that does not exec its command (dash, the
    usual /bin/sh) sits between DVC and us."""
    chain = [os.getppid()]
    while _launched_by_dvc(chain[-1], stage) and len(chain) < 8:
        parent = _ppid(chain[-1])
        if parent is None or parent <= 1:
            return []
        chain.append(parent)
    return chain


def _watch_chain(chain: list[int], period_s: float) -> None:
    """SIGTERM to this process once any link of `chain` breaks (an ancestor died, so its
    child was re-parented)."""
    links = list(zip([os.getpid(), *chain[:-1]], chain, strict=True))
    while all(_ppid(child) == parent for child, parent in links):
        time.sleep(period_s)
    log.warning("the DVC process that started this command (pid %d) is gone: stopping",
                chain[-1])
    os.kill(os.getpid(), signal.SIGTERM)


def bind_to_launcher(period_s: float = 0.5) -> None:
    """In a command that DVC runs (`dvc repro`): stop (SIGTERM, which the command handles as
    an interruption) if DVC dies, so a killed `dvc repro` leaves no sweeper writing into the
    outputs that the next `dvc repro` deletes. With DVC as the parent that is a parent-death
    signal; with a shell between (DVC runs `$SHELL -c <cmd>`, and dash does not exec), a
    daemon thread checks the chain up to DVC every `period_s`. Commands started from a shell
    are left alone (`nohup` must keep working)."""
    stage = os.environ.get("DVC_STAGE")
    if stage is None or not sys.platform.startswith("linux"):
        return
    chain = _launcher_chain(stage)
    if len(chain) == 1:
        die_with_parent(signal.SIGTERM)
    elif chain:
        threading.Thread(target=_watch_chain, args=(chain, period_s), daemon=True,
                         name="gon-launcher-watch").start()
