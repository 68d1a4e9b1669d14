"""The `idx` source: MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST), held in memory."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from zoo.data.common import Source, labelled_arrays
from zoo.errors import ZooError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ZooError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ZooError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ZooError(f"{path}: header says shape {shape} but the file holds {body.size} values")
    return body.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def idx_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Images (N, H, W, 1) and labels of one split (`train` or `t10k`), or None if absent."""
    images = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ZooError(f"{folder}: {images.name} {x.shape} and {labels.name} {y.shape} do not pair")
    return x[..., None].astype(np.uint8), y.astype(np.int64)


def load_idx(path: str):
    """The train split and the t10k split (or None) of the IDX files in folder `path`."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ZooError(
            f"data.path {path!r} is not a folder; point it at the folder holding "
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
        )
    train = idx_split(folder, "train")
    if train is None:
        raise ZooError(
            f"{folder} has no train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz]"
        )
    return train, idx_split(folder, "t10k")


def load(cfg, target: str, seed: int) -> Source:
    train, test = load_idx(cfg.path)
    count = int(train[1].max()) + 1
    return labelled_arrays(cfg, train, test, [str(d) for d in range(count)], seed)
