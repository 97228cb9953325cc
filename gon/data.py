"""Datasets: raw files -> one compact prepared artefact per dataset -> float tensors for training.

    $ python -m pipelines.fetch digits      # writes data/prepared/digits/{data.npz,meta.json}
    >>> from gon.data import load_dataset
    >>> images, labels = load_dataset("digits", "train")  # (1497, 8, 8, 1) float32 in [0, 1]

An artefact is `<out_root>/<name>/data.npz` (uint8 x_train, x_test (N, H, W, C); int64 y_train,
y_test where the dataset has labels; no pickles) plus `meta.json`, written last. Both are built in
a temporary directory that is renamed into place, so a directory without a valid meta.json, or
whose checksum does not match, is never treated as finished.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")
FORMAT_VERSION = 1
SPLIT_SEED = 0  # legacy RandomState streams are frozen (NEP 19), so seeded splits never move
DIGITS_TEST = 300  # digits: 1797 images -> 1497 train / 300 test
FOLDER_TEST_FRACTION = 0.1  # image_folder: 10 % test
FOLDER_DEFAULT_SIZE = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OFFLINE_HINT = "The 'digits' dataset is bundled with scikit-learn and needs no download."

Arrays = dict[str, np.ndarray]  # x_train, x_test: uint8 (N, H, W, C); y_train, y_test: int64 (N,)


class DatasetError(RuntimeError):
    """Raw data is missing, cannot be downloaded, or is corrupt (the message says what to do)."""


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def _seeded_split(x: np.ndarray, n_test: int, y: np.ndarray | None = None) -> Arrays:
    """A fixed train/test split; each split keeps the original order."""
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(x))
    train, test = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    out = {"x_train": x[train], "x_test": x[test]}
    return out if y is None else out | {"y_train": y[train], "y_test": y[test]}


def _read_digits() -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # images (1797, 8, 8) float, grey levels 0..16
    x = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    return _seeded_split(x, DIGITS_TEST, bunch.target.astype(np.int64))


def _download(name: str, fetch: Callable[[], object], expected: str, raw_root: Path) -> None:
    """Run torchvision's own download; any failure becomes one DatasetError naming the files."""
    try:
        fetch()
    except Exception as exc:  # URLError, RuntimeError, OSError, ...: all mean "no raw files"
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__  # one line
        raise DatasetError(
            f"{name}: raw files not found under {raw_root} and the download failed ({reason}).\n"
            f"Expected {expected}.\nTo work offline, copy those files there (e.g. from a machine "
            f"with internet access) and rerun `python -m pipelines.fetch {name} --root "
            f"{raw_root}`. {OFFLINE_HINT}"
        ) from exc


def _corrupt(name: str, where: Path, exc: Exception) -> DatasetError:
    return DatasetError(
        f"{name}: could not read the raw files under {where} (truncated or corrupt?): "
        f"{type(exc).__name__}: {exc}.\nDelete them and rerun to download again, or copy intact "
        f"files there. {OFFLINE_HINT}"
    )


def _read_mnist(name: str, raw_root: Path) -> Arrays:
    """MNIST or FashionMNIST from `<raw_root>/<Class>/raw/` (IDX files, plain or gzipped)."""
    from torchvision.datasets import MNIST, FashionMNIST

    cls = MNIST if name == "mnist" else FashionMNIST
    raw_dir = raw_root / cls.__name__ / "raw"
    files = [Path(url).stem for url, _ in cls.resources]  # train-images-idx3-ubyte, ...
    expected = f"{', '.join(files)} (each plain or with .gz) in {raw_dir}"
    if any(not (raw_dir / f).exists() and not (raw_dir / f"{f}.gz").exists() for f in files):
        _download(name, lambda: cls(str(raw_root), download=True), expected, raw_root)
    out: Arrays = {}
    unzipped: list[Path] = []
    try:
        for f in files:  # torchvision reads the uncompressed files: unzip user-supplied .gz ones
            if not (raw_dir / f).exists():
                with gzip.open(raw_dir / f"{f}.gz") as fin, open(raw_dir / f"{f}.part", "wb") as fo:
                    shutil.copyfileobj(fin, fo)
                unzipped.append(raw_dir / f)
                os.replace(raw_dir / f"{f}.part", raw_dir / f)
        for split in ("train", "test"):
            ds = cls(str(raw_root), train=split == "train", download=False)
            out[f"x_{split}"] = ds.data.numpy()[..., None]  # (N, 28, 28) -> (N, 28, 28, 1)
            out[f"y_{split}"] = ds.targets.numpy().astype(np.int64)
    except Exception as exc:
        for path in unzipped:  # so that a fixed .gz is read next time, not a bad unzipped copy
            path.unlink(missing_ok=True)
            path.with_suffix(".part").unlink(missing_ok=True)
        raise _corrupt(name, raw_dir, exc) from exc
    return out


def _read_cifar10(raw_root: Path) -> Arrays:
    """CIFAR10 from `<raw_root>/cifar-10-batches-py/` or `<raw_root>/cifar-10-python.tar.gz`."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    batch_dir, tgz = raw_root / CIFAR10.base_folder, raw_root / CIFAR10.filename
    md5s = dict(CIFAR10.train_list + CIFAR10.test_list + [list(CIFAR10.meta.values())[::2]])
    expected = f"{', '.join(md5s)} in {batch_dir}, or the archive {tgz}"
    have_batches = all((batch_dir / f).exists() for f in md5s)
    if not have_batches and not tgz.exists():
        _download("cifar10", lambda: CIFAR10(str(raw_root), download=True), expected, raw_root)
    out: Arrays = {}
    try:
        if not have_batches:
            with tarfile.open(tgz, "r:gz") as tar:
                tar.extractall(raw_root, filter="data")
        bad = [f for f, md5 in md5s.items() if not check_integrity(str(batch_dir / f), md5)]
        if bad:  # torchvision itself would only say "Dataset not found or corrupted"
            raise ValueError(f"missing or md5 mismatch: {', '.join(bad)}")
        for split in ("train", "test"):
            ds = CIFAR10(str(raw_root), train=split == "train", download=False)
            out[f"x_{split}"] = np.ascontiguousarray(ds.data)  # (N, 32, 32, 3) uint8
            out[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
    except Exception as exc:
        raise _corrupt("cifar10", batch_dir, exc) from exc
    return out


def _folder_files(source: Path) -> list[Path]:
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"image_folder: no PNG/JPEG files under {source}; pass --source DIR")
    return files


def _read_image_folder(source: Path, size: int) -> Arrays:
    """PNG/JPEG files, centre-cropped and resized to (size, size); RGB unless all are grey."""
    from PIL import Image, ImageOps

    images = []
    for path in _folder_files(source):
        try:
            with Image.open(path) as img:
                images.append(img.copy())  # copy() loads the pixels
        except Exception as exc:
            raise DatasetError(f"image_folder: cannot read image {path}: {exc}") from exc
    mode = "L" if all(img.mode in ("1", "L", "LA", "I", "I;16") for img in images) else "RGB"
    x = np.stack([np.asarray(ImageOps.fit(img.convert(mode), (size, size))) for img in images])
    x = x.reshape(len(x), size, size, -1)  # (N, S, S, 1 or 3)
    return _seeded_split(x, round(FOLDER_TEST_FRACTION * len(x)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _finished(target: Path, params: dict | None = None) -> dict | None:
    """The artefact's meta if it is complete (and built with `params`, when given), else None."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        ok = meta["format_version"] == FORMAT_VERSION and params in (None, meta["params"])
        return meta if ok and _sha256(target / meta["file"]) == meta["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_artefact(target: Path, arrays: Arrays, meta: dict) -> None:
    """Build the artefact in a temporary sibling directory, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        with open(tmp / "data.npz", "wb") as f:
            np.savez(f, **arrays)
        meta |= {"file": "data.npz", "sha256": _sha256(tmp / "data.npz")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks it done
        if target.exists():  # stale or built with other params: move it aside, swap, delete
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    raw_root, target, params = Path(raw_root), Path(out_root) / name, {}
    if name == "image_folder":
        src = Path(source) if source is not None else raw_root / "image_folder"
        size = FOLDER_DEFAULT_SIZE if size is None else int(size)
        if size < 1:
            raise ValueError(f"size must be a positive integer, got {size}")
        # fingerprint the folder, so that adding or editing images rebuilds the artefact
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _folder_files(src)]
        params = {"source": str(src.resolve()), "size": size, "files": _hash_json(stats)}
    elif source is not None or size is not None:
        raise ValueError(f"source/size are for image_folder only, not {name!r}; resize with "
                         "load_dataset(..., image_size=N)")  # fmt: skip
    if _finished(target, params) is not None:
        log.info("%s: %s is up to date", name, target)
        return target

    if name == "digits":
        arrays, origin = _read_digits(), "sklearn.datasets.load_digits, seeded split"
    elif name == "cifar10":
        arrays, origin = _read_cifar10(raw_root), f"torchvision CIFAR10 raw files in {raw_root}"
    elif name == "image_folder":
        arrays, origin = _read_image_folder(src, size), f"images in {src}, seeded split"
    else:
        arrays, origin = _read_mnist(name, raw_root), f"torchvision raw files in {raw_root}"
    x_train, x_test = arrays["x_train"], arrays["x_test"]  # uint8 (N, H, W, C)
    meta = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "shape": list(x_train.shape[1:]),
        "channels": x_train.shape[3],
        "splits": {"train": len(x_train), "test": len(x_test)},
        "labels": "y_train" in arrays,
        "source": origin,
        "params": params,
    }
    _write_artefact(target, arrays, meta)
    log.info("%s: wrote %s (train %d, test %d, H W C %s)", *(name, target), *meta["splits"].values(),
             meta["shape"])  # fmt: skip
    return target


def _hash_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike = "data/prepared",
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images float32 (N, H, W, C) in [0, 1], resized to image_size^2 if given; labels or None."""
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    target = Path(root) / name
    meta = _finished(target)
    if meta is None:
        raise FileNotFoundError(
            f"no finished {name} artefact in {target}; prepare it with "
            f"`python -m pipelines.fetch {name} --out {root}`"
        )
    with np.load(target / meta["file"], allow_pickle=False) as npz:
        x = torch.from_numpy(npz[f"x_{split}"]).to(device)  # uint8 (N, H, W, C): move, then cast
        y = torch.from_numpy(npz[f"y_{split}"]).to(device) if meta["labels"] else None
    images = x.float().div_(255)
    if image_size is not None and tuple(images.shape[1:3]) != (image_size, image_size):
        nchw = F.interpolate(images.permute(0, 3, 1, 2), size=(image_size, image_size),
                             mode="bilinear", antialias=True, align_corners=False)  # fmt: skip
        images = nchw.permute(0, 2, 3, 1).clamp_(0, 1).contiguous()  # (N, S, S, C)
    return images, y
