"""The `digits` source: scikit-learn's bundled 8x8 digits (1,797 images), no download needed."""

from __future__ import annotations

import numpy as np

from zoo.data.common import Source, labelled_arrays


def load_digits():
    """The digits as 0-255 pixels (N, 8, 8, 1) and their labels."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int64)


def load(cfg, target: str, seed: int) -> Source:
    return labelled_arrays(cfg, load_digits(), None, [str(d) for d in range(10)], seed)
