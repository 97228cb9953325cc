"""Read a W&B offline run (`run-<id>.wandb`) back without network, for tests.

Usage:
    run = read_run(next(Path(out_dir, "wandb").glob("offline-run-*")))
    run["config"]["block"], run["history"][-1]["val/psnr"], run["run"]["group"]

The file is a LevelDB-style log: a 7-byte header (b":W&B", 0xBEE1, version), then 32 KiB blocks
of records, each `<crc u32><length u16><type u8>` + payload (type 1 full, 2 first, 3 middle,
4 last); a payload is a `wandb_internal_pb2.Record`. This is a private format of wandb 0.31
(pinned in pyproject.toml): a failing test here is the signal that it changed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc, length, type


def iter_records(path: str | Path) -> Iterator[pb.Record]:
    """Every protobuf Record in a .wandb file, reassembling records split across blocks."""
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack_from("<4sHB", data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file")
    pos, buf = 7, b""
    while pos + HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER.size:  # block trailer: skip to the next block
            pos += left
            continue
        _crc, n, kind = HEADER.unpack_from(data, pos)
        if n == 0 and kind == 0:  # zero padding
            pos += left
            continue
        pos += HEADER.size
        chunk, pos = data[pos : pos + n], pos + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (2, 3):
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        yield record


def _items(items: Any) -> dict[str, Any]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """{"run": {id, group, job_type, tags, name}, "config", "history": [rows], "summary",
    "exit_code"} of one offline-run-* folder. Config keys are nested as logged."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    out: dict[str, Any] = {"run": {}, "config": {}, "history": [], "summary": {}}
    out["exit_code"] = None
    for r in iter_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            out["history"].append(_items(r.history.item))
        elif kind == "summary":
            out["summary"].update(_items(r.summary.update))
        elif kind == "config":
            out["config"].update(_items(r.config.update))
        elif kind == "run":
            run = r.run
            out["run"] = {"id": run.run_id, "group": run.run_group, "job_type": run.job_type,
                          "tags": list(run.tags), "name": run.display_name}
            out["config"].update(_items(run.config.update))
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out
