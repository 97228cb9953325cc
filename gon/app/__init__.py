"""The experiment app: configs, datasets, checkpoints, tracking, metrics, train, evaluate,
report and sweeps. It imports the library (gon.core) and the frameworks (Hydra, Optuna, W&B,
torchmetrics, scikit-learn, torchvision); the library never imports it.
"""

from importlib.util import find_spec

# `pip install gon` installs the library alone: say how to get the app, not a bare ImportError
_MISSING = [name for name in ("hydra", "omegaconf", "optuna", "wandb", "torchmetrics", "sklearn",
                              "torchvision", "PIL", "tqdm") if find_spec(name) is None]
if _MISSING:
    raise ModuleNotFoundError(
        f"the gon experiment app needs {', '.join(_MISSING)}: pip install 'gon[app]' "
        "(the library, `from gon import GON, ...`, needs torch only)"
    )
