"""The classification head: pooling, optional hidden layers and dropout, then the classifier."""

from __future__ import annotations

import keras
from keras import layers

from zoo.errors import ZooError


def classification(
    backbone: keras.Model,
    classes: int,
    *,
    pooling: str = "avg",
    hidden=(),
    dropout: float = 0.0,
    activation="softmax",
    name: str | None = None,
) -> keras.Model:
    """A classifier over `backbone`'s coarsest tap, as one flat functional model.

    The head's layers are named `head_*` and `predictions`; the backbone's keep their names,
    so weights move between classifiers of any class count by layer name.

    Args:
        backbone: a model from `zoo.backbone`.
        classes: number of classes.
        pooling: "avg" or "max" global pooling of the feature map.
        hidden: units of hidden Dense+ReLU layers before the classifier (none by default).
        dropout: dropout rate before each Dense layer (0 for none).
        activation: of the classifier ("softmax", or None for logits).
        name: the model's name (default: the backbone's).

    Example:

    ```python
    model = zoo.heads.classification(zoo.backbone("mobilenet_v2"), 5, dropout=0.2)
    ```
    """
    if not isinstance(classes, int) or classes < 1:
        raise ZooError(f"classification head: classes must be a positive integer, got {classes!r}")
    if pooling not in ("avg", "max"):
        raise ZooError(f"classification head: pooling must be 'avg' or 'max', got {pooling!r}")
    if not 0 <= dropout < 1:
        raise ZooError(f"classification head: dropout must be in [0, 1), got {dropout!r}")
    from zoo.backbones import deepest

    x = deepest(backbone)
    pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
    x = pool(name="head_pool")(x)
    for i, units in enumerate(hidden, start=1):
        if dropout:
            x = layers.Dropout(dropout, name=f"head_dropout{i}")(x)
        x = layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(classes, activation=activation, name="predictions")(x)
    return keras.Model(backbone.input, x, name=name or backbone.name)
