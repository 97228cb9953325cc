"""`python -m gon.train` and `gon-train`: Hydra's entry point and the argv fix-ups before it.

Usage:
    python -m gon.train                                   # digits, SIREN, about a minute on a CPU
    python -m gon.train -m block=siren,modulated          # one job per value
    python -m gon.train hparams_search=variants           # an Optuna sweep (a multirun by itself)
"""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from omegaconf import DictConfig

from gon.app.config import CONF_DIR, ConfigError, overrides_from
from gon.app.reliability.faults import Fault, describe, run_cli
from gon.app.reliability.lifecycle import bind_to_sweeper
from gon.app.train.job import EXPECTED, DivergenceError, _multirun_job, train

log = logging.getLogger(__name__)
# Hydra 1.4 warns on every run that it instantiated conf/hydra/default.yaml's callback, our own
# code, without an execution whitelist (a whitelist passed to hydra.main would also have to
# list every logging handler and sampler target): that one warning is not shown
warnings.filterwarnings("ignore", category=UserWarning, message=r"hydra\.utils\.instantiate\(\) "
                        r"resolved _target_='gon\.app\.train\.callbacks\.MultirunAnswer'")


@hydra.main(config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: the objective for sweepers, or one clear error line and exit 1."""
    bind_to_sweeper()  # a job process that a sweeper started dies with it
    try:
        return train(cfg)
    except Exception as e:
        msg = describe(e, (*EXPECTED, DivergenceError))
        if msg is None:
            raise  # a bug: keep the traceback
        log.error("%s", msg)
        if _multirun_job() is None:
            sys.exit(1)
        # in a multirun the job is recorded as failed (with this line) and the sweep goes on
        raise e if isinstance(e, (*EXPECTED, DivergenceError)) else Fault(msg) from e


def starts_sweep(argv: list[str]) -> bool:
    """An Optuna overlay (hparams_search=<name>) and no mode flag: the run must be a multirun.

    Hydra 1.4 takes hydra.mode from config.yaml or the command line only, not from an overlay,
    so without this `hparams_search=variants` would silently train one job.
    """
    return any(a.startswith("hparams_search=") and a != "hparams_search=null" for a in argv) \
        and not any(a.startswith("-") for a in argv)


def unknown_search(argv: list[str]) -> str | None:
    """The error for `hparams_search=<name>` naming no overlay in conf/hparams_search/, else
    None (Hydra would report it too, over several lines)."""
    names = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
    for a in argv:
        key, _, value = a.partition("=")
        for v in value.split(",") if key.lstrip("+~") == "hparams_search" else []:
            if v not in ("null", *names):  # a comma: a list of them in a plain multirun
                return f"unknown hparams_search={v}; valid names: {', '.join(names)}"
    return None


def cli() -> None:
    """`python -m gon.train` and the console script `gon-train`: one line for every fault,
    exit 130 on Ctrl-C (gon.app.faults.run_cli)."""
    for i, arg in enumerate(sys.argv):  # DVC's sweep stage: overrides read from params.yaml
        if arg.startswith("--overrides-from="):
            try:
                sys.argv[i:i + 1] = overrides_from(arg.partition("=")[2])
            except ConfigError as e:
                sys.stderr.write(f"error: {e}\n")
                sys.exit(1)
            break
    if msg := unknown_search(sys.argv[1:]):
        sys.stderr.write(f"error: {msg}\n")
        sys.exit(1)
    if starts_sweep(sys.argv[1:]):
        sys.argv.insert(1, "--multirun")
    run_cli(main, expected=(*EXPECTED, DivergenceError))
