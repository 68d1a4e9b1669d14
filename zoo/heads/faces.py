"""The embedding head of face recognition: features to a unit vector, as insightface's "E"
output (BatchNorm, dropout, flatten, Dense, BatchNorm) with a pooling option for small data."""

from __future__ import annotations

import keras
from keras import layers

from zoo.errors import ZooError

POOLINGS = ("avg", "max", "flatten")


def embedding(
    backbone: keras.Model,
    dim: int = 128,
    *,
    pooling: str = "avg",
    dropout: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """An embedding model over `backbone`'s coarsest tap: its output is L2-normalised, so the
    dot product of two outputs is their cosine similarity.

    The head's layers are named `head_*`; the last, `head_embedding`, normalises in float32.

    Args:
        backbone: a model from `zoo.backbone`.
        dim: the embedding's size.
        pooling: "avg" or "max" global pooling of the feature map, or "flatten" (insightface's
            "E": the map is batch-normalised and flattened, keeping where each feature is).
        dropout: dropout rate before the Dense layer (0 for none).
        name: the model's name (default: the backbone's).

    Example:

    ```python
    model = zoo.heads.embedding(zoo.backbone("resnet18", input_shape=(112, 112, 3)), 128)
    ```
    """
    if not isinstance(dim, int) or dim < 1:
        raise ZooError(f"embedding head: dim must be a positive integer, got {dim!r}")
    if pooling not in POOLINGS:
        raise ZooError(
            f"embedding head: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"
        )
    if not 0 <= dropout < 1:
        raise ZooError(f"embedding head: dropout must be in [0, 1), got {dropout!r}")
    from zoo.backbones import deepest

    x = deepest(backbone)
    if pooling == "flatten":
        x = layers.BatchNormalization(name="head_features_bn")(x)
        x = layers.Flatten(name="head_flatten")(x)
    else:
        pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
        x = pool(name="head_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(dim, use_bias=False, name="head_dense")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.UnitNormalization(axis=-1, dtype="float32", name="head_embedding")(x)
    return keras.Model(backbone.input, x, name=name or backbone.name)
