"""The training app: train(cfg) per variant, run-dir contents, resume, divergence, bad values,
W&B offline read-back, and the CLI (single run, multirun, SIGKILL + resume) in subprocesses.

$ python -m pytest tests/test_train.py -q            # add -m "not slow" to skip the CLI runs
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import kill_when, start, train_cli
from PIL import Image
from wandb_reader import read_run

from gon.app.build import load_images
from gon.app.config import ConfigError, validate_config
from gon.app.data.datasets import binarize, load_splits, validation_indices
from gon.app.reliability.checkpoint import CheckpointError
from gon.app.train.job import DivergenceError, _Job, train
from gon.app.train.loop import batches, lr_factor

VAL_KEYS = ("val/mse", "val/psnr", "val/ssim", "val/bce")


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "override",
    # the defaults (siren, none, bce, sum) once, then every other value of each axis
    ["", "block=modulated", "block=relu", "encoding=nerf", "encoding=gaussian", "loss=mse",
     "latent_reduction=mean", "encoder=detached", "encoder=autoencoder",
     "encoder=autoencoder_matched", "model.latent_updates=2 model.step_size=per_dim"],
)
def test_each_axis_value_trains(tiny_cfg, tmp_path: Path, override: str) -> None:
    objective = train(tiny_cfg(*override.split()))
    assert math.isfinite(objective)
    run = tmp_path / "run"
    metrics = _metrics(run)
    assert metrics["objective"] == objective == metrics["val/psnr"]
    assert all(math.isfinite(metrics[k]) for k in (*VAL_KEYS, "train/loss_outer"))
    assert (run / "recon.png").exists()
    # samples.png holds renders only (recon.png also holds the originals): not one flat grey
    assert Image.open(run / "samples.png").getextrema() != ((128, 128),) * 3
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # a plain dict
    assert ckpt["step"] == 5 and ckpt["config"]["model"]["hidden_dim"] == 16
    assert {"model", "optimizer", "rng", "best"} <= set(ckpt)


def test_image_folder_and_other_objective(tiny_cfg, tmp_path: Path) -> None:
    src = tmp_path / "pics"
    src.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(40):
        pixels = (torch.rand(12, 12, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(src / f"{i}.png")
    cfg = tiny_cfg("dataset=image_folder", f"dataset.source={src}", "dataset.image_size=8",
                   f"paths.data_dir={tmp_path / 'data'}", "optimized_metric=val/mse")
    objective = train(cfg)
    assert objective == _metrics(tmp_path / "run")["val/mse"] > 0


BAD = {
    "train.lr=0": "train.lr", "train.lr=-1e-3": "train.lr", "train.lr=abc": "train.lr",
    "train.batch_size=0": "train.batch_size", "train.max_steps=0": "train.max_steps",
    "dataset.image_size=1": "dataset.image_size", "model.latent_dim=0": "model.latent_dim",
    "model.hidden_dim=0": "model.hidden_dim", "model.num_layers=0": "model.num_layers",
    "model.latent_updates=0": "model.latent_updates", "model.dropout=1.0": "model.dropout",
    "block.w0=0": "block.w0", "seed=-1": "seed", "device=tpu": "device",
    "device=meta": "device='meta'", "device=mps": "device='mps'",
    "optimized_metric=val/acc": "optimized_metric", "train.batch_size=100000": "batch_size",
    "train.step_path=fast": "train.step_path",
    "train.compile_mode=fast": "train.compile_mode.*reduce-overhead",
    "train.compile=false train.compile_mode=reduce-overhead": "needs compile=True",
    "train.compile=maybe": "train.compile.*true, false or auto",
    "train.matmul_precision=low": "train.matmul_precision.*highest, high or medium",
    "train.step_path=affine model.dropout=0.2": "path='affine' needs",
    "encoding=nerf encoding.n=0": "encoding.n",
    "encoding=gaussian encoding.sigma=0": "encoding.sigma",
    "model.step_size=huge": "model.step_size.*fixed, scalar, per_dim",
    "model.final_activation=tanh": "model.final_activation.*sigmoid, none",
    "loss.pixel_reduction=max": "loss.pixel_reduction.*mean, sum",
    "train.weight_decay=-1": "train.weight_decay", "train.step_size_lr=0": "train.step_size_lr",
    "encoder=autoencoder encoder.net=rnn": "encoder.net.*auto, mlp, conv",
    "encoder=autoencoder train.step_path=affine": "autograd",
    "encoder=autoencoder_matched model.hidden_dim=2": "autoencoder_matched",
    "encoder=variational loss=mse": "encoder=variational needs loss=bce",
    "encoder=variational train.step_path=affine": "path='autograd' only",
    "encoder=variational model.kl_weight=-1": "model.kl_weight",
    "encoder=vae loss=mse": "encoder=vae needs loss=bce",
    "encoder=variational model.final_activation=none": "needs model.final_activation=sigmoid",
    "dataset.binarize=true": "dataset.binarize.*false, fixed or dynamic",
    "optimized_metric=val/nelbo": "val/nelbo needs a model with an ELBO",
    # every bad value in one message
    "train.lr=-1 model.latent_dim=0": "train.lr.*model.latent_dim|model.latent_dim.*train.lr",
}


@pytest.mark.parametrize("override", list(BAD))
def test_bad_value_is_one_clear_error(tiny_cfg, tmp_path: Path, override: str) -> None:
    with pytest.raises(ConfigError, match=BAD[override]) as err:
        train(tiny_cfg(*override.split()))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


LIKELIHOOD_KEYS = ("val/nelbo", "val/nelbo_bpd", "val/nelbo_recon", "val/nelbo_kl",
                   "val/iw_nelbo", "val/iw_bpd")


@pytest.mark.parametrize("binarize", ["false", "fixed", "dynamic"])
def test_variational_trains_and_reports_its_likelihood(tiny_cfg, tmp_path: Path,
                                                       binarize: str) -> None:
    cfg = tiny_cfg("encoder=variational", f"dataset.binarize={binarize}",
                   "optimized_metric=val/nelbo", "model.kl_warmup_steps=3")
    objective = train(cfg)
    metrics = _metrics(tmp_path / "run")
    assert objective == metrics["val/nelbo"] == metrics["objective"]
    assert all(math.isfinite(metrics[k]) for k in LIKELIHOOD_KEYS)
    assert metrics["val/nelbo"] == pytest.approx(metrics["val/nelbo_recon"]
                                                 + metrics["val/nelbo_kl"])
    assert metrics["val/nelbo_bpd"] == pytest.approx(metrics["val/nelbo"] / (64 * math.log(2)))
    assert metrics["val/iw_nelbo"] <= metrics["val/nelbo"] + 1e-3  # one test, 64 samples
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("heads.") for k in ckpt["model"])


def test_binarized_training_batches(tiny_cfg) -> None:
    """fixed: one binary draw of the train split; dynamic: a fresh draw for every batch."""
    fixed, dynamic = (_Job(tiny_cfg(f"dataset.binarize={m}"), None) for m in ("fixed", "dynamic"))
    for job in (fixed, dynamic):
        assert set(job.val.unique().tolist()) == {0.0, 1.0}  # the same fixed test draw
    torch.testing.assert_close(fixed.val, dynamic.val)
    assert set(fixed.images.unique().tolist()) == {0.0, 1.0}
    assert len(dynamic.images.unique()) > 2  # grey levels, binarised per batch
    step_1 = next(batches(dynamic.images, dynamic.t.batch_size, dynamic.cfg.seed))
    first, again = (dynamic.pixels(step_1) for _ in range(2))  # step 1, twice
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, again)  # drawn afresh


def test_divergence_stops_at_once(tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(DivergenceError, match="non-finite at step") as err:
        train(tiny_cfg("train.lr=1e10", "train.max_steps=200"))  # 1e6 suffices at default sizes
    assert int(re.search(r"at step (\d+)", str(err.value))[1]) <= 25  # long before step 200
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_resume_continues_exactly(tiny_cfg, tmp_path: Path) -> None:
    common = ("model.dropout=0.2", "train.ckpt_every=4", "train.eval_every=5", "train.log_every=3")
    whole = train(tiny_cfg(*common, "train.max_steps=10", run="whole"))
    train(tiny_cfg(*common, "train.max_steps=6", run="parts"))  # stops after step 6
    resumed = train(tiny_cfg(*common, "train.max_steps=10", run="parts"))
    assert resumed == whole
    assert _metrics(tmp_path / "parts") == _metrics(tmp_path / "whole")


def test_lr_schedule_factors() -> None:
    assert [lr_factor("constant", s, 4) for s in (1, 4, 9)] == [1.0, 1.0, 1.0]
    cos = [lr_factor("cosine", s, 4) for s in (1, 2, 3, 4, 5, 99)]
    assert cos == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                 0.5 - 0.5 * math.cos(math.pi / 4)] + [cos[3]] * 2)
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        lr_factor("step", 1, 4)


def test_cosine_schedule_sets_every_group_and_keeps_its_horizon(tiny_cfg,
                                                                tmp_path: Path) -> None:
    """Every group's lr (the step sizes' own too) follows the cosine, a function of the step
    alone (so a resume lands on the same rates); a resume that would change max_steps (the
    horizon) is refused in one line."""
    common = ("train.lr_schedule=cosine", "model.step_size=per_dim", "train.step_size_lr=0.01",
              "train.ckpt_every=3", "train.log_every=2")
    whole = train(tiny_cfg(*common, "train.max_steps=8", run="whole"))
    constant = train(tiny_cfg(*common[1:], "train.max_steps=8", run="constant"))
    assert whole != constant
    ckpt = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [1e-3, 0.01]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * lr_factor("cosine", 8, 8),
                                                       0.01 * lr_factor("cosine", 8, 8)])
    with pytest.raises(ConfigError, match=r"train.max_steps: 8 -> 12 \(the horizon of "
                                          r"lr_schedule=cosine\)"):
        train(tiny_cfg(*common, "train.max_steps=12", run="whole"))


def test_learning_curve_points_and_seeds(tiny_cfg, tmp_path: Path, data_dir: Path) -> None:
    objective = train(tiny_cfg("train.max_steps=12"))
    curve = _metrics(tmp_path / "run")["val_curve"]  # every 12 // 6 steps, the last included
    assert [r["step"] for r in curve] == [2, 4, 6, 8, 10, 12]
    assert curve[-1]["val/psnr"] == pytest.approx(objective) and len({r["val/psnr"]
                                                                       for r in curve}) > 1
    train(tiny_cfg("train.max_steps=12", "train.curve_points=0", run="nocurve"))
    assert [r["step"] for r in _metrics(tmp_path / "nocurve")["val_curve"]] == [12]
    # a seed changes the initialisation and the batch order, never the splits
    other = train(tiny_cfg("train.max_steps=12", "seed=1", run="seed1"))
    assert other != objective
    splits = [load_images(tiny_cfg(f"seed={k}"), torch.device("cpu")) for k in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(*splits, strict=True))


def test_validation_split_is_held_out_of_the_train_split(tiny_cfg) -> None:
    """Training sees the train split less a fixed seeded tenth; the curves and the objective
    score that tenth; the test split is untouched (gon.evaluate's and the claims')."""
    cfg = tiny_cfg()
    train_x, val_x, test_x = load_images(cfg, torch.device("cpu"))
    (whole, _), (test, _) = load_splits("digits", ("train", "test"),
                                        Path(cfg.paths.data_dir) / "prepared", None)
    assert (len(train_x), len(val_x)) == (1497 - 150, 150) and torch.equal(test_x, test)
    keep, held = validation_indices(len(whole), 0.1)
    assert torch.equal(train_x, whole[keep]) and torch.equal(val_x, whole[held])
    assert not set(keep.tolist()) & set(held.tolist()) and len(keep) + len(held) == len(whole)
    assert torch.equal(validation_indices(len(whole), 0.1)[1], held)  # a fixed subset
    assert len(validation_indices(len(whole), 0.2)[1]) == 299
    binary = load_images(tiny_cfg("dataset.binarize=fixed"), torch.device("cpu"))
    drawn = binarize(whole, "train")  # one draw of the whole split, then split
    assert torch.equal(binary[0], drawn[keep]) and torch.equal(binary[1], drawn[held])
    with pytest.raises(ConfigError, match=r"eval.val_fraction=0.9 \(must be a fraction in"):
        validate_config(tiny_cfg("eval.val_fraction=0.9"))


def test_variational_resume_continues_exactly(tiny_cfg) -> None:
    """The latent step's noise and the dynamic binarisation come from the checkpointed RNG."""
    common = ("encoder=variational", "dataset.binarize=dynamic", "train.ckpt_every=4",
              "train.eval_every=5", "model.kl_warmup_steps=6")
    whole = train(tiny_cfg(*common, "train.max_steps=8", run="whole"))
    train(tiny_cfg(*common, "train.max_steps=4", run="parts"))
    assert train(tiny_cfg(*common, "train.max_steps=8", run="parts")) == whole


def test_finished_run_is_not_retrained(tiny_cfg, tmp_path: Path) -> None:
    first = train(tiny_cfg())
    ckpt = tmp_path / "run" / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert train(tiny_cfg()) == first
    assert ckpt.stat().st_mtime_ns == stamp


def test_checkpoint_of_another_config_is_refused(tiny_cfg) -> None:
    train(tiny_cfg())
    with pytest.raises(ConfigError, match="model.hidden_dim: 16 -> 32|different run"):
        train(tiny_cfg("model.hidden_dim=32"))
    assert math.isfinite(train(tiny_cfg("model.hidden_dim=32", "train.resume=false")))


def test_corrupt_checkpoint_is_a_clear_error(tiny_cfg, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*checkpoint.pt"):
        train(tiny_cfg())


def test_wandb_offline_run_reads_back(tiny_cfg, wandb_offline: Path, tmp_path: Path) -> None:
    objective = train(tiny_cfg("logger=wandb", "block=modulated"))
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["run"]["job_type"] == "train" and run["exit_code"] == 0
    assert "block=modulated" in run["run"]["tags"] and "seed=0" in run["run"]["tags"]
    assert run["run"]["name"] == "none-modulated-bce-sum/seed0"  # <variant>/seed<k>
    assert run["config"]["variant"] == "none-modulated-bce-sum" and run["config"]["seed"] == 0
    for axis in ("block", "encoding", "loss", "latent_reduction", "dataset"):
        assert axis in run["config"]
    assert run["config"]["block"]["name"] == "modulated"
    rows = run["history"]
    assert any("train/loss_outer" in r and "train/loss_inner" in r for r in rows)
    assert any("images_per_s" in r for r in rows)
    final = [r for r in rows if "val/psnr" in r][-1]
    assert final["val/psnr"] == pytest.approx(objective)
    best = max(r["val/psnr"] for r in rows if "val/psnr" in r)  # define_metric: best and last
    assert run["summary"]["val/psnr"] == {"max": pytest.approx(best),
                                          "last": pytest.approx(objective)}
    assert final["recon/_type"] == "image-file"
    with Image.open(run_dir / "files" / final["recon/path"]) as img:
        assert img.format == "PNG"


@pytest.mark.slow
def test_cli_multirun_two_jobs_with_wandb(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    argv = train_cli(data_dir, "logger=wandb", "-m", "block=siren,modulated",
                     f"hydra.sweep.dir={sweep}")
    out, _ = start(argv, tmp_path).communicate(timeout=300)
    assert "Launching 2 jobs" in out, out
    for job in ("0", "1"):
        assert math.isfinite(_metrics(sweep / job)["objective"]), out
        assert not (sweep / job / "wandb").exists()
    runs = [read_run(d) for d in (sweep / "wandb").glob("offline-run-*")]  # one W&B dir
    assert sorted(r["config"]["block"]["name"] for r in runs) == ["modulated", "siren"]
    assert {r["run"]["group"] for r in runs} == {"sweep"}  # one group: the sweep dir's name
    assert not (sweep / "2").exists()


@pytest.mark.slow
def test_cli_diverging_job_fails_and_the_multirun_goes_on(tmp_path: Path, data_dir: Path):
    sweep = tmp_path / "sweep"
    default_sizes = ["model.hidden_dim=64", "model.latent_dim=32", "model.num_layers=3"]
    proc = start(train_cli(data_dir, *default_sizes, "train.max_steps=20", "-m",
                           "train.lr=1e6,1e-3", f"hydra.sweep.dir={sweep}"), tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "error: loss became non-finite" in out and "Traceback" not in out  # one line
    assert not (sweep / "0" / "metrics.json").exists()
    assert math.isfinite(_metrics(sweep / "1")["objective"]), out


@pytest.mark.slow
def test_cli_bad_value_exits_with_one_line(tmp_path: Path, data_dir: Path) -> None:
    proc = start(train_cli(data_dir, "train.lr=-1", f"hydra.run.dir={tmp_path / 'r'}"),
                 tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "invalid config: train.lr=-1" in out and "Traceback" not in out


@pytest.mark.slow
def test_cli_sigkill_then_resume_is_bit_identical(tmp_path: Path, data_dir: Path) -> None:
    steps = ["train.max_steps=200", "train.ckpt_every=10", "train.eval_every=50",
             "model.dropout=0.1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = start(train_cli(data_dir, *steps, f"hydra.run.dir={whole}"), tmp_path)
    proc = start(train_cli(data_dir, *steps, f"hydra.run.dir={killed}"), tmp_path)
    kill_when(proc, killed / "checkpoint.pt")
    assert not (killed / "metrics.json").exists(), "finished before the kill: use more steps"
    assert reference.wait(timeout=300) == 0, reference.stdout.read()

    proc = start(train_cli(data_dir, *steps, f"hydra.run.dir={killed}"), tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "resuming" in out, out
    assert _metrics(killed) == _metrics(whole)


# ---------------------------------------------------------------- issue 22, items 6 and 7
@pytest.mark.parametrize("change", ["train.weight_decay=0.1", "train.step_size_lr=0.5",
                                    "eval.num_images=16", "dataset.binarize=fixed"])
def test_resume_refuses_any_change_but_the_budget(tiny_cfg, change: str) -> None:
    """Only train.max_steps (and where and how the job runs) may change on a resume: the
    checkpoint would otherwise claim values its run never had."""
    train(tiny_cfg("train.max_steps=4"))
    with pytest.raises(ConfigError, match=re.escape(change.split("=")[0] + ":")):
        train(tiny_cfg("train.max_steps=6", change))
    assert train(tiny_cfg("train.max_steps=6", "train.log_every=3")) > 0  # the budget may grow


def test_a_changed_objective_starts_its_own_best(tiny_cfg, tmp_path: Path) -> None:
    train(tiny_cfg("train.max_steps=4", "train.eval_every=2"))  # optimized_metric=val/psnr
    train(tiny_cfg("train.max_steps=6", "train.eval_every=2", "optimized_metric=val/ssim"))
    m = _metrics(tmp_path / "run")
    assert m["val/ssim_best"] <= 1.0 and m["val/ssim_best"] >= m["val/ssim"]  # no PSNR in it


def test_resume_false_sets_the_old_run_aside(tiny_cfg, tmp_path: Path) -> None:
    """train.resume=false (the refusal's advice) keeps the finished run, beside the new one."""
    first = train(tiny_cfg())
    old = _metrics(tmp_path / "run")
    second = train(tiny_cfg("model.hidden_dim=32", "train.resume=false"))
    (aside,) = tmp_path.glob("run.old-*")
    assert _metrics(aside) == old and (aside / "checkpoint.pt").exists()
    assert _metrics(tmp_path / "run")["objective"] == second != first
