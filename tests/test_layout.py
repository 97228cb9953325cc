"""The package layout: the library (gon, gon.core) runs with torch and numpy alone, imports
flow one way (gon.core <- reliability, data <- shared modules <- stages <- shims <- plugin), no
import circles (relative imports included), and the console scripts are the `python -m`
entry points.

$ python -m pytest tests/test_layout.py -q
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from helpers import ROOT, run, train_cli

from gon.app.sweeps import record as rec
from gon.app.train.cli import starts_sweep

APP_ONLY = ["hydra", "hydra_plugins", "omegaconf", "optuna", "wandb", "dvc", "torchmetrics",
            "sklearn", "torchvision", "PIL", "tqdm", "yaml", "sqlalchemy", "joblib", "submitit"]
# gon-pytorch's README "From Code" example, with only the import line changed, then a TrainStep
SEED_EXAMPLE = f"""
import sys
import torch
from gon import NeRFPositionalEncoding, ImplicitDecoder, GON, SirenBlockFactory, TrainStep
from gon import make_grid

pos_encoder = NeRFPositionalEncoding(in_dim=2)
decoder = ImplicitDecoder(latent_dim=128, out_dim=3, hidden_dim=128, num_layers=4,
                          block_factory=SirenBlockFactory(), pos_encoder=pos_encoder)
gon = GON(decoder)
coords = torch.randn(1, 32, 32, 2)
image = torch.rand(1, 32, 32, 3)
latent, latent_loss = gon.infer_latents(coords, image)
recon = gon(coords, latent)
loss = ((recon - image) ** 2).mean()
loss.backward()
assert recon.shape == image.shape and latent.shape == (1, 128)
assert decoder.blocks[0].linear.weight.grad is not None

opt = torch.optim.Adam(gon.parameters(), lr=1e-4)
step = TrainStep(gon, make_grid(32, 32))
opt.zero_grad()
losses = step(torch.rand(4, 32, 32, 3))
opt.step()
assert torch.isfinite(losses["loss_outer"]) and step.path == "affine"
import gon.core.latents, gon.core.sampling  # every library module imports
print("library ok", sorted(m for m in sys.modules if m.split(".")[0] in {APP_ONLY!r}))
"""


def _library_only(code: str, site: Path) -> subprocess.CompletedProcess:
    """Run `code` with this venv's packages minus the app's (as after `pip install gon`)."""
    site.mkdir(exist_ok=True)
    (packages,) = {Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()}
    for entry in packages.iterdir():
        name = entry.name.split("-")[0].removesuffix(".py")
        if name not in APP_ONLY and not entry.name.endswith(".pth") and \
                not entry.name.startswith("__editable__"):
            (site / entry.name).symlink_to(entry)
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_library_runs_without_the_app_dependencies(tmp_path: Path) -> None:
    proc = _library_only(SEED_EXAMPLE, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "library ok []" in proc.stdout


@pytest.mark.parametrize("module", ["omegaconf", "hydra", "wandb", "PIL", "gon.app.train"])
def test_the_app_cannot_import_there(tmp_path: Path, module: str) -> None:
    """The library-only environment really lacks the app's packages."""
    proc = _library_only(f"import {module}", tmp_path / "site")
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr
    if module.startswith("gon."):  # one line that says how to get the app
        assert "pip install 'gon[app]'" in proc.stderr.splitlines()[-1]


def test_base_install_is_torch_and_numpy() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == [
        "numpy", "torch"]
    extras = project["optional-dependencies"]
    assert "gon[app,workspace]" in extras["dev"] and extras["workspace"] == [
        "wandb-workspaces>=0.4"]
    assert {"hydra-core==1.4.0rc3", "dvc>=3.50"} <= set(extras["app"])


# ------------------------------------------------------------------ the import rule
def _modules() -> dict[str, Path]:
    """Every module of this repo's packages: dotted name -> file."""
    out = {}
    for pkg in ("gon", "pipelines", "hydra_plugins"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement of a file, relative
    imports resolved against the file's package."""
    tree, found = ast.parse(path.read_text()), []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # from . import x / from ._impl import y
                    up = package.split(".")
                    up = up[:len(up) - child.level + 1]
                    base = ".".join([*up, *([child.module] if child.module else [])])
                if child.module:  # `from . import _impl` imports _impl, not the package
                    found.append((base, in_function))
                # `from gon.app import sweeps` imports the module gon.app.sweeps
                found.extend((f"{base}.{a.name}", in_function) for a in child.names
                             if f"{base}.{a.name}" in MODULES)
            visit(child, nested)

    visit(tree, False)
    return found


MODULES = _modules()
# The import rule, lowest first: a module imports only its own rank and lower ones (the layout
# section of README.md). gon.app's own modules at its top are the shared vocabulary.
RANK = {"gon.core": 0, "gon": 0, "gon.app.reliability": 1, "gon.app.data": 2, "gon.app": 3,
        "gon.app.train": 4, "gon.app.sweeps": 5, "gon.app.claims": 6, "gon.app.evaluate": 7,
        "gon.train": 8, "gon.evaluate": 8, "gon.sweep": 8, "gon.workspace": 8, "gon.claims": 8,
        "pipelines": 8, "hydra_plugins": 9}
STAGES = ("gon.app.data", "gon.app.train", "gon.app.sweeps", "gon.app.claims", "gon.app.evaluate")
SHIMS = {"gon.train", "gon.evaluate", "gon.sweep", "gon.workspace", "gon.claims",
         "pipelines.fetch"}
# the plugin module Hydra imports to discover sweepers loads its implementation on first use
LAZY = {("hydra_plugins.gon_sweeper.gon_sweeper", "hydra_plugins.gon_sweeper._impl"),
        ("hydra_plugins.gon_sweeper.gon_sweeper", "hydra_plugins.gon_sweeper._tuned")}


def _home(module: str) -> str:
    """The RANK key a module falls under (its longest prefix)."""
    return max((k for k in RANK if module == k or module.startswith(k + ".")), key=len)


def _ours(module: str) -> str | None:
    """The repo module an import names (or its package), else None."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_rule(module: str) -> None:
    """gon.core imports torch, numpy and the standard library only; every module imports only
    its own rank and lower ones (core <- reliability, data <- shared <- stages in pipeline
    order <- shims <- plugin); data knows no config; only the shims import a cli module; the
    plugin imports only gon.app.sweeps, gon.app.config and gon.app.reliability; no repo import
    hides in a function except the one in LAZY."""
    for name, in_function in _imports(MODULES[module], module):
        top = name.split(".")[0]
        if module.startswith("gon.core") or module == "gon":
            assert top in {"torch", "numpy", "gon", "__future__"} or \
                top in sys.stdlib_module_names, f"{module} imports {name}"
        if module.startswith("gon.app.data"):
            assert top not in {"hydra", "omegaconf"} and not name.startswith("gon.app.config"), \
                f"{module} imports {name}: the data stage knows no config"
        if (target := _ours(name)) is None or target == module:
            continue
        assert RANK[_home(target)] <= RANK[_home(module)], f"{module} imports {target} (higher)"
        if _home(module) in STAGES and _home(target) in STAGES:
            assert STAGES.index(_home(target)) <= STAGES.index(_home(module)), (module, target)
        if target.endswith(".cli"):
            assert module in SHIMS, f"{module} imports {target}: only python -m shims may"
        if module.startswith("hydra_plugins") and target.startswith("gon"):
            allowed = ("gon.app.sweeps", "gon.app.config", "gon.app.reliability")
            assert target.startswith(allowed), f"{module} imports {target}"
        assert not in_function or (module, target) in LAZY, \
            f"{module} imports {target} inside a function"


def test_no_import_circles() -> None:
    graph = {m: {t for n, _ in _imports(f, m) if (t := _ours(n)) and t != m}
             for m, f in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if t == m.rpartition(".")[0] or m.startswith(t + "."):
                continue  # a package's __init__ running before its submodule is no circle
            assert state.get(t) != 1, "import circle: " + " -> ".join([*path, m, t])
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_the_rule_sees_relative_imports() -> None:
    """The plugin's relative import of its implementation is read (it once hid a circle)."""
    module = "hydra_plugins.gon_sweeper.gon_sweeper"
    assert ("hydra_plugins.gon_sweeper._impl", True) in _imports(MODULES[module], module)


# ------------------------------------------------------------------ entry points
SCRIPTS = {"gon-train": "gon.train", "gon-evaluate": "gon.evaluate", "gon-sweep": "gon.sweep",
           "gon-fetch": "pipelines.fetch", "gon-workspace": "gon.workspace",
           "gon-claims": "gon.claims"}


def test_console_scripts_are_the_module_entry_points() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for name, module in SCRIPTS.items():
        target, func = scripts[name].split(":")
        shim = MODULES[module].read_text()
        assert func == "cli" and f"from {target} import cli" in shim or \
            f"def {func}()" in shim, f"{name} ({scripts[name]}) is not `python -m {module}`"


@pytest.mark.parametrize("name", sorted(set(SCRIPTS) - {"gon-train"}))
def test_argparse_clis_have_help(name: str) -> None:
    exe = Path(sys.executable).with_name(name)
    for argv in ([str(exe), "--help"], [sys.executable, "-m", SCRIPTS[name], "--help"]):
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage: " + name in proc.stdout, proc.stderr


@pytest.mark.parametrize(("argv", "sweep"), [
    (["hparams_search=variants"], True), (["hparams_search=tpe", "seed=1"], True),
    (["-m", "hparams_search=variants"], False), (["hparams_search=null"], False),
    (["block=modulated"], False), (["--cfg", "job", "hparams_search=variants"], False),
])
def test_an_optuna_overlay_starts_a_multirun(argv: list[str], sweep: bool) -> None:
    assert starts_sweep(argv) is sweep


@pytest.mark.slow
def test_console_script_sweeps_by_itself(tmp_path: Path, data_dir: Path) -> None:
    """`gon-train hparams_search=variants` is a multirun without -m, like `python -m`."""
    sweep_dir = tmp_path / "sweep"
    argv = train_cli(data_dir, "hparams_search=variants", "encoding=none", "block=siren",
                     "loss=bce", "seed=0", f"hydra.sweep.dir={sweep_dir}")
    out = run([str(Path(sys.executable).with_name("gon-train")), *argv[3:]], tmp_path)
    assert (sweep_dir / rec.RECORD).exists(), out[-3000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1"]
    out = run([str(Path(sys.executable).with_name("gon-sweep")), str(sweep_dir)], tmp_path)
    assert "2 complete" in out
    # every variant's mean over its seeds, and the effect of what varied (the reduction)
    assert "none-siren-bce-mean" in out and "none-siren-bce-sum" in out
    assert re.search(r"\n  latent_reduction +mean - sum +-?\d", out), out[-2000:]
