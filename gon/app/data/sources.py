"""Raw files -> arrays, one reader per kind of source (gon.app.data.datasets turns them into
the prepared artefact): scikit-learn's digits, torchvision's MNIST, FashionMNIST and CIFAR10
files (downloaded if absent), and a folder of images (gon.app.data.folder).

    >>> arrays = read_source("digits", Path("data/raw"), {})  # x_train, x_test, y_train, y_test
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np

from gon.app.data.folder import FolderError, read_folder
from gon.app.data.folder import folder_files as _folder_files
from gon.app.reliability.faults import one_line

SPLIT_SEED = 0  # legacy RandomState streams are frozen (NEP 19), so seeded splits never move
DIGITS_TEST = 300  # digits: 1797 images -> 1497 train / 300 test
FOLDER_TEST_FRACTION = 0.1  # image_folder: 10 % test
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
OFFLINE_HINT = "The 'digits' dataset is bundled with scikit-learn and needs no download."

Arrays = dict[str, np.ndarray]  # x_train, x_test: uint8 (N, H, W, C); y_train, y_test: int64 (N,)


class DatasetError(RuntimeError):
    """Raw data is missing, cannot be downloaded, or is corrupt (the message says what to do)."""


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


def _extract(tar: tarfile.TarFile, root: Path) -> None:
    """Unpack an archive's files and folders under `root` only: tarfile's "data" filter where
    this Python has it (3.11.4+, 3.12), else the same checks by hand (Python 3.10, 3.11.2)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(root, filter="data")
        return
    top = root.resolve()
    for m in tar.getmembers():
        if not (m.isfile() or m.isdir()) or not (top / m.name).resolve().is_relative_to(top):
            raise ValueError(f"refusing archive member {m.name!r} (a link, device or a path "
                             "leaving the folder)")
    tar.extractall(root)


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
                    _extract(tar, raw_root)
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
            if len(out[f"x_{split}"]) != len(out[f"y_{split}"]):  # torchvision does not check
                raise ValueError(f"the {split} split has {len(out[f'x_{split}'])} images but "
                                 f"{len(out[f'y_{split}'])} labels")
        return out
    except Exception as exc:
        for path in made:  # our unpacked copies: a fixed archive is then read next time
            path.unlink(missing_ok=True)
        raise DatasetError(
            f"{name}: could not read the raw files under {raw_dir} (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}.\nDelete them and rerun to download them again, or "
            f"copy intact files there. {OFFLINE_HINT}"
        ) from exc


def folder_files(source: Path) -> list[Path]:
    """folder.folder_files, its refusal a DatasetError."""
    try:
        return _folder_files(source)
    except FolderError as e:
        raise DatasetError(str(e)) from None


def _read_image_folder(source: Path, size: int) -> Arrays:
    """PNG/JPEG files, centre-cropped and resized to (size, size); RGB unless all are grey."""
    try:
        x = read_folder(source, size)  # (N, S, S, 1 or 3)
    except FolderError as e:
        raise DatasetError(str(e)) from None
    n_test = round(FOLDER_TEST_FRACTION * len(x))
    if n_test == 0:  # 5 images or fewer: nothing to test on, and evaluation would fail later
        raise DatasetError(
            f"image_folder: only {len(x)} image(s) under {source}; at least 6 are needed "
            f"({FOLDER_TEST_FRACTION:.0%} are held out for testing, at least one)")
    return _seeded_split(x, n_test)


def read_source(name: str, raw_root: Path, params: dict) -> tuple[Arrays, str]:
    """(arrays, where they came from) of dataset `name` (params: datasets.data_key's)."""
    if name == "digits":
        return _read_digits(), "sklearn.datasets.load_digits, seeded split"
    if name == "image_folder":
        src = Path(params["source"])
        return _read_image_folder(src, params["size"]), f"images in {src}, seeded split"
    return _read_torchvision(name, raw_root), f"torchvision raw files in {raw_root}"
