"""Training-step paths side by side (interleaved, one process): ms per step of `autograd`,
`functional` and `affine` on the digits default (8x8, batch 64) for k latent steps.

    python benchmarks/paths.py [--block modulated] [--ks 1 2 3 5] [--reps 30] [--threads 1]

Prints one line per k with each path's mean ms/step and the ratio autograd / affine. The paths'
gradients agree (tests/test_step.py); timings are only comparable within one run (say the load).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from gon import GON, ImplicitDecoder, SirenBlockFactory, TrainStep, make_grid


def model(block: str, k: int) -> GON:
    torch.manual_seed(0)
    decoder = ImplicitDecoder(latent_dim=32, out_dim=1, hidden_dim=64, num_layers=3,
                              block_factory=SirenBlockFactory(w0=30.0),
                              modulation=block == "modulated")
    return GON(decoder, latent_updates=k)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--block", choices=("siren", "modulated"), default="siren")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}, "
          f"block {args.block}")
    coords, x = make_grid(8, 8), torch.rand(64, 8, 8, 1)
    for k in args.ks:
        steps = {path: TrainStep(model(args.block, k), coords, path=path)
                 for path in ("autograd", "functional", "affine")}
        spent = dict.fromkeys(steps, 0.0)
        for step in steps.values():
            step(x)  # warm-up
        for _ in range(args.reps):
            for path, step in steps.items():
                tic = time.perf_counter()
                step(x)
                spent[path] += time.perf_counter() - tic
        ms = {path: 1e3 * t / args.reps for path, t in spent.items()}
        print(f"k={k}: " + "  ".join(f"{p} {v:.1f} ms" for p, v in ms.items())
              + f"  autograd/affine {ms['autograd'] / ms['affine']:.2f}x")


if __name__ == "__main__":
    main()
