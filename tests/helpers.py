"""Helpers shared by the tests: config composition, the one model factory, CLI runners, the
W&B environment, SIGKILL after a checkpoint, process trees, a throwaway PostgreSQL cluster.
Fixtures live in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from gon import (
    GON,
    GaussianFourierFeatureTransform,
    IdentityPositionalEncoding,
    ImplicitDecoder,
    LinearBlockFactory,
    NeRFPositionalEncoding,
    SirenBlockFactory,
    VariationalGON,
)
from gon.app.config import compose

ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=tiny"]  # conf/debug/tiny.yaml: a training job of about a second on a CPU

ENCODINGS = {
    "none": lambda: IdentityPositionalEncoding(2),
    "nerf": lambda: NeRFPositionalEncoding(2, n=4),
    "gaussian": lambda: GaussianFourierFeatureTransform(2, 8, 1.0, seed=0),
}
BLOCKS = {  # name -> (block factory for w0, modulation)
    "siren": (lambda w0: SirenBlockFactory(w0=w0), False),
    "modulated": (lambda w0: SirenBlockFactory(w0=w0), True),
    "relu": (lambda w0: LinearBlockFactory(activation="relu"), False),
}


compose_config = compose  # conf/ composed outside Hydra: gon.app.config.compose


def make_gon(
    encoding: str = "nerf",
    block: str = "siren",
    loss: str = "bce",
    reduction: str = "sum",
    channels: int = 1,
    latent_dim: int = 8,
    hidden: int = 16,
    layers: int = 3,
    w0: float = 30.0,
    dropout: float = 0.0,
    updates: int = 1,
    learn_origin: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
    step_size: str = "fixed",
    second_order: bool = True,
    pixel_reduction: str = "mean",
) -> GON:
    """A small GON of any variant (seeded when `seed` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    factory, modulation = BLOCKS[block]
    dec = ImplicitDecoder(latent_dim, channels, hidden, layers, factory(w0),
                          ENCODINGS[encoding](), modulation=modulation, dropout=dropout)
    return GON(dec, latent_updates=updates, learn_origin=learn_origin, loss=loss,
               latent_reduction=reduction, step_size=step_size, second_order=second_order,
               pixel_reduction=pixel_reduction).to(dtype)


def make_vgon(
    encoding: str = "none",
    block: str = "siren",
    reduction: str = "sum",
    latent_dim: int = 8,
    hidden: int = 16,
    layers: int = 3,
    w0: float = 30.0,
    kl_weight: float = 1.0,
    kl_warmup_steps: int = 0,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> VariationalGON:
    """A small variational GON on the decoder ``make_gon`` builds (one channel)."""
    decoder = make_gon(encoding, block, latent_dim=latent_dim, hidden=hidden, layers=layers,
                       w0=w0, seed=seed).decoder
    return VariationalGON(decoder, latent_reduction=reduction, kl_weight=kl_weight,
                          kl_warmup_steps=kl_warmup_steps).to(dtype)


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """The environment for CLI subprocesses: offline W&B under tmp_path, no full Hydra errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true",
               WANDB_DISABLE_GIT="true")
    return env


def train_cli(data_dir: Path, *overrides: str) -> list[str]:
    """argv of a tiny `python -m gon.train` job on the prepared data in data_dir."""
    return [sys.executable, "-m", "gon.train", *TINY, f"paths.data_dir={data_dir}", *overrides]


def start(argv: list[str], tmp_path: Path, capture: bool = True, **env: str) -> subprocess.Popen:
    """Start a CLI in the repo root, stdout and stderr merged into one text pipe (or, with
    capture=False, discarded: for a process nobody reads, which a full pipe would block)."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(argv, cwd=ROOT, env=subprocess_env(tmp_path) | env, stdout=out,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """In a child: Ctrl-C's default action, also when the tests run as a background job (whose
    processes inherit SIGINT ignored, so Python would not raise KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(argv: list[str], tmp_path: Path, ok: bool = True, timeout: float = 900,
        **env: str) -> str:
    """Run a CLI to the end; assert it succeeded (or failed, ok=False); its output."""
    proc = subprocess.run(argv, cwd=ROOT, env=subprocess_env(tmp_path) | env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, out[-6000:]
    return out


def kill_when(proc: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `path` exists (e.g. a first checkpoint), and reap it."""
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def chromium() -> str | None:
    """The headless browser the page tests use (Debian's `chromium`; .ci/run installs it)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(page: Path, out: Path, width: int = 1400, height: int = 2400) -> tuple[str, Path]:
    """Open `page` in headless Chromium with its scripts run (virtual time, no network):
    (the DOM after the scripts ran, a PNG screenshot at out)."""
    browser = chromium()
    assert browser, "chromium is not installed (apt-get install chromium)"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--virtual-time-budget=15000", f"--window-size={width},{height}"]
    url = page.resolve().as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    subprocess.run([*common, f"--screenshot={out}", url], capture_output=True, timeout=120,
                   check=True)
    return dom, out


def wait_for(condition, timeout: float = 300, what: str = "condition") -> None:
    """Poll `condition()` until it is true (assert it within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> set[int]:
    """The live descendants of process `pid` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has exited
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def postgres_bindir() -> Path | None:
    """The folder of PostgreSQL's server binaries (pg_config --bindir, or initdb on PATH)."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout
        if out.strip() and (Path(out.strip()) / "initdb").exists():
            return Path(out.strip())
    except OSError:
        pass
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@contextmanager
def postgres_cluster(bindir: Path, password: str = "s3cret") -> Iterator[str]:
    """Start a throwaway cluster (as the `postgres` user when run as root: the server refuses
    root) on 127.0.0.1 at a free port; yield postgresql://postgres:<password>@host:port/gon."""
    base = Path(tempfile.mkdtemp(prefix="gon-pg-"))  # not under pytest's 0700 tmp dirs
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    (base / "pw").write_text(password + "\n")
    if as_user:
        shutil.chown(base / "pw", "postgres")
    port, data = free_port(), base / "data"

    def pg(*argv: str) -> None:
        proc = subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{argv[0]} failed:\n{proc.stdout}{proc.stderr}"

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
           "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={base / 'pw'}")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
           "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
        pg(str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", "postgres", "gon")
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/gon"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def _mount(*argv: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", *argv], capture_output=True).returncode == 0


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` as a read-only bind mount for the block (root only; else the test is skipped):
    a read-only file system stops root too, which file modes do not."""
    if not (_mount("--bind", str(path), str(path))):
        pytest.skip("needs root and mount(8) for a read-only bind mount")
    try:
        assert _mount("-o", "remount,ro,bind", str(path)), "remount read-only failed"
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted at `path` for the block (root only; else skip)."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("needs root and mount(8) for a small tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
