"""Datasets: raw files -> one compact prepared artefact per dataset -> float tensors for training.

    $ python -m pipelines.fetch digits      # writes data/prepared/digits/{data.npz,meta.json}
    >>> images, labels = gon.app.data.load_dataset("digits", "train")  # (1497, 8, 8, 1) in [0, 1]

`data.npz` holds uint8 x_train, x_test (N, H, W, C) and int64 y_train, y_test (no pickles); it and
`meta.json` (written last) are built in a temporary directory that is then renamed into place.
"""

import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gon.app.reliability.faults import one_line
from gon.app.reliability.lifecycle import file_lock

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")
FORMAT_VERSION = 1
SPLIT_SEED = 0  # legacy RandomState streams are frozen (NEP 19), so seeded splits never move
DIGITS_TEST = 300  # digits: 1797 images -> 1497 train / 300 test
FOLDER_TEST_FRACTION = 0.1  # image_folder: 10 % test
FOLDER_DEFAULT_SIZE = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
OFFLINE_HINT = "The 'digits' dataset is bundled with scikit-learn and needs no download."
# dataset.binarize: grey levels in [0, 1] (False), or binary pixels ~ Bernoulli(grey level)
# drawn once ("fixed") or afresh for every training batch ("dynamic"; its validation and test
# splits are fixed draws)
BINARIZE = (False, "fixed", "dynamic")
BINARIZE_SEED = 0  # the fixed draw: the same binary images for every run, seed and device

Arrays = dict[str, np.ndarray]  # x_train, x_test: uint8 (N, H, W, C); y_train, y_test: int64 (N,)


class DatasetError(RuntimeError):
    """Raw data is missing, cannot be downloaded, or is corrupt (the message says what to do)."""


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


def _read_torchvision(name: str, raw_root: Path) -> Arrays:
    """MNIST, FashionMNIST or CIFAR10 through torchvision's classes; offline when files exist."""
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    cls = getattr(datasets, TORCHVISION_CLASSES[name])
    if name == "cifar10":  # pickled batches (md5-checked), or the archive they come in
        raw_dir, tgz = raw_root / cls.base_folder, raw_root / cls.filename
        md5s = dict(cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]])
        packed = {f: tgz for f in md5s}
        expected = f"{', '.join(md5s)} in {raw_dir}, or the archive {tgz}"
    else:  # IDX files, which torchvision reads unzipped
        raw_dir = raw_root / cls.__name__ / "raw"
        md5s = {Path(url).stem: None for url, _ in cls.resources}  # train-images-idx3-ubyte, ..
        packed = {f: raw_dir / f"{f}.gz" for f in md5s}
        expected = f"{', '.join(md5s)} (each plain or gzipped, .gz) in {raw_dir}"
    if not all((raw_dir / f).exists() or packed[f].exists() for f in md5s):
        try:  # torchvision's own download
            cls(str(raw_root), download=True)
        except Exception as exc:  # URLError, RuntimeError, OSError, ...: all mean "no files"
            reason = one_line(exc) or type(exc).__name__  # one line
            raise DatasetError(
                f"{name}: raw files not found under {raw_root} and the download failed "
                f"({reason}).\nExpected {expected}.\nTo work offline, copy them there (e.g. from "
                f"a machine with internet access), then rerun `python -m pipelines.fetch {name} "
                f"--root {raw_root}`. {OFFLINE_HINT}"
            ) from exc
    made = [raw_dir / f for f in md5s if not (raw_dir / f).exists()]  # unpacked below
    try:
        for path in (p for p in made if not p.exists()):
            if name == "cifar10":  # one archive holds every batch
                with tarfile.open(packed[path.name], "r:gz") as tar:
                    tar.extractall(raw_root, filter="data")
            else:
                path.write_bytes(gzip.decompress(packed[path.name].read_bytes()))
        bad = [f for f, md5 in md5s.items() if not check_integrity(str(raw_dir / f), md5)]
        if bad:  # torchvision itself would only say "Dataset not found or corrupted"
            raise ValueError(f"missing or md5 mismatch: {', '.join(bad)}")
        out: Arrays = {}
        for split in ("train", "test"):
            ds = cls(str(raw_root), train=split == "train", download=False)
            x = np.asarray(ds.data, dtype=np.uint8)  # MNIST (N, 28, 28); CIFAR10 (N, 32, 32, 3)
            out[f"x_{split}"] = x.reshape(*x.shape[:3], -1)  # (N, H, W, C)
            out[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
        return out
    except Exception as exc:
        for path in made:  # our unpacked copies: a fixed archive is then read next time
            path.unlink(missing_ok=True)
        raise DatasetError(
            f"{name}: could not read the raw files under {raw_dir} (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}.\nDelete them and rerun to download them again, or "
            f"copy intact files there. {OFFLINE_HINT}"
        ) from exc


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
    n_test = round(FOLDER_TEST_FRACTION * len(x))
    if n_test == 0:  # 5 images or fewer: nothing to test on, and evaluation would fail later
        raise DatasetError(
            f"image_folder: only {len(x)} image(s) under {source}; at least 6 are needed "
            f"({FOLDER_TEST_FRACTION:.0%} are held out for testing, at least one)")
    return _seeded_split(x, n_test)


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
        tmp.chmod(0o755)  # mkdtemp makes it 0700
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
        files_sha256 = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
        params = {"source": str(src.resolve()), "size": size, "files_sha256": files_sha256}
    elif source is not None or size is not None:
        msg = "source/size are for image_folder only; resize with load_dataset(image_size=N)"
        raise ValueError(f"{name}: {msg}")
    if _finished(target, params) is not None and not _leftovers(target):
        log.info("%s: %s is up to date", name, target)
        return target
    # one preparer at a time (the jobs of a sweep all call this on first use); under the lock
    # the temporary dirs of a killed preparer can be removed safely
    made_root = not target.parent.exists()
    try:
        with file_lock(target.parent / f".{name}.lock"):
            for old in _leftovers(target):
                shutil.rmtree(old, ignore_errors=True)
                log.info("%s: removed %s, left by an interrupted preparation", name, old.name)
            if _finished(target, params) is None:
                _build(name, raw_root, target, params, src if name == "image_folder" else None,
                       size)
            else:
                log.info("%s: %s is up to date", name, target)
    except BaseException:
        if made_root and not any(target.parent.iterdir()):  # a failure leaves no trace
            target.parent.rmdir()
        raise
    return target


def _leftovers(target: Path) -> list[Path]:
    """Temporary dirs of _write_artefact that a killed process left beside `target`."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def _build(name: str, raw_root: Path, target: Path, params: dict, src: Path | None,
           size: int | None) -> None:
    if name == "digits":
        arrays, origin = _read_digits(), "sklearn.datasets.load_digits, seeded split"
    elif name == "image_folder":
        arrays, origin = _read_image_folder(src, size), f"images in {src}, seeded split"
    else:
        arrays, origin = _read_torchvision(name, raw_root), f"torchvision raw files in {raw_root}"
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
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``load_dataset`` for several splits, checking and reading the artefact once.

    ``verify=False`` skips the checksum, for a caller that has just run ``prepare``.
    """
    _check_name(name)
    for split in splits:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    target = Path(root) / name
    meta = _finished(target, verify=verify)
    if meta is None:
        raise FileNotFoundError(
            f"no finished {name} artefact in {target}; prepare it with "
            f"`python -m pipelines.fetch {name} --out {root}`"
        )
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
