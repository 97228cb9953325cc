"""Trial bookkeeping for resumable sweeps: who runs a trial, is it still alive, re-queueing
interrupted ones, what each trial stands for (classify: the one reading of a trial's state)
and what counts against the budget. Stored as trial user attributes, so it works with any
Optuna storage and across machines.

Usage:
    for trial, fate in classify(study): ...   # Fate.FINISHED, .FAILED, .INTERRUPTED, ...
    subdir = claim(trial)                     # this process runs it, in <sweep dir>/<subdir>
    with heartbeat([trial], every_s=30): ...  # while it runs
    recover_stale(study, stale_after_s=300)   # FAIL + re-queue trials a dead sweeper left RUNNING
    finished, running = budget(study)
    retry_failed(study)                       # on resume with hydra.sweeper.retry_failed=true
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

log = logging.getLogger(__name__)

# trial user attributes owned here (":" cannot occur in a Hydra override key)
OWNER, BEAT, DIR = "sweep:owner", "sweep:heartbeat", "sweep:dir"
ERROR, INTERRUPTED = "sweep:error", "sweep:interrupted"
RETRY_OF = "retry_of"  # system attribute of a failed trial's re-queued copy: the failed number
HOST = socket.gethostname()
MAX_RETRIES = 3  # an interrupted trial is re-run at most this often, then counts as failed


class Fate(StrEnum):
    """What a trial of a sweep stands for (the values are summary.json's `states` keys)."""

    FINISHED = "COMPLETE"
    FAILED = "FAIL"  # its job failed; counts against the budget
    INTERRUPTED = "INTERRUPTED"  # its sweeper died or stopped; its re-queued copy stands in
    SUPERSEDED = "RETRIED"  # failed (or lost its run dir), and retry_failed queued a copy
    RUNNING = "RUNNING"
    WAITING = "WAITING"  # queued: a grid point, a re-queued or retried copy
    PRUNED = "PRUNED"


def classify(study: optuna.Study) -> list[tuple[FrozenTrial, Fate]]:
    """Every trial of the study with its fate: the one place that reads a trial's state and
    the sweep's attributes (interrupted, retried) together."""
    trials = study.get_trials(deepcopy=False)
    retried = {int(t.system_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.system_attrs}
    return [(t, Fate.INTERRUPTED if t.user_attrs.get(INTERRUPTED)
             else Fate.SUPERSEDED if t.number in retried else Fate(t.state.name))
            for t in trials]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale(trial: FrozenTrial, stale_after_s: float, now: float | None = None) -> bool:
    """A RUNNING trial nobody will finish: its sweeper process on this host is gone, or its
    heartbeat (written by the sweeper while the trial runs) is older than stale_after_s."""
    now = time.time() if now is None else now
    host, _, pid = str(trial.user_attrs.get(OWNER, "")).rpartition(":")
    if host == HOST and pid.isdigit() and not _alive(int(pid)):
        return True
    start = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - float(trial.user_attrs.get(BEAT, start)) > stale_after_s


def claim(trial: Trial, subdir: str | None = None) -> str:
    """Mark `trial` as this process's and give it a run subdir (a retried trial keeps its own,
    so its job resumes from the checkpoint there); the subdir."""
    subdir = subdir or trial.user_attrs.get(DIR) or str(trial.number)
    trial.set_user_attr(OWNER, f"{HOST}:{os.getpid()}")
    trial.set_user_attr(BEAT, time.time())
    trial.set_user_attr(DIR, subdir)
    return subdir


def requeue(study: optuna.Study, trial: FrozenTrial, count: bool = True) -> None:
    """Mark a RUNNING trial interrupted (FAIL) and queue a copy with the same parameters and
    run subdir; the copy is what study.ask() returns next. A trial interrupted more than
    MAX_RETRIES times (`count`: Ctrl-C does not count) is failed for good instead."""
    history = list(trial.system_attrs.get("retry_history", []))
    history += [trial.number] if count else []
    storage, give_up = study._storage, len(history) > MAX_RETRIES
    try:
        if give_up:
            msg = f"interrupted {len(history)} times (trials {history}); not retried"
            storage.set_trial_user_attr(trial._trial_id, ERROR, msg)
        else:
            storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # finished meanwhile, or another sweeper recovered it first
    if give_up:
        return
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in (OWNER, BEAT)}
    system = {k: v for k, v in trial.system_attrs.items() if k != "fixed_params"}
    system.update(failed_trial=system.get("failed_trial", trial.number), retry_history=history)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=attrs, system_attrs=system))


def recover_stale(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Fail and re-queue every stale RUNNING trial (see is_stale); their numbers."""
    stale = [t for t, f in classify(study) if f is Fate.RUNNING and is_stale(t, stale_after_s)]
    for t in stale:
        requeue(study, t)
    if stale:
        log.warning("re-queued %d interrupted trial(s): %s", len(stale), [t.number for t in stale])
    return [t.number for t in stale]


def budget(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials counted against n_trials: an interrupted trial does not count
    (its re-queued copy does), nor does a retried failed one; a failed or pruned one does."""
    fates = [f for _, f in classify(study)]
    return (sum(f in (Fate.FINISHED, Fate.FAILED, Fate.PRUNED) for f in fates),
            fates.count(Fate.RUNNING))


def failures(study: optuna.Study) -> list[FrozenTrial]:
    """Trials whose job failed (not the interrupted ones, nor those retried since)."""
    return [t for t, f in classify(study) if f is Fate.FAILED]


def retry_failed(study: optuna.Study, sweep_dir: Path | None = None) -> list[int]:
    """Queue a copy of every failed trial (same parameters and run dir, so its job resumes from
    its checkpoint): `hydra.sweeper.retry_failed=true`, for failures that were transient (a
    network outage, a full disk). With `sweep_dir`, also of every finished trial whose run dir
    lost its metrics.json (deleted). The re-queued trials' numbers."""
    fates = classify(study)
    failed = [t for t, f in fates if f is Fate.FAILED] + [
        t for t, f in fates if f is Fate.FINISHED and sweep_dir is not None
        and not (sweep_dir / str(t.user_attrs.get(DIR, t.number)) / "metrics.json").exists()]
    for t in failed:
        attrs = {k: v for k, v in t.user_attrs.items() if k not in (OWNER, BEAT, ERROR)}
        system = {k: v for k, v in t.system_attrs.items() if k != "fixed_params"}
        system[RETRY_OF] = t.number
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs=attrs, system_attrs=system))
    if failed:
        log.info("retrying %d trial(s): %s", len(failed), [t.number for t in failed])
    return [t.number for t in failed]


@contextmanager
def heartbeat(trials: Iterable[Trial], every_s: float) -> Iterator[None]:
    """Refresh the trials' heartbeat every `every_s` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            for t in trials:
                try:
                    t.set_user_attr(BEAT, time.time())
                except Exception as e:  # a flaky database must not kill the sweep
                    log.debug("heartbeat of trial %d failed: %s", t.number, e)

    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
