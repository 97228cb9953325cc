"""Datasets: raw files -> one compact prepared artefact per dataset -> float tensors for training.

    $ python -m pipelines.fetch digits      # writes data/prepared/digits/{data.npz,meta.json}
    >>> images, labels = gon.app.data.load_dataset("digits", "train")  # (1497, 8, 8, 1) in [0, 1]

`data.npz` holds uint8 x_train, x_test (N, H, W, C) and int64 y_train, y_test (no pickles); it and
`meta.json` (written last) are built in a temporary directory that is then renamed into place.
meta.json's "params" say what it was built from (for image_folder: the folder, the size and a
fingerprint of its files); a reader that names what it expects (`expect=data_key(...)`) is
refused another folder's or size's artefact. The readers of raw files: gon.app.data.sources.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gon.app.data.sources import SPLIT_SEED, Arrays, DatasetError, folder_files, read_source
from gon.app.reliability.checkpoint import umasked
from gon.app.reliability.lifecycle import file_lock

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")
FORMAT_VERSION = 1
FOLDER_DEFAULT_SIZE = 64
# dataset.binarize: grey levels in [0, 1] (False), or binary pixels ~ Bernoulli(grey level)
# drawn once ("fixed") or afresh for every training batch ("dynamic"; its validation and test
# splits are fixed draws)
BINARIZE = (False, "fixed", "dynamic")
BINARIZE_SEED = 0  # the fixed draw: the same binary images for every run, seed and device

def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def validation_indices(n_train: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): the indices of the train split that train, and of the fixed seeded
    validation subset (round(fraction * n_train) images, at least 1) held out of training for
    the learning curves, the objective and tuning; each in the original order."""
    n_val = max(1, round(fraction * n_train))
    if n_val >= n_train:
        raise ValueError(f"eval.val_fraction={fraction} holds out all {n_train} train images")
    perm = np.random.RandomState(SPLIT_SEED + 1).permutation(n_train)  # not the test split's
    return (torch.from_numpy(np.sort(perm[n_val:])), torch.from_numpy(np.sort(perm[:n_val])))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished(target: Path, params: dict | None = None, verify: bool = True) -> dict | None:
    """The artefact's meta if it is complete (and built with `params`, when given), else None.

    ``verify=False`` trusts the data file's checksum (the caller has just checked it).
    """
    try:
        meta = json.loads((target / "meta.json").read_text())
        same = params is None or params == meta["params"]  # None: any params will do
        ok = meta["format_version"] == FORMAT_VERSION and same
        intact = not verify or _sha256(target / meta["file"]) == meta["sha256"]
        return meta if ok and intact else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_artefact(target: Path, arrays: Arrays, meta: dict) -> None:
    """Build the artefact in a temporary sibling directory, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = tmp.with_name(f"{tmp.name}.old")
    try:
        tmp.chmod(umasked(0o777))  # mkdtemp makes it 0700
        with open(tmp / "data.npz", "wb") as f:
            np.savez(f, **arrays)
        meta |= {"file": "data.npz", "sha256": _sha256(tmp / "data.npz")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks it done
        if target.exists():  # stale, or built with other params
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def data_key(name: str, raw_root: str | os.PathLike = "data/raw",
             source: str | os.PathLike | None = None, size: int | None = None) -> dict:
    """What a prepared artefact is built from, beyond its name (meta.json's "params"): for
    image_folder the folder (default `<raw_root>/image_folder`) and the size (default 64)."""
    if name != "image_folder":
        if source is not None or size is not None:
            msg = "source/size are for image_folder only; resize with load_dataset(image_size=N)"
            raise ValueError(f"{name}: {msg}")
        return {}
    src = Path(source) if source is not None else Path(raw_root) / "image_folder"
    size = FOLDER_DEFAULT_SIZE if size is None else int(size)
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    return {"source": str(src.resolve()), "size": size}


def prepare(
    name: str,
    raw_root: str | os.PathLike = "data/raw",
    out_root: str | os.PathLike = "data/prepared",
    source: str | os.PathLike | None = None,
    size: int | None = None,
) -> Path:
    """Prepare `name` into `<out_root>/<name>/` unless that is already done; return the directory.

    `source` (default `<raw_root>/image_folder`) and `size` (default 64) are for image_folder only.
    Raises ValueError for bad arguments, DatasetError for missing, unreachable or corrupt data.
    """
    _check_name(name)
    target, params = Path(out_root) / name, _params(name, raw_root, source, size)
    if _finished(target, params) is not None and not _leftovers(target):
        log.info("%s: %s is up to date", name, target)
        return target
    with _preparing(target):
        _ensure(name, Path(raw_root), target, params)
    return target


def load_prepared(name: str, raw_root: str | os.PathLike, out_root: str | os.PathLike,
                  source: str | os.PathLike | None = None, size: int | None = None,
                  splits: tuple[str, ...] = ("train", "test"), image_size: int | None = None,
                  device: str | torch.device = "cpu"
                  ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """`prepare`, then `load_splits`, both under the preparation lock: no other preparer (a
    job of the same sweep with another dataset.source) can swap the artefact in between."""
    _check_name(name)
    target, params = Path(out_root) / name, _params(name, raw_root, source, size)
    with _preparing(target):
        _ensure(name, Path(raw_root), target, params)
        return load_splits(name, splits, out_root, image_size, device, verify=False,
                           expect=params)


def _params(name: str, raw_root: str | os.PathLike, source: str | os.PathLike | None,
            size: int | None) -> dict:
    """data_key plus, for image_folder, a fingerprint of its files (adding or editing an image
    rebuilds the artefact)."""
    params = data_key(name, raw_root, source, size)
    if params:
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                 for p in folder_files(Path(params["source"]))]
        params["files_sha256"] = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    return params


@contextmanager
def _preparing(target: Path) -> Iterator[None]:
    """One preparer (or reader of a fresh artefact) at a time: the jobs of a sweep all prepare
    on first use; under the lock the temporary dirs of a killed preparer can be removed."""
    made_root = not target.parent.exists()
    try:
        with file_lock(target.parent / f".{target.name}.lock"):
            yield
    except BaseException:
        if made_root and not any(target.parent.iterdir()):  # a failure leaves no trace
            target.parent.rmdir()
        raise


def _ensure(name: str, raw_root: Path, target: Path, params: dict) -> None:
    """Under the lock: remove a killed preparer's leftovers, build the artefact unless done."""
    for old in _leftovers(target):
        shutil.rmtree(old, ignore_errors=True)
        log.info("%s: removed %s, left by an interrupted preparation", name, old.name)
    if _finished(target, params) is not None:
        log.info("%s: %s is up to date", name, target)
        return
    damage = _damage(target)
    try:
        _build(name, raw_root, target, params)
    except DatasetError as e:
        raise DatasetError(f"{damage} ({e})" if damage else str(e)) from None


def _damage(target: Path) -> str | None:
    """One line if `target` holds an artefact whose data file fails its meta.json checksum."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        if _sha256(target / meta["file"]) == meta["sha256"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        if not (target / "meta.json").exists():
            return None
    return (f"{target}/data.npz does not match the sha256 in its meta.json (damaged or "
            f"changed): restore it with `dvc checkout {target}`, or delete {target} to prepare "
            "it again")


def _leftovers(target: Path) -> list[Path]:
    """Temporary dirs of _write_artefact that a killed process left beside `target`."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def _build(name: str, raw_root: Path, target: Path, params: dict) -> None:
    arrays, origin = read_source(name, raw_root, params)
    x_train, x_test = arrays["x_train"], arrays["x_test"]  # uint8 (N, H, W, C)
    meta = {"name": name, "format_version": FORMAT_VERSION, "source": origin, "params": params}
    meta |= {"shape": list(x_train.shape[1:]), "channels": x_train.shape[3]}  # [H, W, C]
    meta |= {"splits": {"train": len(x_train), "test": len(x_test)}, "labels": "y_train" in arrays}
    _write_artefact(target, arrays, meta)
    log.info("%s: wrote %s (%s)", name, target, json.dumps(meta["splits"]))


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike = "data/prepared",
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images float32 (N, H, W, C) in [0, 1], resized to image_size^2 if given; labels or None."""
    return load_splits(name, (split,), root, image_size, device)[0]


def load_splits(
    name: str,
    splits: tuple[str, ...] = ("train", "test"),
    root: str | os.PathLike = "data/prepared",
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    verify: bool = True,
    expect: dict | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``load_dataset`` for several splits, checking and reading the artefact once.

    ``verify=False`` skips the checksum, for a caller that has just run ``prepare``;
    ``expect`` (a ``data_key``) refuses an artefact built from other data (another folder or
    size: the slot holds one at a time).
    """
    _check_name(name)
    for split in splits:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    target = Path(root) / name
    meta = _finished(target, verify=verify)
    if meta is None and (damage := _damage(target)):
        raise DatasetError(damage)
    if meta is None:
        raise FileNotFoundError(
            f"no finished {name} artefact in {target}; prepare it with "
            f"`python -m pipelines.fetch {name} --out {root}`"
        )
    built = {k: meta["params"].get(k) for k in expect or {}}
    if built != (expect or {}):
        raise DatasetError(
            f"{target} holds {name} built from {built}, not from {expect}: prepare this data "
            f"again (python -m pipelines.fetch {name} ...) before using it")
    out = []
    with np.load(target / meta["file"], allow_pickle=False) as npz:
        for split in splits:
            x = torch.from_numpy(npz[f"x_{split}"]).to(device)  # uint8 (N, H, W, C): move, cast
            y = torch.from_numpy(npz[f"y_{split}"]).to(device) if meta["labels"] else None
            out.append((_resize(x.float().div_(255), image_size), y))
    return out


def binarize(images: torch.Tensor, split: str) -> torch.Tensor:
    """The fixed binarisation of a split: pixel = 1 with probability its grey level, drawn once
    from BINARIZE_SEED and the split (on the CPU, so every device gets the same images)."""
    gen = torch.Generator().manual_seed(BINARIZE_SEED * 2 + ("train", "test").index(split))
    u = torch.rand(images.shape, generator=gen).to(images.device)
    return (u < images).to(images.dtype)


def _resize(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """(N, H, W, C) -> (N, S, S, C), bilinear with antialiasing; unchanged if already S x S."""
    if image_size is None or tuple(images.shape[1:3]) == (image_size, image_size):
        return images
    nchw = images.permute(0, 3, 1, 2)  # interpolate wants (N, C, H, W)
    nchw = F.interpolate(nchw, size=(image_size, image_size), mode="bilinear", antialias=True)
    return nchw.permute(0, 2, 3, 1).clamp_(0, 1).contiguous()  # (N, S, S, C)
