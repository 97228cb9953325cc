"""Atomic checkpoints as plain dicts, plus the RNG state needed for bit-exact resume.

Usage:
    save_checkpoint(run_dir / "checkpoint.pt", {"model": model.state_dict(), "rng": rng_state()})
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")  # None if absent
    set_rng_state(ckpt["rng"])
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gon.app.reliability.faults import one_line


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read."""


# what save_checkpoint's callers always write (gon.app.train); "history" and "wandb_id" may lack
REQUIRED = ("model", "optimizer", "step", "rng", "best", "last_train", "config")


def umasked(mode: int) -> int:
    """`mode` less the process's umask, as open() would make a new file (mkstemp and mkdtemp
    ignore the umask: their 0600 and 0700 are fixed)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _atomic_write(path: Path, write: Any) -> None:
    # write to a temporary file in the same folder, then rename: a crash never leaves half a file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umasked(0o666))  # as a plain open() would: shared unless the umask says
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


CHECKSUM = "sha256"  # the checkpoint's digest of everything else in it


def _digest(state: Any, h: Any = None) -> str:
    """A sha256 over a state's keys, values and tensor bytes, in a fixed order (independent of
    how torch lays out the file)."""
    h = hashlib.sha256() if h is None else h
    if isinstance(state, dict):
        for k in sorted(state, key=str):
            h.update(f"k{k!r}".encode())
            _digest(state[k], h)
    elif isinstance(state, (list, tuple)):
        h.update(f"l{len(state)}".encode())
        for v in state:
            _digest(v, h)
    elif isinstance(state, torch.Tensor):
        t = state.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(f"v{state!r}".encode())
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save `state` (tensors, numbers, strings, lists, dicts only) atomically, with its digest
    (load_checkpoint refuses a file whose contents no longer match it)."""
    state = {**state, CHECKSUM: _digest({k: v for k, v in state.items() if k != CHECKSUM})}
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Load a checkpoint saved by `save_checkpoint` on the CPU; None if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(e))
        if found:  # a reference to code, which torch's safe loader does not allow
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects, not only tensors and plain "
                f"values (a reference to {found[1]}). gon never writes such a file, and loading"
                " it could run code, so it stays unloaded; delete it to start over, or pick "
                "another hydra.run.dir") from None
        raise CheckpointError(  # not a pickle at all: a damaged file
            f"cannot read checkpoint {path} (not a checkpoint file, or damaged); delete it to "
            "start over, or pick another hydra.run.dir") from None
    except Exception as e:
        msg = one_line(f"{type(e).__name__}: {e}")
        raise CheckpointError(
            f"cannot read checkpoint {path} ({msg}); delete it to start over, or pick another"
            " hydra.run.dir"
        ) from None
    missing = [k for k in REQUIRED if k not in state] if isinstance(state, dict) else REQUIRED
    if missing:
        raise CheckpointError(
            f"{path} is not a gon checkpoint (no {', '.join(repr(k) for k in missing)} "
            "entry); delete it to start over, or pick another hydra.run.dir")
    stored = state.pop(CHECKSUM, None)  # None: written before gon kept checksums
    if stored is not None and stored != _digest(state):
        raise CheckpointError(
            f"{path} does not match its own sha256 (damaged on disk or in a copy); restore it "
            "(e.g. `dvc checkout`), or delete it to start over")
    return state


def save_json(path: str | Path, data: dict[str, Any], **dumps: Any) -> None:
    """Write `data` as indented JSON atomically (`dumps`: more json.dumps options)."""
    text = json.dumps(data, **{"indent": 2, "sort_keys": True, **dumps}) + "\n"
    save_text(path, text)


def save_csv(path: str | Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write `rows` as a CSV of `columns` (None as empty) atomically."""
    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in columns} for r in rows)
    save_text(path, f.getvalue())


def save_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) atomically: a reader sees the old file or the new one, never half."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states, as weights_only-safe values."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states returned by `rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
