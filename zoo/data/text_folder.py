"""The `text_folder` source: one text file per example in a folder per class, `train/<class>/`
and `test/<class>/` (the aclImdb layout), or `<class>/` split by `data.validation_split`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data import text
from zoo.data.common import Source
from zoo.data.image_folder import folder_layout
from zoo.errors import ZooError


def _read(root: Path, names: list[str], encoding: str) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for index, name in enumerate(names):
        folder = root / name
        found = sorted(p for p in folder.rglob("*.txt") if p.is_file()) if folder.is_dir() else []
        texts += [text.decode(p.read_bytes(), p, encoding) for p in found]
        labels += [index] * len(found)
    if not texts:
        raise ZooError(f"{root} holds no .txt files in its class folders ({', '.join(names)})")
    return texts, np.asarray(labels, dtype=np.int64)


def load(cfg, target: str, seed: int) -> Source:
    train_root, eval_root, names = folder_layout(cfg.path, None, cfg.train_split, cfg.eval_split)
    train = _read(train_root, names, cfg.encoding)
    test = _read(eval_root, names, cfg.encoding) if eval_root is not None else None
    return text.source(cfg, train, test, names, seed)
