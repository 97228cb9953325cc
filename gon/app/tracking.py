"""W&B tracking for a training job: imported lazily, offline unless WANDB_MODE says otherwise,
always finished (with exit code 1 if the job failed). `logger=none` makes every call a no-op.
An online start that does not reach the server within logger.wandb.init_timeout seconds falls
back to offline logging (one warning line; `wandb sync` uploads it later), so no trial is lost
to the network.

Usage:
    with tracking(cfg, run_id=None) as tracker:
        tracker.log({"train/loss_outer": 0.1}, step=10)
        tracker.log_images({"recon": uint8_array}, step=10)
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gon.app.metrics import HIGHER_IS_BETTER
from gon.app.reliability.faults import one_line
from gon.app.reliability.secrets import masked_argv
from gon.app.variants import SEED, run_name, variant_name, variant_tags

log = logging.getLogger(__name__)
INIT_TIMEOUT_S = 30.0  # W&B's own default is 90 s, per run
_offline_since: list[str] = []  # the error that made this process fall back to offline


def stable_id(*parts: Any) -> str:
    """A W&B run id derived from `parts` (the group, the job type, the name, a revision): the
    same report logged again updates its runs instead of adding new ones."""
    import hashlib

    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()[:16]


def init_run(init_timeout: float | None = None, **kwargs: Any) -> Any:
    """wandb.init(**kwargs), its start-up wait bounded by `init_timeout` seconds; if an online
    start fails (no network, a bad key, a W&B outage), one warning line and an offline run
    instead, and offline for the rest of this process. With an explicit `id`, the run resumes
    that id, and an older offline copy of it in the same dir is replaced."""
    import wandb

    if run_id := kwargs.get("id"):
        kwargs.setdefault("resume", "allow")
        for old in offline_runs(Path(kwargs.get("dir") or ".") / "wandb", run_id):
            shutil.rmtree(old, ignore_errors=True)

    with masked_argv():  # W&B records the command line: no storage password in it
        return _init(wandb, init_timeout, **kwargs)


def _init(wandb: Any, init_timeout: float | None, **kwargs: Any) -> Any:
    timeout = INIT_TIMEOUT_S if init_timeout is None else float(init_timeout)
    mode = kwargs.get("mode") or os.environ.get("WANDB_MODE", "online")
    if mode != "online" or _offline_since:
        return wandb.init(**{**kwargs, "mode": "offline" if _offline_since else mode})
    try:
        return wandb.init(**kwargs, settings=wandb.Settings(init_timeout=timeout))
    except Exception as e:  # wandb.errors.CommError, UsageError (bad key), ...
        _offline_since.append(one_line(e, 200))
        log.warning("W&B could not start online within %.0f s (%s); logging offline instead "
                    "(sync later: wandb sync <dir>/wandb/offline-run-*)", timeout,
                    _offline_since[0])
        return wandb.init(**{**kwargs, "mode": "offline"})


def offline_runs(wandb_dir: Path, run_id: str = "*") -> list[Path]:
    """The offline run folders in a W&B dir (`<dir>/wandb`), of one run id or all, oldest first
    (the names start with the date): what `wandb leet <wandb_dir>` lists."""
    return sorted(p for p in wandb_dir.glob(f"offline-run-*-{run_id}") if p.is_dir())


def gather_runs(sources: list[Path], wandb_dir: Path) -> int:
    """Hard-link (copy across file systems) the offline runs of the W&B dirs `sources` into
    `wandb_dir`, so that one `wandb leet` and one `wandb sync` reach them all; a run id seen
    again (a resumed run, an older copy) keeps its newest folder. Returns how many."""
    newest = {p.name.rsplit("-", 1)[1]: p for p in sorted(
        (p for src in sources for p in offline_runs(src)), key=lambda p: p.name)}
    for run_id, src in newest.items():
        for old in offline_runs(wandb_dir, run_id):
            shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(src, wandb_dir / src.name, symlinks=True, copy_function=_link)
    return len(newest)


def _link(src: str, dst: str) -> None:
    """A hard link (no second copy on disk; DVC hashes it as the file it is), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _sweep_dir() -> Path | None:
    """The Hydra sweep dir if this job is part of a multirun (its trials share one W&B dir)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


class Tracker:
    """A thin wrapper around a wandb run, or nothing."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @property
    def id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def path(self) -> str | None:
        """<entity>/<project>/<id> (online), <project>/<id> offline; None without a run."""
        if self.run is None:
            return None
        return "/".join(p for p in (self.run.entity, self.run.project, self.run.id) if p)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_images(self, grids: dict[str, np.ndarray], step: int) -> None:
        if self.run is not None:
            import wandb

            self.run.log({k: wandb.Image(v) for k, v in grids.items()}, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        """Set summary values; the val/* metrics are left to define_metric (best and last)."""
        if self.run is not None:
            self.run.summary.update({k: v for k, v in metrics.items()
                                     if k not in HIGHER_IS_BETTER})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


# what `dvc repro` itself rewrites: a change there is not a change of the code that ran
PIPELINE_OUTPUTS = ("dvc.lock", "reports")


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the checkout this package runs from (or `where`), 12 hex digits, with
    "-dirty" when a tracked file other than the pipeline's outputs (PIPELINE_OUTPUTS) differs
    from it; None outside a git checkout (an installed package)."""
    import subprocess

    here = str(where or Path(__file__).resolve().parent)
    spec = ["--", ":/", *(f":(top,exclude){p}" for p in PIPELINE_OUTPUTS)]
    try:
        head, status = (subprocess.run(["git", "-C", here, *args], capture_output=True,
                                       text=True, timeout=10)
                        for args in (["rev-parse", "--short=12", "HEAD"],
                                     ["status", "--porcelain", "--untracked-files=no", *spec]))
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0 or status.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def links() -> dict[str, str]:
    """Where a run comes from, for its W&B config: the git commit (git_commit), and under
    `dvc exp run` the DVC experiment's name."""
    out: dict[str, str] = {}
    if commit := git_commit():
        out["git_commit"] = commit
    if exp := os.environ.get("DVC_EXP_NAME"):
        out["dvc_exp"] = exp
    return out


def start_run(cfg: DictConfig, run_id: str | None = None,
              extra: dict[str, Any] | None = None) -> Tracker:
    """Start the job's wandb run (resuming `run_id` if given) or return a no-op Tracker;
    `extra`: more config keys (the Optuna trial number and study name)."""
    wcfg = cfg.logger.get("wandb") if cfg.get("logger") else None
    if wcfg is None:
        return Tracker()
    # Only WANDB_MODE in the environment stops wandb's start-up network probe (stack.md, 4);
    # an explicit mode= beats the variable, so both carry the resolved value.
    os.environ.setdefault("WANDB_MODE", wcfg.mode)
    sweep = _sweep_dir()
    # every trial of a multirun in <sweep dir>/wandb/ (one `wandb leet`, one `wandb sync`);
    # a single run in <run dir>/wandb/
    out_dir = Path(wcfg.dir or sweep or cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    run = init_run(
        init_timeout=wcfg.get("init_timeout"),
        project=wcfg.project,
        mode=wcfg.mode,
        dir=str(out_dir),
        group=wcfg.group or (sweep.name if sweep else None),
        job_type=wcfg.job_type,
        name=wcfg.name or run_name(cfg),  # <variant>/seed<k>
        tags=variant_tags(cfg) + [f"{SEED}={cfg[SEED]}"] + list(wcfg.tags),
        config={**config, "variant": variant_name(cfg), **links(), **(extra or {})},
        id=run_id,
        resume="allow" if run_id else None,
        reinit="finish_previous",
    )
    for key, higher in HIGHER_IS_BETTER.items():  # summary columns val/psnr.max, val/psnr.last
        run.define_metric(key, summary=f"{'max' if higher else 'min'},last")
    return Tracker(run)


@contextmanager
def tracking(cfg: DictConfig, run_id: str | None = None,
             extra: dict[str, Any] | None = None) -> Iterator[Tracker]:
    """`start_run` as a context: the run is finished however the block ends."""
    tracker = start_run(cfg, run_id, extra)
    try:
        yield tracker
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
