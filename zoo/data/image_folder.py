"""The `image_folder` source: one sub-folder of images per class, `train/` and `test/` splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.data.common import (
    AUTOTUNE,
    IMAGE_FORMATS,
    Examples,
    Source,
    check_images,
    identity_split,
    image_decoder,
    select,
    stratified_split,
    validation_name,
)
from zoo.errors import ZooError


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
    return train, test, list(classes)


def _examples(files, labels, channels) -> Examples:
    decode = image_decoder(files, channels)
    ds = tf.data.Dataset.from_tensor_slices((files, labels)).map(
        lambda path, label: {"images": decode(path), "labels": label},
        num_parallel_calls=AUTOTUNE,
    )
    return Examples(ds, len(files))


def _files(root, names, max_per_class, seed, skip_corrupt=False, skipped=None):
    """The image files of the classes `names` under `root` and their labels, each file checked
    (see common.check_images); the ones skipped are appended to `skipped`."""
    files, labels = list_images(root, names)
    readable = check_images(files, skip_corrupt)
    if skipped is not None:
        gone = set(range(len(files))) - set(readable)
        skipped.extend(files[k] for k in sorted(gone))
    files, labels = [files[k] for k in readable], labels[readable]
    index, labels = select(np.arange(len(labels)), labels, names, None, max_per_class, seed)[:2]
    if not len(index):
        raise ZooError(
            f"{root} holds no image files of the classes {', '.join(names)} "
            f"({', '.join(sorted(IMAGE_FORMATS))})"
        )
    return [files[i] for i in index], labels


def load(cfg, target: str, seed: int) -> Source:
    train_root, eval_root, names = folder_layout(
        cfg.path, cfg.classes, cfg.train_split, cfg.eval_split
    )
    if cfg.eval_identities is not None:
        return _by_identity(cfg, train_root, names, seed)
    skipped = []
    files, labels = _files(train_root, names, cfg.max_per_class, seed, cfg.skip_corrupt, skipped)
    if eval_root is not None:
        eval_files, eval_labels = _files(
            eval_root, names, cfg.max_per_class, seed, cfg.skip_corrupt, skipped
        )
        eval_name = cfg.eval_split
    else:
        train_idx, eval_idx = stratified_split(labels, cfg.validation_split, seed, names)
        eval_files, eval_labels = [files[i] for i in eval_idx], labels[eval_idx]
        files, labels = [files[i] for i in train_idx], labels[train_idx]
        eval_name = validation_name(cfg.validation_split)
    return Source(
        _examples(files, labels, cfg.channels),
        _examples(eval_files, eval_labels, cfg.channels),
        names,
        eval_name,
        skipped=tuple(skipped),
    )


def identity_files(cfg, root: Path, names: list[str], seed: int, skipped=None):
    """((files, labels) of training, (files, labels) of eval, training identities, eval
    identities) split by `data.eval_identities`: no identity, so no file, is on both sides.
    An identity folder without image files is an error (it could be neither trained on nor
    verified); unreadable files skipped (data.skip_corrupt) are appended to `skipped`."""
    counts = np.bincount(list_images(root, names)[1], minlength=len(names))
    empty = [name for name, count in zip(names, counts, strict=True) if not count]
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise ZooError(
            f"{len(empty)} identity folder(s) in {root} hold no image files: {shown}. Add images "
            f"({', '.join(sorted(IMAGE_FORMATS))}) or move the folder(s) out of data.path"
        )
    train_names, eval_names = identity_split(names, cfg.eval_identities, seed)
    train = _files(root, train_names, cfg.max_per_class, seed, cfg.skip_corrupt, skipped)
    held_out = _files(root, eval_names, cfg.max_per_class, seed, cfg.skip_corrupt, skipped)
    return train, held_out, train_names, eval_names


def _by_identity(cfg, root: Path, names: list[str], seed: int) -> Source:
    skipped = []
    train, held_out, train_names, eval_names = identity_files(cfg, root, names, seed, skipped)
    return Source(
        _examples(*train, cfg.channels),
        _examples(*held_out, cfg.channels),
        train_names,
        f"{len(eval_names)} held-out identities",
        eval_class_names=eval_names,
        skipped=tuple(skipped),
    )
