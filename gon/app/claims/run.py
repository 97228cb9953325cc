"""Train the claims' trials per seed in worker processes and collect their results
(gon.app.claims.cli is its command line).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import multiprocessing
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gon import GON
from gon.app.build import build_model, count_params, load_images, match_width
from gon.app.claims.table import DIVERGENCE_RULE, PROBED, TRIALS, VERDICT_RULE, entries
from gon.app.claims.trials import run_trial
from gon.app.config import compose
from gon.app.tracking import init_run

log = logging.getLogger(__name__)

_DATA: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per worker: the loaded images


def compose_trial(name: str, dataset: str, seed: int, overrides: list[str],
                  data_dir: str) -> DictConfig:
    """Trial `name`'s config: the embedded default, `overrides`, the trial's own overrides."""
    return compose(["logger=none", "device=cpu", f"dataset={dataset}", f"seed={seed}",
                           f"paths.data_dir={data_dir}", *overrides, *TRIALS[name]])


def compose_trials(names: list[str], dataset: str, seeds: list[int], overrides: list[str],
                   data_dir: str) -> dict[tuple[str, int], DictConfig]:
    """compose_trial of every name and seed, keyed (name, seed): each name composed once and
    its other seeds' configs copies with the seed set (the config refers to `seed` nowhere
    else; tests/test_claims.py checks they equal their own compositions); composed per seed
    where an override or a trial names the seed itself."""
    out: dict[tuple[str, int], DictConfig] = {}
    for name in names:
        if any(o.lstrip("+~").startswith("seed=") for o in (*overrides, *TRIALS[name])):
            out |= {(name, s): compose_trial(name, dataset, s, overrides, data_dir)
                    for s in seeds}
            continue
        first = out[name, seeds[0]] = compose_trial(name, dataset, seeds[0], overrides,
                                                    data_dir)
        for s in seeds[1:]:
            out[name, s] = copy.deepcopy(first)
            out[name, s].seed = s
    return out


def batch_dependence(model: GON, coords: torch.Tensor, images: torch.Tensor) -> float:
    """The largest relative change of a latent (inf-norm) between encoding an image alone and
    inside this batch (the training-time latents, infer_latents)."""
    model.eval()
    inside, _ = model.infer_latents(coords, images)
    alone = torch.cat([model.infer_latents(coords, x[None])[0] for x in images])
    change = (inside - alone).abs().amax(1) / alone.abs().amax(1).clamp_min(1e-30)
    return change.max().item()


def _trial(job: tuple[str, DictConfig, int, float | None]) -> tuple[str, int, dict[str, Any]]:
    name, cfg, steps, seconds = job
    torch.set_num_threads(1)
    key = f"{cfg.dataset.name}:{cfg.paths.data_dir}:{cfg.dataset.binarize}"  # grey or binary
    if key not in _DATA:
        _DATA[key] = load_images(cfg, torch.device("cpu"))
    train, _, test = _DATA[key]  # trained on the train split less its validation images
    probe = train[:64]  # measured only where a claim reads it (PROBED)
    result = run_trial(cfg, train, test, steps, seconds, probe=None if name not in PROBED else
                       lambda m, c: {"batch_dependence": batch_dependence(m, c, probe)})
    return name, cfg.seed, result


def run_claims(dataset: str, steps: int, seeds: list[int], jobs: int, overrides: list[str],
               data_dir: str) -> dict[str, Any]:
    """Train every trial for every seed; the claims file's content. The GON's trials start
    first (they set the time budget); the other trials' configs are composed while they run."""
    load, wall = os.getloadavg()[0], time.perf_counter()
    configs = compose_trials(["gon"], dataset, seeds, overrides, data_dir)
    results: dict[str, dict[int, dict]] = {n: {} for n in TRIALS}
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        if jobs > 1:  # fresh processes (spawn): no threads or CUDA state inherited
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn")))
            run = pool.map  # submits every job at once: the workers start on them now
        else:  # in this process, one thread as in the workers
            stack.callback(torch.set_num_threads, threads)
            run = map  # lazy: the jobs run as their results are read, after composing
        gon_runs = run(_trial, [("gon", configs["gon", s], steps, None) for s in seeds])
        configs |= compose_trials([n for n in TRIALS if n != "gon"], dataset, seeds,
                                  overrides, data_dir)
        width = match_modulated(configs, seeds, 3 if dataset == "cifar10" else 1)
        for name, seed, r in gon_runs:
            results[name][seed] = r
        budget = statistics.fmean(r["at_steps"]["seconds"] for r in results["gon"].values())
        for r in results["gon"].values():  # the GON at its own time budget: its step budget
            r["at_time"] = r["at_steps"]
        rest = [(n, configs[n, s], steps, budget) for n in TRIALS if n != "gon" for s in seeds]
        for name, seed, r in run(_trial, rest):
            results[name][seed] = r
            log.info("%s seed %d: %.2f dB at %d steps, %.2f dB at %.1f s", name, seed,
                     r["at_steps"]["psnr"], steps, r["at_time"]["psnr"], budget)
    rows = {n: [results[n][s] for s in seeds] for n in TRIALS}
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)  # the workers have been joined: their CPU time counts here
    cpu = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    setup = {"dataset": dataset, "steps": steps, "seeds": seeds, "time_budget_s": budget,
             "jobs": jobs, "threads_per_job": 1, "load_avg_1min_at_start": load,
             "wall_s": time.perf_counter() - wall, "cpu_s": cpu,  # cpu_s: of the whole process
             "overrides": overrides, "modulated_matched_hidden_dim": width,
             "rule": VERDICT_RULE, "divergence_rule": DIVERGENCE_RULE,
             "trials": {n: TRIALS[n] for n in TRIALS},
             "environment": environment()}
    return {"setup": setup, "entries": entries(rows, seeds)}


def match_modulated(configs: dict[tuple[str, int], DictConfig], seeds: list[int],
                    channels: int) -> int:
    """Set the hidden width of the modulated trials (the MLP map and its linear-map ablation,
    the same width) to the one whose MLP-map model matches the GON's parameters; that width."""
    gon_params = count_params(build_model(configs["gon", seeds[0]], channels=channels))
    cfg = copy.deepcopy(configs["modulated_matched", seeds[0]])
    widest = 4 * cfg.model.hidden_dim

    def params(h: int) -> int:  # the modulated model's parameters at hidden width h
        cfg.model.hidden_dim = h
        return count_params(build_model(cfg, channels=channels))

    width, _ = match_width(params, gon_params, widest)
    for s in seeds:  # the linear-map ablation at the same width as the MLP map
        for name in ("modulated_matched", "modulated_linear"):
            configs[name, s].model.hidden_dim = width
    return width


def environment() -> dict[str, Any]:
    """What the equal-step numbers depend on beyond code and seeds: the library versions and
    the CPU's vector extensions and math library (another MKL/oneDNN path moves a loss in the
    4th digit), so two claims.json files say whether they are comparable."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(), "machine": platform.machine(),
        "versions": {n: ver(n) for n in ("numpy", "scipy", "scikit-learn", "statsmodels",
                                          "hydra-core", "optuna")}
        | {"torch": torch.__version__},  # with its build (e.g. +cu130), which metadata drops
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # e.g. AVX2, AVX512
        "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
        "torch_threads": torch.get_num_threads(),
    }


def log_wandb(claims: dict[str, Any], out_dir: Path, project: str) -> None:
    """A W&B run (job_type=claims) holding the table, under out_dir: offline unless WANDB_MODE
    says otherwise, started by gon.app.tracking.init_run (offline if online fails)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    columns = ["id", "claim", "budget", "contender", "baseline", "measure", "mean", "ci_low",
               "ci_high", "n", "verdict", "anchor"]
    table = wandb.Table(columns=columns)
    for e in claims["entries"]:
        lo, hi = e["ci95"] or (None, None)
        table.add_data(e["id"], e["claim"], e["budget"], e["contender"], e["baseline"],
                       e["measure"], e["mean"], lo, hi, e["n"], e["verdict"], e["anchor"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with init_run(project=project, dir=str(out_dir), job_type="claims", name="claims",
                  group=f"claims-{claims['setup']['dataset']}", config=claims["setup"],
                  reinit="finish_previous") as run:
        run.log({"claims": table})
        run.summary.update({e["id"]: e["verdict"] for e in claims["entries"]})
