"""Training-step throughput of this library against the seed package, side by side in one run.

    $ pip install --no-deps gon-pytorch==0.1.1     # the seed, for this benchmark only
    $ python benchmarks/step.py          # the seed's default config; last line: ratio: <ours/seed>
    $ python benchmarks/step.py --config digits --mode eager --steps 20
    $ /usr/bin/time -v python benchmarks/step.py --impl ours    # peak memory of one side
    $ python benchmarks/step.py --config overhead --mode eager --steps 100  # host cost per step
    $ python benchmarks/step.py --device cuda --mode reduce-overhead --matmul-precision high

Both sides start from the same weights (the seed's, copied into ours) and see the same batches,
so the printed first losses must agree; images/s is timed after warm-up steps.
"""

from __future__ import annotations

import argparse
import time

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


def bench(run, batches, warmup: int, dev: torch.device) -> tuple[float, list[float], float]:
    """(images/s over the timed steps, every step's loss, peak device memory in GiB)."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    losses = [run(b) for b in batches[:warmup]]
    sync()
    t0 = time.perf_counter()
    losses += [run(b) for b in batches[warmup:]]
    sync()
    dt = time.perf_counter() - t0
    n = sum(b.shape[0] for b in batches[warmup:])
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return n / dt, [float(v) for v in losses], peak


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
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    c = CONFIGS[args.config]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batches = [
        torch.rand(c["batch"], c["size"], c["size"], c["channels"], generator=g).to(dev)
        for _ in range(args.warmup + args.steps)
    ]
    from gon import make_grid

    coords = make_grid(c["size"], c["size"], device=dev)
    print(f"config={args.config} {c} mode={args.mode} path={args.path} "
          f"matmul_precision={args.matmul_precision} device={dev} "
          f"threads={torch.get_num_threads()}")
    results = {}
    seed_model = None
    if args.impl in ("both", "seed"):
        seed_model = build_seed(c).to(dev)
    if args.impl in ("both", "ours"):
        ours = build_ours(c, seed_model).to(dev)
        opt = torch.optim.Adam(ours.parameters(), lr=1e-4)
        torch.set_float32_matmul_precision(args.matmul_precision)
        results["ours"] = bench(make_ours_step(ours, opt, coords, args.mode, args.path), batches,
                                args.warmup, dev)
        torch.set_float32_matmul_precision("highest")
    if seed_model is not None:
        opt = torch.optim.Adam(seed_model.parameters(), lr=1e-4)
        seed_coords = coords.expand(c["batch"], -1, -1, -1)  # the seed needs one grid per image
        results["seed"] = bench(
            lambda x: seed_step(seed_model, opt, seed_coords, x), batches, args.warmup, dev
        )
    for name, (ips, losses, peak) in results.items():
        memory = f"   cuda peak {peak:.2f} GiB" if dev.type == "cuda" else ""
        print(
            f"{name}: {ips:8.1f} images/s ({1e3 * c['batch'] / ips:7.2f} ms/step)   "
            f"losses[0,1,-1]={losses[0]:.6f} {losses[1]:.6f} {losses[-1]:.6f}{memory}"
        )
    if len(results) == 2:
        gap = max(abs(a - b) for a, b in zip(results["ours"][1], results["seed"][1], strict=True))
        print(f"max |loss_ours - loss_seed| over {len(batches)} steps: {gap:.2e}")
    if len(results) == 2:
        print(f"ratio: {results['ours'][0] / results['seed'][0]:.2f}")


if __name__ == "__main__":
    main()
