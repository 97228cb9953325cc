"""Whether the training step is compiled (``train.compile: auto``), and the on-disk cache that a
sweep's trials share, so that only the first trial of a shape compiles in full.

The rule: compiling pays once the time it saves, max_steps x (eager - compiled ms per step),
exceeds the compile time, i.e. at ``max_steps >= crossover`` where crossover = compile time /
saving per step, measured (``crossover_steps`` computes it from a benchmark's rows; the test
checks the constants below against the committed JSON):

- CUDA, CUDA graphs (``reduce-overhead``), one H200 (benchmarks/results/h200-2026-12-04.json):
  compile time = the compiled block's wall time less the eager block's (same start-up), saving
  = eager - CUDA-graph ms per step; the largest crossover over the configs, rounded up.
- CPU (benchmarks/results/step-cpu.json, torch.compile's default mode on the digits config).

In a multirun the trials share an inductor cache under the sweep dir; a trial that finds the
shapes compiled there compiles in at most 1/CACHED of the time (measured on the CPU:
benchmarks/results/compile-cache-cpu.json), so a sweep's crossover is crossover / CACHED.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from omegaconf import DictConfig

from gon import TrainStep
from gon.app.config import ConfigError

log = logging.getLogger(__name__)

SETTINGS = (True, False, "auto")
# max_steps from which a cold compile pays, per device type (None: it never does)
CROSSOVER_STEPS: dict[str, int | None] = {"cuda": 3700, "cpu": 8900}
CACHED = 4  # a trial with the sweep's cache compiles in <= 1/CACHED of a cold compile's time
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's (and, below it, triton's) on-disk cache


def crossover_steps(rows: Iterable[dict], compiled_mode: str) -> int | None:
    """The largest max_steps at which compiling just pays, over a benchmark's configs: each
    config's eager row and ``compiled_mode`` row give compile time / saving per step; rounded
    up to 100 steps; None if compiling saves nothing on some config.

    A row: config, mode, ours_ms_per_step, ratio (seed ms / ours ms, timed side by side) and
    wall_s (a whole block, start-up included) or ours_first_step_s (the first step, with
    compilation).
    """
    rows = list(rows)
    worst = 0.0
    eager = {r["config"]: r for r in rows if r["mode"] == "eager"}
    for r in rows:
        e = eager.get(r["config"])
        if r["mode"] != compiled_mode or e is None or r.get("matmul_precision") != "highest":
            continue
        key = "ours_first_step_s" if "ours_first_step_s" in r else "wall_s"
        compile_s = r[key] - e[key]
        # the compiled ms per step at the eager run's pace: the seed, timed beside each, is the
        # yardstick (a shared machine's load differs between the two runs)
        compiled_ms = e["ours_ms_per_step"] * e["ratio"] / r["ratio"]
        saved_s = (e["ours_ms_per_step"] - compiled_ms) / 1e3
        if saved_s <= 0:
            return None
        worst = max(worst, compile_s / saved_s)
    if not worst:
        raise ValueError(f"no config has both an eager and a {compiled_mode!r} row")
    return int(math.ceil(worst / 100) * 100)


def compile_choice(
    setting: bool | str, device_type: str, max_steps: int, mode: str, in_sweep: bool
) -> tuple[bool, str, str]:
    """(compile, compile_mode, why) for ``train.compile`` = ``setting`` (true, false, auto).

    auto: compile where the run is at least the device's crossover (a sweep's trials: the
    crossover / CACHED); on CUDA with CUDA graphs (``reduce-overhead``) unless ``mode`` names
    another; elsewhere with ``mode``.
    """
    if setting not in SETTINGS:
        raise ValueError(f"train.compile={setting!r} (must be true, false or auto)")
    if setting is not True and setting is not False:
        crossover = CROSSOVER_STEPS.get(device_type)
        if crossover is None:
            return False, "default", f"auto: compiling does not pay on {device_type}"
        if in_sweep:
            crossover = math.ceil(crossover / CACHED)
        if max_steps < crossover:
            return False, "default", (f"auto: {max_steps} steps < {crossover}, where compiling "
                                      f"starts to pay on {device_type}")
        if device_type == "cuda" and mode == "default":
            mode = "reduce-overhead"
        return True, mode, f"auto: {max_steps} steps >= {crossover} on {device_type}"
    # explicit: as given (TrainStep refuses a compile_mode without compiling)
    return setting, mode, f"train.compile={str(setting).lower()}"


def use_sweep_cache(sweep_dir: Path) -> Path:
    """Point inductor's on-disk cache at <sweep dir>/compile_cache, so that this sweep's trials
    share compiled code; a cache dir the user set (TORCHINDUCTOR_CACHE_DIR) is kept. (Inductor
    writes its default into the variable when it first looks, so that one counts as unset.)"""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    user = os.environ.get(CACHE_ENV)
    if user and os.path.abspath(user) != os.path.abspath(default_cache_dir()):
        return Path(user)
    cache = sweep_dir.resolve() / "compile_cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(cache)
    return cache


def build_step(model: torch.nn.Module, coords: torch.Tensor, t: DictConfig,
               sweep_dir: Path | None = None, compile: bool | None = None) -> TrainStep:
    """The training step on coords' device, compiled as ``t.compile`` says (``t``: the config's
    train node; ``compile``, if given, overrides it, in torch.compile's default mode); under
    auto a model that cannot be compiled trains eager. In a sweep (``sweep_dir``) a compiled
    step uses the sweep's cache."""
    setting, mode = (t.compile, t.compile_mode) if compile is None else (compile, "default")
    compiled, mode, why = compile_choice(setting, coords.device.type, t.max_steps, mode,
                                         sweep_dir is not None)
    if compiled and sweep_dir is not None:
        log.info("compile cache: %s", use_sweep_cache(sweep_dir))
    try:  # a path that does not fit the model (affine with dropout, compiled autograd)
        step = TrainStep(model, coords, compiled, t.step_path, mode)
    except ValueError as e:
        if not (compiled and setting == "auto"):
            raise ConfigError(str(e)) from e
        step, why = TrainStep(model, coords, False, t.step_path), f"{why}; {e}"
    log.info("step compiled: %s (%s)", step.compile, why)
    return step
