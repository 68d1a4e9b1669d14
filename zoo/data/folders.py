"""The `image_folder` source: one sub-folder of images per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.errors import ZooError

TF_FORMATS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
PIL_FORMATS = {".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp"}
IMAGE_FORMATS = TF_FORMATS | PIL_FORMATS


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(root: Path, class_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Sorted image files under root/<class>/ and their class indices."""
    files, labels = [], []
    for index, name in enumerate(class_names):
        folder = root / name
        found = (
            sorted(
                str(p)
                for p in folder.rglob("*")
                if p.suffix.lower() in IMAGE_FORMATS and p.is_file()
            )
            if folder.is_dir()
            else []
        )
        files += found
        labels += [index] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def folder_layout(
    path: str,
    classes: list[str] | None,
    train_split: str = "train",
    eval_split: str | None = "test",
) -> tuple[Path, Path | None, list[str]]:
    """Checks `path/<train_split>/<class>/` (or `path/<class>/`) and returns the train root, the
    eval root (`path/<eval_split>/` where it exists) and the class names, in the order of
    `classes` where given, else sorted."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ZooError(
            f"data.path {path!r} is not a folder; it should hold train/<class>/ "
            "image folders (and optionally test/<class>/)"
        )
    train = root / train_split if (root / train_split).is_dir() else root
    test = root / eval_split if eval_split and (root / eval_split).is_dir() else None
    if test == train or train == root:
        test = None
    found = class_folders(train)
    if not found:
        raise ZooError(f"{train} has no class folders; expected {train}/<class>/<image files>")
    if classes is None:
        return train, test, found
    missing = [c for c in classes if c not in found]
    if missing:
        raise ZooError(
            f"data.classes names {', '.join(map(repr, missing))}, not found in "
            f"{train}; available: {', '.join(found)}"
        )
    if len(set(classes)) != len(classes):
        raise ZooError(f"data.classes lists a class twice: {classes}")
    return train, test, list(classes)


def decode_with_pil(path: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path.decode()) as im:
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr
