"""train.compile: auto (the rule and its measured constants) and GPU slots for a sweep's
trials, on the CPU: the policy called directly, the slots with a simulated GPU count."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gon.app.train.compiling import (
    CACHED,
    CROSSOVER_STEPS,
    compile_choice,
    crossover_steps,
)
from gon.app.train.slots import gpu_slot, slot_dir, trial_device

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_cuda_crossover_is_the_measured_one():
    rows = json.loads((RESULTS / "h200-2026-12-04.json").read_text())["rows"]
    assert CROSSOVER_STEPS["cuda"] == crossover_steps(rows, "reduce-overhead")


def test_cpu_crossover_is_the_measured_one():
    rows = [r for r in json.loads((RESULTS / "step-cpu.json").read_text())["rows"]
            if r["key"].startswith("after/")]
    assert CROSSOVER_STEPS["cpu"] == crossover_steps(rows, "compile")


@pytest.mark.parametrize(("steps", "sweep", "want"), [
    (CROSSOVER_STEPS["cuda"], False, (True, "reduce-overhead")),
    (CROSSOVER_STEPS["cuda"] - 1, False, (False, "default")),
    (CROSSOVER_STEPS["cuda"] // CACHED + 1, True, (True, "reduce-overhead")),
    (CROSSOVER_STEPS["cuda"] // CACHED - 1, True, (False, "default")),
])
def test_auto_on_cuda_compiles_from_the_crossover(steps, sweep, want):
    assert compile_choice("auto", "cuda", steps, "default", sweep)[:2] == want


def test_auto_keeps_a_chosen_mode_and_explicit_settings_win():
    big = 10 * CROSSOVER_STEPS["cuda"]
    assert compile_choice("auto", "cuda", big, "max-autotune", False)[:2] == (True,
                                                                               "max-autotune")
    assert compile_choice(True, "cuda", 1, "default", False)[:2] == (True, "default")
    assert compile_choice(False, "cuda", big, "default", False)[:2] == (False, "default")
    with pytest.raises(ValueError, match="true, false or auto"):
        compile_choice("yes", "cuda", 1, "default", False)


def test_auto_on_cpu_follows_the_cpu_measurement():
    compiled, _, why = compile_choice("auto", "cpu", 10**9, "default", True)
    assert compiled is (CROSSOVER_STEPS["cpu"] is not None)
    assert "cpu" in why


def test_slots_spread_trials_over_gpus_and_cap_them(tmp_path: Path):
    with gpu_slot(tmp_path, 2, 2) as a, gpu_slot(tmp_path, 2, 2) as b, \
            gpu_slot(tmp_path, 2, 2) as c, gpu_slot(tmp_path, 2, 2) as d:
        assert sorted([a, b, c, d]) == [0, 0, 1, 1]
        assert a != b
        with pytest.raises(TimeoutError, match="trials_per_gpu"), \
                gpu_slot(tmp_path, 2, 2, wait_s=0.2, poll_s=0.05):
            pass


def test_a_freed_slot_goes_to_the_next_trial_whatever_its_number(tmp_path: Path):
    """Trials 0 and 2 at once on 2 GPUs: n mod 2 put both on cuda:0; slots do not."""
    with gpu_slot(tmp_path, 2, 1) as first:
        with gpu_slot(tmp_path, 2, 1) as second:
            assert {first, second} == {0, 1}
        with gpu_slot(tmp_path, 2, 1) as third:  # the slot `second` let go of
            assert third == second


def test_a_killed_trial_frees_its_slot(tmp_path: Path):
    code = ("import sys, time; from pathlib import Path; from gon.app.train.slots import "
            "gpu_slot\nwith gpu_slot(Path(sys.argv[1]), 2, 1) as g:\n    print(g, flush=True)"
            "\n    time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        held = int(child.stdout.readline())
        with gpu_slot(tmp_path, 2, 1) as mine:
            assert mine == 1 - held
    finally:
        child.kill()
        child.wait()
    time.sleep(0.1)
    with gpu_slot(tmp_path, 2, 1) as a, gpu_slot(tmp_path, 2, 1) as b:
        assert {a, b} == {0, 1}
    assert (slot_dir(tmp_path) / "gpu0-0.lock").exists()


def test_trial_device_takes_a_slot_only_for_an_unpinned_gpu_in_a_sweep(tmp_path: Path):
    cuda = torch.device("cuda", 0)  # simulated: nothing runs on it
    with trial_device(cuda, False, tmp_path, 1, gpus=3) as a, \
            trial_device(cuda, False, tmp_path, 1, gpus=3) as b:
        assert {a.index, b.index} == {0, 1}
    with trial_device(torch.device("cuda", 2), True, tmp_path, 1, gpus=3) as pinned:
        assert pinned.index == 2
    with trial_device(cuda, False, None, 1, gpus=3) as single:  # not a sweep
        assert single == cuda
    with trial_device(torch.device("cpu"), False, tmp_path, 1, gpus=3) as cpu:
        assert cpu.type == "cpu"


def test_sweep_cache_replaces_inductors_default_but_not_a_users(tmp_path: Path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from gon.app.train.compiling import CACHE_ENV, use_sweep_cache

    monkeypatch.delenv(CACHE_ENV, raising=False)
    cache_dir()  # inductor's first look writes its default into the environment
    assert use_sweep_cache(tmp_path / "sweep") == (tmp_path / "sweep" / "compile_cache").resolve()
    assert cache_dir() == str((tmp_path / "sweep" / "compile_cache").resolve())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert use_sweep_cache(tmp_path / "sweep") == tmp_path / "mine"
