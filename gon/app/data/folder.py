"""image_folder's images: the PNG/JPEG files under a folder (none reached through a symlink that
leaves it), each read, normalised and resized on its own, so preparing holds one full-size
image at a time.

    >>> x = read_folder(Path("photos"), 64)   # uint8 (N, 64, 64, 1 or 3)

Normalising: 16-bit grey is scaled to 8 bits (not clipped), transparency is composited on
white, a palette image becomes RGB or grey; the set is grey (1 channel) only if every image is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "La")


class FolderError(RuntimeError):
    """The folder has no usable images, or one of them cannot be read or leaves the folder."""


def folder_files(source: Path) -> list[Path]:
    """The image files under `source`, sorted; refuses a symlink that points out of it."""
    root = source.resolve()
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for p in files:
        if not p.resolve().is_relative_to(root):
            raise FolderError(f"image_folder: {p} is a link to {p.resolve()}, outside {source}; "
                              "copy the file in or remove the link")
    if not files:
        raise FolderError(f"image_folder: no PNG/JPEG files under {source}; pass --source DIR")
    return files


def _normalised(img: Any) -> Any:
    """A PIL image as mode L (grey) or RGB: 16-bit grey scaled, alpha composited on white."""
    from PIL import Image

    if img.mode.startswith("I"):  # 16-bit (or 32-bit int) grey: scale 0..65535 to 0..255
        wide = np.asarray(img, dtype=np.float64)  # (H, W)
        return Image.fromarray(np.round(wide * (255 / 65535)).clip(0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        grey = img.mode in ("LA", "La")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
        return img.convert("L" if grey else "RGB")
    return img if img.mode in ("L", "RGB") else img.convert("L" if img.mode == "1" else "RGB")


def read_folder(source: Path, size: int) -> np.ndarray:
    """Every image under `source`, centre-cropped and resized to (size, size) as it is read:
    uint8 (N, size, size, 1) if all are grey, else (N, size, size, 3)."""
    from PIL import Image, ImageOps

    small = []  # (size, size) or (size, size, 3) uint8 each
    for path in folder_files(source):
        try:
            with Image.open(path) as img:
                small.append(np.asarray(ImageOps.fit(_normalised(img), (size, size))))
        except Exception as exc:
            raise FolderError(f"image_folder: cannot read image {path}: {exc}") from exc
    if all(a.ndim == 2 for a in small):
        return np.stack(small)[..., None]  # (N, S, S, 1)
    return np.stack([np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in small])
