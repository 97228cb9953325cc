"""The tuned comparison (hparams_search=variants_tuned): per-variant TPE tuning studies, the
best settings in tuned.json, their re-runs with k seeds, the resume, and their evaluation.

$ python -m pytest tests/test_tuned.py -q
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from helpers import compose_config, run, start, train_cli

from gon.app.evaluate.cli import main as evaluate_main
from gon.app.sweeps import studies

VARIANTS = ("none-siren-bce-sum", "none-modulated-bce-sum")


def test_overlay_tunes_lr_and_w0_per_variant() -> None:
    cfg = compose_config(["hparams_search=variants_tuned"], hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.tune_seeds == 3 and sweeper.sampler._target_.endswith("TPESampler")
    assert str(sweeper.params["train.lr"]).startswith("tag(log")
    assert set(sweeper.params) == {"encoding", "block", "loss", "latent_reduction", "train.lr",
                                   "block.w0_initial"}


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0 and "Traceback" not in out, out[-6000:]
    return out


@pytest.mark.slow
def test_tuned_sweep_retrains_the_best_settings_and_resumes(tmp_path: Path,
                                                            data_dir: Path) -> None:
    """Two sweepers started at once on one journal file share the tuning and the re-runs:
    each variant gets exactly its n_trials tuning trials and k re-runs, every run dir is
    trained once; the same command again trains nothing."""
    sweep_dir, journal = tmp_path / "tuned", tmp_path / "shared" / "tuned.log"
    args = train_cli(data_dir, "hparams_search=variants_tuned", f"hydra.sweep.dir={sweep_dir}",
                     "encoding=none", "loss=bce", "latent_reduction=sum",
                     "hydra.sweeper.n_trials=2", "hydra.sweeper.tune_seeds=2",
                     # trials of a few seconds, so that the two sweepers overlap
                     "train.max_steps=300", "train.eval_every=300", "train.ckpt_every=100",
                     f"hydra.sweeper.storage=journal://{journal}")
    first, second = start(args, tmp_path), start(args, tmp_path)
    out = _finish(first) + _finish(second)
    record = json.loads((sweep_dir / "tuned.json").read_text())
    assert set(record["variants"]) == set(VARIANTS) and record["seeds"] == 2
    storage = studies.open_storage(f"journal://{journal}")
    main = optuna.load_study(study_name=record["study_name"], storage=storage)
    assert len(main.trials) == 2 * 2
    for name in VARIANTS:
        tune = optuna.load_study(study_name=f"{record['study_name']}/tune/{name}",
                                 storage=storage)
        assert len(tune.trials) == 2 and {"train.lr", "block.w0_initial"} == set(
            tune.best_trial.params)
        best = record["variants"][name]
        assert best["value"] == max(t.value for t in tune.trials)
        assert best["params"] == tune.best_trial.params
        reruns = [t for t in main.trials if f"none-{t.params['block']}-bce-sum" == name]
        assert sorted(t.params["seed"] for t in reruns) == [0, 1]
        for t in reruns:
            assert {k: t.params[k] for k in best["params"]} == best["params"]
            assert (sweep_dir / "best" / name / f"seed{t.params['seed']}" / "metrics.json"
                    ).exists()
        assert (sweep_dir / "tune" / name / "0" / "metrics.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("checkpoint.pt")}
    assert len(stamps) == 2 * 2 + 2 * 2, out[-3000:]
    for log in sweep_dir.rglob("train.log"):  # each run dir trained by one of the sweepers
        assert log.read_text().count("] - training dataset=") == 1, log
    out = run(args, tmp_path)  # the same command again: nothing is trained
    assert "Launching" not in out and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    reports = tmp_path / "reports"
    assert evaluate_main([str(sweep_dir / "best"), str(reports), "--no-wandb",
                          "--probe-images", "100", "--rows", "4", "--device", "cpu"]) == 0
    metrics = json.loads((reports / "metrics.json").read_text())
    assert {metrics[n]["psnr"]["n"] for n in VARIANTS} == {2}
