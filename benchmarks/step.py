"""Training-step throughput of this library against the seed package, side by side in one run.

    $ pip install --no-deps gon-pytorch==0.1.1     # the seed, for this benchmark only
    $ python benchmarks/step.py          # the seed's default config; last line: ratio: <ours/seed>
    $ python benchmarks/step.py --config digits --mode eager --steps 20
    $ /usr/bin/time -v python benchmarks/step.py --impl ours    # peak memory of one side
    $ python benchmarks/step.py --config overhead --mode eager --steps 100  # host cost per step
    $ python benchmarks/step.py --config overhead --mode eager --steps 50 --rounds 9 \
          --json benchmarks/results/step-cpu.json --label after
    $ python benchmarks/step.py --device cuda --mode reduce-overhead --matmul-precision high

Both sides start from the same weights (the seed's, copied into ours) and see the same batches,
so the printed first losses must agree; images/s is timed after warm-up steps. With --rounds R
the two sides take turns R times (medians over rounds): use it on a shared, loaded machine.
--json FILE puts the figures into FILE's rows, keyed "[label/]config/mode[/precision]".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

# the seed's default: SIREN, Gaussian features, latent 128, hidden 128, 5 layers, 32x32
CONFIGS = {
    "seed": dict(
        size=32, channels=1, latent=128, hidden=128, layers=5, batch=128, modulation=False
    ),
    "digits": dict(size=8, channels=1, latent=32, hidden=64, layers=4, batch=64, modulation=False),
    "modulated": dict(
        size=32, channels=1, latent=128, hidden=128, layers=5, batch=128, modulation=True
    ),
    # almost no arithmetic: ms/step is the per-step host overhead (dispatch, autograd, Python),
    # which bounds a GPU step from below when its kernels are small
    "overhead": dict(
        size=4, channels=1, latent=16, hidden=16, layers=5, batch=4, modulation=False
    ),
}


def build_decoder(pkg, c: dict):
    """The config's decoder from ``pkg``: gon_pytorch (the seed) or gon (same API)."""
    return pkg.ImplicitDecoder(
        c["latent"],
        c["channels"],
        c["hidden"],
        c["layers"],
        pkg.SirenBlockFactory(),
        pkg.GaussianFourierFeatureTransform(2, 32, 1.0),
        modulation=c["modulation"],
    )


def build_seed(c: dict):
    import gon_pytorch as gp

    return gp.GON(build_decoder(gp, c))


def build_ours(c: dict, seed_model=None):
    import gon

    model = gon.GON(build_decoder(gon, c), loss="bce", latent_reduction="sum")
    if seed_model is not None:
        copy_seed_weights(seed_model, model)
    return model


def copy_seed_weights(seed_model, model) -> None:
    """Map gon_pytorch's parameter names onto ours (same shapes, same column order)."""
    src = seed_model.state_dict()
    dst = {}
    for k, v in src.items():
        k = k.replace("decoder.net.blocks.", "decoder.blocks.").replace(".0.linear.", ".linear.")
        k = k.replace("mod_network.blocks.", "mod_network.layers.").replace(".0.weight", ".weight")
        dst[k.replace(".0.bias", ".bias")] = v
    model.load_state_dict(dst)


def seed_step(model, opt, coords, x):
    latent, loss_inner = model.infer_latents(coords, x)
    loss = model.loss_outer(model(coords, latent), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def make_ours_step(model, opt, coords, mode, path="auto"):
    from gon import TrainStep

    compiled = mode != "eager"
    step = TrainStep(model, coords, compile=compiled, path=path,
                     compile_mode=mode if mode not in ("eager", "compile") else "default")

    def run(x):
        losses = step(x)
        opt.step()
        return losses["loss_outer"]

    return run


def timed(run, batches, dev: torch.device) -> tuple[float, list[torch.Tensor], float]:
    """(seconds for the batches, their losses, peak device memory in GiB during them)."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sync()
    t0 = time.perf_counter()
    losses = [run(b) for b in batches]
    sync()
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return time.perf_counter() - t0, losses, peak


def bench(runs: dict, batches, warmup: int, rounds: int, dev: torch.device) -> dict:
    """Each side's warm-up, then ``rounds`` rounds of timed steps, the sides taking turns in
    each round (a load that comes and goes hits both); ms/step is each side's median round,
    ratio the median of the rounds' seed/ours time ratios (> 1: ours faster)."""
    steps = (len(batches) - warmup) // rounds
    out = {name: {"seconds": [], "losses": [], "peak": 0.0} for name in runs}
    for name, run in runs.items():  # the first step alone: with compile, it compiles
        first, losses, _ = timed(run, batches[:1], dev)
        out[name].update(first_step_s=first, losses=losses + timed(run, batches[1:warmup], dev)[1])
    for r in range(rounds):
        chunk = batches[warmup + r * steps : warmup + (r + 1) * steps]
        for name, run in runs.items():
            seconds, losses, peak = timed(run, chunk, dev)
            out[name]["seconds"].append(seconds)
            out[name]["losses"] += losses
            out[name]["peak"] = max(out[name]["peak"], peak)
    for o in out.values():
        o["ms_per_step"] = 1e3 * statistics.median(o["seconds"]) / steps
        o["losses"] = [float(v) for v in o["losses"]]  # one host sync, after the timing
    if len(out) == 2:
        out["ratio"] = statistics.median(
            s / o for o, s in zip(out["ours"]["seconds"], out["seed"]["seconds"], strict=True)
        )
    return out


def write_json(path: Path, key: str, row: dict, title: str) -> None:
    """Put ``row`` (a flat object) into the "rows" of the JSON file at ``path``, in place of a
    row with the same "key" (other rows are kept); docs/results.md draws it as a table."""
    data = json.loads(path.read_text()) if path.exists() else {}
    rows = [r for r in data.get("rows", []) if r.get("key") != key] + [{"key": key, **row}]
    data = {"title": title, **{k: v for k, v in data.items() if k not in ("title", "rows")},
            "rows": sorted(rows, key=lambda r: r["key"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="seed")
    ap.add_argument("--impl", choices=["both", "ours", "seed"], default="both")
    ap.add_argument(
        "--mode", default="compile",
        choices=["compile", "eager", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="ours: eager, or compiled (compile: torch.compile's default mode)",
    )
    ap.add_argument(
        "--matmul-precision", default="highest", choices=["highest", "high", "medium"],
        help="ours only (high: TF32 on NVIDIA GPUs); the seed always runs at highest",
    )
    ap.add_argument("--path", default="auto", help="our TrainStep path (auto, affine, ...)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="timed rounds, the sides taking turns; medians over rounds")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, help="merge this run's figures into this JSON file")
    ap.add_argument("--label", default="", help="prefix of this run's key in --json")
    args = ap.parse_args()
    c = CONFIGS[args.config]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batches = [
        torch.rand(c["batch"], c["size"], c["size"], c["channels"], generator=g).to(dev)
        for _ in range(args.warmup + args.rounds * args.steps)
    ]
    from gon import make_grid

    coords = make_grid(c["size"], c["size"], device=dev)
    print(f"config={args.config} {c} mode={args.mode} path={args.path} "
          f"matmul_precision={args.matmul_precision} device={dev} "
          f"threads={torch.get_num_threads()}")
    seed_model = build_seed(c).to(dev) if args.impl in ("both", "seed") else None
    runs = {}
    if args.impl in ("both", "ours"):
        ours = build_ours(c, seed_model).to(dev)
        opt = torch.optim.Adam(ours.parameters(), lr=1e-4)
        runs["ours"] = make_ours_step(ours, opt, coords, args.mode, args.path)
        if args.matmul_precision != "highest":
            runs["ours"] = at_precision(runs["ours"], args.matmul_precision)
    if seed_model is not None:
        opt_seed = torch.optim.Adam(seed_model.parameters(), lr=1e-4)
        seed_coords = coords.expand(c["batch"], -1, -1, -1)  # the seed needs one grid per image
        runs["seed"] = lambda x: seed_step(seed_model, opt_seed, seed_coords, x)
    results = bench(runs, batches, args.warmup, args.rounds, dev)
    for name in runs:
        r = results[name]
        memory = f"   cuda peak {r['peak']:.2f} GiB" if dev.type == "cuda" else ""
        losses = r["losses"]
        print(f"{name}: {1e3 * c['batch'] / r['ms_per_step']:8.1f} images/s "
              f"({r['ms_per_step']:7.2f} ms/step)   "
              f"losses[0,1,-1]={losses[0]:.6f} {losses[1]:.6f} {losses[-1]:.6f}{memory}")
    entry = {"config": args.config, "mode": args.mode, "matmul_precision": args.matmul_precision,
             "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
             "rounds": args.rounds, "steps_per_round": args.steps,
             **{f"{n}_ms_per_step": round(results[n]["ms_per_step"], 4) for n in runs},
             **{f"{n}_first_step_s": round(results[n]["first_step_s"], 3) for n in runs},
             **{f"{n}_peak_gib": round(results[n]["peak"], 3)
                for n in runs if dev.type == "cuda"}}
    if len(runs) == 2:
        gap = max(abs(a - b) for a, b in zip(results["ours"]["losses"],
                                            results["seed"]["losses"], strict=True))
        print(f"max |loss_ours - loss_seed| over {len(batches)} steps: {gap:.2e}")
        print(f"ratio: {results['ratio']:.2f}")
        entry.update(max_loss_gap=gap, ratio=round(results["ratio"], 4))
    if args.json is not None:
        key = "/".join(filter(None, [args.label, args.config, args.mode,
                                     None if args.matmul_precision == "highest"
                                     else args.matmul_precision]))
        write_json(args.json, key, entry, f"Training step against the seed ({dev.type})")


def at_precision(run, precision: str):
    """``run`` at matmul ``precision``; the seed, between its calls, at highest."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        torch.set_float32_matmul_precision(precision)
        try:
            return run(x)
        finally:
            torch.set_float32_matmul_precision("highest")

    return wrapped

if __name__ == "__main__":
    main()
