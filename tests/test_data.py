"""Datasets: prepare + load, offline, from tiny raw files in torchvision's on-disk formats.

$ python -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, MNIST

from gon.app.data.cli import main as fetch_main
from gon.app.data.datasets import (
    DATASETS,
    DatasetError,
    data_key,
    load_dataset,
    load_prepared,
    load_splits,
    prepare,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails at once instead of hanging."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare("digits", out_root=out)
    return out


def _idx(arr: np.ndarray) -> bytes:
    """IDX (ubyte) bytes, the format of MNIST's raw files."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(
    raw_dir: Path, images: dict[str, np.ndarray], cut: int = 0, gz: bool = True
) -> None:
    """IDX files, gzipped as torchvision downloads them; `cut` drops that many image bytes."""
    raw_dir.mkdir(parents=True)
    pack, suffix = (gzip.compress, ".gz") if gz else (bytes, "")
    for prefix, x in images.items():
        labels = np.arange(len(x)) % 10
        (raw_dir / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(
            pack(_idx(x)[: len(_idx(x)) - cut])
        )
        (raw_dir / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(pack(_idx(labels)))


def _mnist_images(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # non-square 5x7 images, so a transposed read would show up
    return {"train": rng.integers(0, 256, (6, 5, 7)), "t10k": rng.integers(0, 256, (4, 5, 7))}


def _write_cifar(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pickled batches in cifar-10-batches-py/; returns the images as (N, 32, 32, 3)."""
    batch_dir = root / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    x = rng.integers(0, 256, (13, 32, 32, 3)).astype(np.uint8)
    rows = x.transpose(0, 3, 1, 2).reshape(13, 3072)  # CIFAR rows: R plane, G plane, B plane
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        idx = slice(2 * i, 2 * i + 2) if i < 5 else slice(10, 13)
        batch = {"data": rows[idx], "labels": list(range(idx.start, idx.stop))}
        (batch_dir / name).write_bytes(pickle.dumps(batch))
    (batch_dir / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    return x[:10], x[10:]


def _trust_cifar_files(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Point torchvision's md5 lists at the test's own files (test-only)."""
    md5 = lambda f: hashlib.md5((root / "cifar-10-batches-py" / f).read_bytes()).hexdigest()  # noqa: E731
    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5(f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})


def test_digits_end_to_end(digits_root: Path) -> None:
    x, y = load_dataset("digits", "train", root=digits_root)
    xt, yt = load_dataset("digits", "test", root=digits_root)
    assert x.shape == (1497, 8, 8, 1) and xt.shape == (300, 8, 8, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() == 1.0  # grey level 16 -> 255 -> 1.0
    assert set(y.tolist()) == set(range(10)) and set(yt.tolist()) == set(range(10))
    assert x[:, :, 0].mean() < 0.05 < x[:, :, 3:5].mean()  # ink in the middle, not the left edge


def test_second_run_is_noop(digits_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = [digits_root / "digits" / f for f in ("data.npz", "meta.json")]
    before = [f.stat().st_mtime_ns for f in files]
    caplog.set_level(logging.INFO, logger="gon.app.data.datasets")
    assert prepare("digits", out_root=digits_root) == digits_root / "digits"
    assert [f.stat().st_mtime_ns for f in files] == before and "up to date" in caplog.text


def test_load_dataset_resize(digits_root: Path) -> None:
    x, _ = load_dataset("digits", "test", root=digits_root, image_size=16)
    assert x.shape == (300, 16, 16, 1) and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize(
    "name, folder, gz",
    [("mnist", "MNIST", True), ("fashion_mnist", "FashionMNIST", True), ("mnist", "MNIST", False)],
)
def test_mnist_from_idx_files(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    images = _mnist_images(np.random.default_rng(0))
    _write_mnist(tmp_path / "raw" / folder / "raw", images, gz=gz)
    prepare(name, tmp_path / "raw", tmp_path / "out")
    x, y = load_dataset(name, "train", root=tmp_path / "out")
    xt, yt = load_dataset(name, "test", root=tmp_path / "out")
    assert x.shape == (6, 5, 7, 1) and xt.shape == (4, 5, 7, 1)
    assert torch.equal((x[..., 0] * 255).round().byte(), torch.from_numpy(images["train"]).byte())
    assert y.tolist() == [0, 1, 2, 3, 4, 5] and yt.dtype == torch.int64


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_from_pickle_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: bool
) -> None:
    x_train, x_test = _write_cifar(tmp_path / "raw", np.random.default_rng(0))
    _trust_cifar_files(monkeypatch, tmp_path / "raw")
    if archive:  # only cifar-10-python.tar.gz, as downloaded
        _tar_batches(tmp_path / "raw")
    prepare("cifar10", tmp_path / "raw", tmp_path / "out")
    x, y = load_dataset("cifar10", "train", root=tmp_path / "out")
    xt, yt = load_dataset("cifar10", "test", root=tmp_path / "out")
    assert x.shape == (10, 32, 32, 3) and xt.shape == (3, 32, 32, 3)
    assert torch.equal((x * 255).round().byte(), torch.from_numpy(x_train))
    assert torch.equal((xt * 255).round().byte(), torch.from_numpy(x_test))
    assert y.tolist() == list(range(10)) and yt.tolist() == [10, 11, 12]


def _tar_batches(raw: Path) -> Path:
    """Replace cifar-10-batches-py/ by the archive it comes in."""
    with tarfile.open(raw / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(raw / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    shutil.rmtree(raw / "cifar-10-batches-py")
    return raw / "cifar-10-python.tar.gz"


def test_cifar10_checksum_mismatch_is_clear(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "raw", np.random.default_rng(0))  # md5s don't match the real files
    with pytest.raises(
        DatasetError, match="cifar10: could not read .* md5 mismatch: data_batch_1"
    ):
        prepare("cifar10", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out" / "cifar10").exists()


def test_truncated_cifar_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar(tmp_path / "raw", np.random.default_rng(0))
    _trust_cifar_files(monkeypatch, tmp_path / "raw")
    tgz = _tar_batches(tmp_path / "raw")
    tgz.write_bytes(tgz.read_bytes()[:-200])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        prepare("cifar10", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["short_idx", "cut_gzip"])
def test_truncated_raw_file(tmp_path: Path, how: str) -> None:
    raw_dir = tmp_path / "raw" / "MNIST" / "raw"
    _write_mnist(
        raw_dir, _mnist_images(np.random.default_rng(0)), cut=40 if how == "short_idx" else 0
    )
    if how == "cut_gzip":
        gz = raw_dir / "train-images-idx3-ubyte.gz"
        gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        prepare("mnist", tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []  # no artefact, no temp dir
    assert sorted(p.suffix for p in raw_dir.iterdir()) == [".gz"] * 4  # bad unzipped copies gone


def test_missing_download_names_expected_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert fetch_main(["mnist", "--root", str(raw), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: mnist") and "Traceback" not in err
    assert (
        "train-images-idx3-ubyte" in err and str(raw / "MNIST" / "raw") in err and "digits" in err
    )
    with pytest.raises(DatasetError, match="data_batch_1.*cifar-10-python.tar.gz"):
        prepare("cifar10", raw, out)
    assert not out.exists()


def test_image_folder(tmp_path: Path) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    for i in range(10):  # grey images of assorted sizes, one in a subfolder
        img = Image.fromarray(
            np.full(
                (
                    12 + i,
                    20,
                ),
                20 * i,
                np.uint8,
            ),
            mode="L",
        )
        img.save(src / ("sub" if i == 0 else ".") / f"{i}.png")
    prepare("image_folder", source=src, out_root=out, size=8)
    x, y = load_dataset("image_folder", "train", root=out)
    xt, _ = load_dataset("image_folder", "test", root=out)
    assert x.shape == (9, 8, 8, 1) and xt.shape == (1, 8, 8, 1) and y is None
    Image.new("RGB", (9, 9), (255, 0, 0)).save(src / "red.jpg")  # new file: rebuilt, now RGB
    prepare("image_folder", source=src, out_root=out, size=8)
    x, _ = load_dataset("image_folder", "train", root=out)
    assert (
        x.shape[1:] == (8, 8, 3)
        and len(x) + len(load_dataset("image_folder", "test", root=out)[0]) == 11
    )
    with pytest.raises(DatasetError, match="no PNG/JPEG"):
        prepare("image_folder", source=tmp_path / "empty", out_root=out)


def test_unknown_names_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for call in (lambda: prepare("nope"), lambda: load_dataset("nope")):
        with pytest.raises(ValueError, match="valid names: " + ", ".join(DATASETS)):
            call()
    assert fetch_main(["nope", "--out", str(tmp_path)]) == 2
    assert "error: unknown dataset 'nope'; valid names: digits" in capsys.readouterr().err
    with pytest.raises(ValueError, match="for image_folder only"):
        prepare("digits", out_root=tmp_path, size=16)


def test_crash_leaves_nothing_and_unfinished_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            prepare("digits", out_root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    target = prepare("digits", out_root=tmp_path)
    (target / "meta.json").unlink()  # as if a crash hit before meta.json was written
    with pytest.raises(FileNotFoundError, match="python -m pipelines.fetch digits"):
        load_dataset("digits", root=tmp_path)
    prepare("digits", out_root=tmp_path)
    with open(target / "data.npz", "r+b") as f:  # a corrupted array file fails the checksum
        f.seek(200)
        f.write(b"\xff" * 8)
    prepare("digits", out_root=tmp_path)
    assert load_dataset("digits", root=tmp_path)[0].shape == (1497, 8, 8, 1)


@pytest.mark.slow
def test_cli_subprocess_up_to_date(digits_root: Path) -> None:
    run = [sys.executable, "-m", "pipelines.fetch", "digits", "--out", str(digits_root)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "up to date" in done.stderr


# ---------------------------------------------------------------- issue 22 (items 4, 5, 8; low)
def _folder(src: Path, n: int = 10, value: int = 100) -> Path:
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((12, 12), value + i, np.uint8), mode="L").save(src / f"{i}.png")
    return src


def test_image_folder_refuses_another_folders_or_sizes_artefact(tmp_path: Path) -> None:
    """One prepared slot holds one folder at one size; a reader expecting another (a run
    trained on folder a, evaluated after folder b was prepared) is refused, not fed b."""
    a, b, out = _folder(tmp_path / "a", value=10), _folder(tmp_path / "b", value=200), tmp_path
    train_a = load_prepared("image_folder", tmp_path / "raw", out / "prepared", a, 8)[0][0]
    prepare("image_folder", out_root=out / "prepared", source=b, size=8)  # another folder
    with pytest.raises(DatasetError, match="built from .*'source': '.*/b'"):
        load_splits("image_folder", root=out / "prepared",
                    expect=data_key("image_folder", tmp_path / "raw", a, 8))
    prepare("image_folder", out_root=out / "prepared", source=a, size=16)  # another size
    with pytest.raises(DatasetError, match="'size': 16"):
        load_splits("image_folder", root=out / "prepared", image_size=8,
                    expect=data_key("image_folder", tmp_path / "raw", a, 8))
    again = load_prepared("image_folder", tmp_path / "raw", out / "prepared", a, 8)[0][0]
    assert torch.equal(train_a, again)  # rebuilt from a at 8 under the lock, then read


def test_image_folder_scales_16_bit_grey_and_composites_alpha(tmp_path: Path) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    for i in range(9):  # 16-bit grey at about 1/4 of full scale: 16384 -> 64, not 255
        Image.fromarray(np.full((10, 10), 16384 + i, np.uint16)).save(src / f"{i}.png")
    (x, _), (xt, _) = load_splits("image_folder", root=prepare(
        "image_folder", source=src, out_root=out, size=4).parent)
    assert Image.open(src / "0.png").mode.startswith("I")
    assert torch.allclose(torch.cat([x, xt]), torch.tensor(64 / 255), atol=1 / 255)
    # a fully transparent red pixel is white on the page, not red
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(src / "clear.png")
    x, _ = load_dataset("image_folder", "train", root=prepare(
        "image_folder", source=src, out_root=out, size=4).parent)
    xt, _ = load_dataset("image_folder", "test", root=out)
    every = torch.cat([x, xt])
    assert every.shape[-1] == 3 and (every.amax((1, 2, 3)) == 1.0).sum() == 1  # the white one


def test_image_folder_refuses_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    src = _folder(tmp_path / "photos")
    outside = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(outside)
    (src / "link.png").symlink_to(outside)
    with pytest.raises(DatasetError, match="link.png is a link to .*secret.png, outside"):
        prepare("image_folder", source=src, out_root=tmp_path / "out", size=4)


def test_image_folder_holds_one_full_size_image_at_a_time(tmp_path: Path) -> None:
    """Eight 2000x2000 RGB photos (12 MB each as pixels): preparing them at 16x16 must not
    hold all of them (the peak RSS grows by less than 3 photos' worth)."""
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(8):
        Image.new("RGB", (2000, 2000), (i * 30, 80, 120)).save(src / f"{i}.png")
    code = ("import resource, sys; from gon.app.data.datasets import prepare; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"prepare('image_folder', source={str(src)!r}, out_root={str(tmp_path / 'o')!r}, "
            "size=16); print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) "
            "/ 1024)")
    grew_mb = float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True).stdout)
    assert grew_mb < 3 * 12, f"peak RSS grew by {grew_mb:.0f} MB"


def test_mnist_with_more_labels_than_images_is_refused(tmp_path: Path) -> None:
    raw_dir = tmp_path / "raw" / "MNIST" / "raw"
    _write_mnist(raw_dir, _mnist_images(np.random.default_rng(0)))
    labels = raw_dir / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx(np.arange(7) % 10)))  # 6 images, 7 labels
    with pytest.raises(DatasetError, match="6 images but 7 labels"):
        prepare("mnist", tmp_path / "raw", tmp_path / "out")


def test_a_damaged_artefact_names_its_checksum_and_dvc_checkout(tmp_path: Path) -> None:
    raw_dir = tmp_path / "raw" / "MNIST" / "raw"
    _write_mnist(raw_dir, _mnist_images(np.random.default_rng(0)))
    target = prepare("mnist", tmp_path / "raw", tmp_path / "out")
    shutil.rmtree(raw_dir)  # the raw cache is gone (a DVC checkout elsewhere): no rebuild
    data = target / "data.npz"
    data.write_bytes(data.read_bytes()[:-8] + b"\0" * 8)
    for call in (lambda: load_dataset("mnist", root=tmp_path / "out"),
                 lambda: prepare("mnist", tmp_path / "raw", tmp_path / "out")):
        with pytest.raises(DatasetError, match=r"sha256 in its meta.json .*dvc checkout"):
            call()
