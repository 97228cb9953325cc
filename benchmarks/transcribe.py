"""Transcribe a text log of benchmarks/step.py runs (``== step.py ...`` blocks, as gpu.sh and the
H200 measurement file write them) into a results JSON, so no figure is copied by hand.

    $ python benchmarks/transcribe.py ../shared/measurements/h200-2026-12-04.txt \\
          --out benchmarks/results/h200-2026-12-04.json --title "Training step on one H200"

Each block gives one row: config, mode, matmul precision, ms/step and peak GPU memory of each
side, the ratio (seed time / ours: > 1, ours faster), the largest loss gap and the block's wall
time (with compilation). The log's first line (a ``#`` comment) becomes the setup note.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

HEAD = re.compile(r"^config=(\S+) .* mode=(\S+) path=\S+ matmul_precision=(\S+) device=(\S+)")
SIDE = re.compile(r"^(ours|seed):\s+[\d.]+ images/s \(\s*([\d.]+) ms/step\)"
                  r".*?(?:cuda peak ([\d.]+) GiB)?$")
GAP = re.compile(r"^max \|loss_ours - loss_seed\| over (\d+) steps: (\S+)")
RATIO = re.compile(r"^ratio: ([\d.]+)")
WALL = re.compile(r"^\s*\((\d+) s(?: wall| with compilation)?\)")


def parse(text: str) -> list[dict]:
    """One row per ``== step.py`` block that got as far as a ratio."""
    rows, row = [], None
    for line in text.splitlines():
        if line.startswith("== "):
            row = {"command": line[3:].strip()}
            rows.append(row)
        elif row is None:
            continue
        elif m := HEAD.match(line):
            row.update(config=m[1], mode=m[2], matmul_precision=m[3], device=m[4])
        elif m := SIDE.match(line):
            row[f"{m[1]}_ms_per_step"] = float(m[2])
            if m[3] is not None:
                row[f"{m[1]}_peak_gib"] = float(m[3])
        elif m := GAP.match(line):
            row["steps"], row["max_loss_gap"] = int(m[1]), float(m[2])
        elif m := RATIO.match(line):
            row["ratio"] = float(m[1])
        elif m := WALL.match(line):
            row["wall_s"] = int(m[1])
    return [r for r in rows if "ratio" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    text = args.log.read_text()
    first = text.splitlines()[0] if text else ""
    rows = parse(text)
    if not rows:
        raise SystemExit(f"{args.log}: no benchmarks/step.py block with a ratio")
    data = {"title": args.title or args.out.stem,
            "command": f"python benchmarks/transcribe.py {args.log.name} --out {args.out}",
            "note": first.lstrip("# ").strip() + ". ratio: seed ms / ours ms (> 1: ours faster).",
            "rows": [{k: r.get(k, "") for k in (
                "config", "mode", "matmul_precision", "ours_ms_per_step", "seed_ms_per_step",
                "ratio", "ours_peak_gib", "seed_peak_gib", "max_loss_gap", "steps", "wall_s")}
                for r in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}: {len(rows)} rows")


if __name__ == "__main__":
    main()
