"""Which GPU a sweep's trial trains on: a free worker slot, ``trials_per_gpu`` slots per GPU.

Trial n used to take cuda:(n mod #GPUs). The trials running at once are not always consecutive
(a resume, a retried trial, a second sweeper on the same sweep dir), and two of them then shared
a GPU while another idled. Now each trial holds a slot, a lock file
``<sweep dir>/gpu_slots/<host>[-<CUDA_VISIBLE_DEVICES>]/gpu<g>-<j>.lock`` (an fcntl lock, which
the kernel drops when the trial ends, however it ends), on the GPU whose slots are least held;
when every slot is held it waits for one. Choosing happens under a short file lock, so two
trials that start at once take different slots.

Usage (the train job):
    with trial_device(device, pinned, sweep_dir, trials_per_gpu) as device:
        ...train on device...
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from gon.app.reliability.lifecycle import file_lock

log = logging.getLogger(__name__)

UNLIMITED = 32  # slots per GPU when trials_per_gpu is not set: spread evenly, no cap


def slot_dir(sweep_dir: Path) -> Path:
    """This machine's slots (and this set of visible GPUs': SLURM jobs on one node each see
    their own GPU as cuda:0)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(",", "_")
    host = socket.gethostname() + (f"-{visible}" if visible else "")
    return sweep_dir / "gpu_slots" / host


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock on `path`, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def _claim(slots: Path, gpus: int, per_gpu: int) -> tuple[int, int] | None:
    """(gpu, fd of its slot) on the GPU with the fewest held slots, or None if all are held.
    Called under the choosing lock."""
    free: dict[int, list[Path]] = {}
    for g in range(gpus):
        free[g] = []
        for j in range(per_gpu):
            path = slots / f"gpu{g}-{j}.lock"
            fd = _try_lock(path)
            if fd is not None:  # free: let go again, only the chosen one is kept
                os.close(fd)
                free[g].append(path)
    open_gpus = [g for g in range(gpus) if free[g]]
    if not open_gpus:
        return None
    gpu = max(open_gpus, key=lambda g: (len(free[g]), -g))  # fewest held, then lowest index
    fd = _try_lock(free[gpu][0])
    return None if fd is None else (gpu, fd)


@contextmanager
def gpu_slot(sweep_dir: Path, gpus: int, per_gpu: int | None,
             wait_s: float = 3600.0, poll_s: float = 1.0) -> Iterator[int]:
    """Hold a free slot while the block runs; yields its GPU index. Waits up to `wait_s` for
    a slot when all `gpus` x `per_gpu` are held (TimeoutError after)."""
    slots = slot_dir(sweep_dir)
    slots.mkdir(parents=True, exist_ok=True)
    deadline, told = time.monotonic() + wait_s, False
    while True:
        with file_lock(slots / "choose.lock"):
            got = _claim(slots, gpus, per_gpu or UNLIMITED)
        if got is not None:
            break
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no free GPU slot in {slots} for {wait_s:.0f} s ({gpus} GPU(s) "
                               f"x {per_gpu} slots, hydra.sweeper.trials_per_gpu)")
        if not told:
            log.info("all %d x %s GPU slots are held; waiting for one", gpus, per_gpu)
            told = True
        time.sleep(poll_s)
    gpu, fd = got
    try:
        yield gpu
    finally:
        os.close(fd)  # lets go of the slot


@contextmanager
def trial_device(device: torch.device, pinned: bool, sweep_dir: Path | None,
                 per_gpu: int | None, gpus: int | None = None) -> Iterator[torch.device]:
    """The device to train on: `device` itself, except for a sweep's trial on CUDA that named
    no GPU (device=auto or cuda), which gets the GPU of a free slot for the block's duration.
    `gpus`: the visible GPUs (default: torch's count)."""
    if sweep_dir is None or device.type != "cuda" or pinned:
        yield device
        return
    gpus = torch.cuda.device_count() if gpus is None else gpus
    with gpu_slot(sweep_dir, gpus, per_gpu) as gpu:
        log.info("GPU slot: cuda:%d (%s per GPU)", gpu, per_gpu or "no cap")
        yield torch.device("cuda", gpu)
