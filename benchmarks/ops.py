"""The operators one training step launches, this library's and the seed's, counted with
``torch.profiler`` (what an eager GPU step pays: one dispatch, and on CUDA one launch, each).

    $ python benchmarks/ops.py                       # every config, eager, on the CPU
    $ python benchmarks/ops.py --config overhead --by-name --json benchmarks/results/ops-cpu.json

One step after warm-up, same weights and batch on both sides (as in benchmarks/step.py, whose
builders this reuses). An operator is an ``aten::`` call made by Python or by the autograd
engine, not one nested inside another aten call (``linear`` counts, its ``addmm`` does not);
each is put in a phase: ``forward`` (the step's own code, the graph recorded), ``backward`` (the
autograd engine: latents' gradients and the outer backward) or ``optimizer`` (Adam, the same on
both sides). ``kernels`` counts the innermost calls (no aten call below them), and on CUDA the
GPU kernels launched.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from step import CONFIGS, build_ours, build_seed, make_ours_step, seed_step, write_json
from torch.profiler import ProfilerActivity, profile

PHASES = ("forward", "backward", "optimizer")


def phase(event) -> str:
    """The phase of a profiler event, from its enclosing ranges."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("autograd::engine::evaluate_function"):
            return "backward"
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    return "forward"


def count(run, x: torch.Tensor, dev: torch.device, warmup: int = 3) -> dict:
    """Operator counts of one call ``run(x)`` after ``warmup`` calls."""
    for _ in range(warmup):
        run(x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    events = prof.events()
    aten = [e for e in events if e.name.startswith("aten::")]
    top = [e for e in aten if not (e.cpu_parent and e.cpu_parent.name.startswith("aten::"))]
    leaves = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    by_phase = Counter(phase(e) for e in top)
    names = {p: Counter(e.name[6:] for e in top if phase(e) == p) for p in PHASES}
    out = {"operators": len(top), "kernels_cpu": len(leaves), "aten_calls": len(aten),
           **{p: by_phase[p] for p in PHASES},
           "step": by_phase["forward"] + by_phase["backward"],
           "by_name": {p: dict(names[p].most_common()) for p in PHASES}}
    if dev.type == "cuda":
        cuda = torch.autograd.DeviceType.CUDA
        out["kernels_cuda"] = sum(1 for e in events if e.device_type == cuda)
    return out


def row(n: dict, most: int = 8) -> dict:
    """A flat row for the JSON: the counts, and each phase's most frequent operators."""
    flat = {k: v for k, v in n.items() if k != "by_name"}
    top = {f"top_{p}": ", ".join(f"{k} {v}" for k, v in list(n["by_name"][p].items())[:most])
           for p in ("forward", "backward")}
    return {**flat, "torch": torch.__version__, **top}


def config_counts(name: str, dev: torch.device) -> dict:
    """Both sides' counts for one config of benchmarks/step.py, eager."""
    c = CONFIGS[name]
    torch.manual_seed(0)
    x = torch.rand(c["batch"], c["size"], c["size"], c["channels"]).to(dev)
    from gon import make_grid

    coords = make_grid(c["size"], c["size"], device=dev)
    seed = build_seed(c).to(dev)
    ours = build_ours(c, seed).to(dev)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-4)
    opt_seed = torch.optim.Adam(seed.parameters(), lr=1e-4)
    seed_coords = coords.expand(c["batch"], -1, -1, -1)
    return {"ours": count(make_ours_step(ours, opt_ours, coords, "eager"), x, dev),
            "seed": count(lambda b: seed_step(seed, opt_seed, seed_coords, b), x, dev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--by-name", action="store_true", help="print each phase's operators")
    ap.add_argument("--json", type=Path, help="merge the counts into this JSON file")
    ap.add_argument("--label", default="", help="prefix of each config's key in --json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"{'config':10} {'side':5} {'operators':>9} {'forward':>8} {'backward':>8} "
          f"{'optimizer':>9} {'step':>5} {'kernels':>7}  (torch {torch.__version__}, {dev})")
    for name in args.config:
        counts = config_counts(name, dev)
        for side, n in counts.items():
            kernels = n.get("kernels_cuda", n["kernels_cpu"])
            print(f"{name:10} {side:5} {n['operators']:9d} {n['forward']:8d} {n['backward']:8d} "
                  f"{n['optimizer']:9d} {n['step']:5d} {kernels:7d}")
            if args.by_name:
                for p in PHASES:
                    print(f"    {p}: " + ", ".join(f"{k} {v}" for k, v in n["by_name"][p].items()))
        ours, seed = counts["ours"], counts["seed"]
        print(f"{name:10} ours/seed operators {ours['operators'] / seed['operators']:.2f}, "
              f"step without the optimizer {ours['step'] / seed['step']:.2f}")
        if args.json is not None:
            for side, n in counts.items():
                key = "/".join(filter(None, [args.label, name, side]))
                write_json(args.json, key, row(n), f"Operators of one eager step ({dev.type})")


if __name__ == "__main__":
    main()
