"""VGG (Simonyan and Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"), configurations A, B, D and E, with or without batch normalization."""

from __future__ import annotations

from keras import layers

from zoo.layers import BatchNorm
from zoo.models._common import check_top, finish, model_input, pool, predictions
from zoo.registry import register

PAPER = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks (arXiv:1409.1556)"

# Convolutions per block; each block has 64, 128, 256, 512, 512 filters and ends in a 2x2 max pool.
DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def _vgg(
    depth: int,
    batch_norm: bool,
    *,
    include_top: bool,
    weights,
    input_shape,
    pooling,
    classes: int,
    classifier_activation,
    classifier_units,
    dropout: float,
    name: str,
):
    check_top(name, include_top, pooling, classes)
    inputs = model_input(name, input_shape, (224, 224, 3), min_size=32, fixed_size=include_top)
    x = inputs
    for block, (convs, filters) in enumerate(zip(DEPTHS[depth], WIDTHS, strict=True), start=1):
        for i in range(1, convs + 1):
            # torchvision's vgg*_bn keeps the convolution bias beside BatchNorm: so do we, so
            # that parameter counts match the reference ones.
            x = layers.Conv2D(filters, 3, padding="same", name=f"block{block}_conv{i}")(x)
            if batch_norm:
                x = BatchNorm(name=f"block{block}_bn{i}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for i, units in enumerate(classifier_units, start=1):
            x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = predictions(x, classes, classifier_activation)
    else:
        x = pool(x, pooling)
    return finish(inputs, x, name=name, weights=weights)


def _variant(depth: int, batch_norm: bool):
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")

    def build(
        *,
        include_top: bool = True,
        weights=None,
        input_shape=None,
        pooling=None,
        classes: int = 1000,
        classifier_activation="softmax",
        classifier_units=(4096, 4096),
        dropout: float = 0.5,
        name: str = name,
    ):
        return _vgg(
            depth,
            batch_norm,
            include_top=include_top,
            weights=weights,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            classifier_units=tuple(classifier_units),
            dropout=dropout,
            name=name,
        )

    build.__name__ = name
    build.__doc__ = f"""VGG-{depth}{" with batch normalization" if batch_norm else ""}.

    Args:
        include_top: whether to end in the fully connected classifier.
        weights: None or the path of a local weights file.
        input_shape: (height, width, channels), at least 32x32; default (224, 224, 3).
        pooling: None, "avg" or "max" when `include_top=False`.
        classes: number of classes.
        classifier_activation: activation of the output layer (None for logits).
        classifier_units: widths of the hidden dense layers; the paper's (4096, 4096), or a
            smaller one such as (512,) for 32x32 inputs.
        dropout: dropout rate after each hidden dense layer.

    Example:

    ```python
    model = zoo.get("{name}", input_shape=(32, 32, 3), classes=10, classifier_units=(512,))
    ```
    """
    return register(
        name,
        family="vgg",
        tasks=("classification", "backbone"),
        input_shape=(224, 224, 3),
        paper=PAPER,
    )(build)


for _depth in DEPTHS:
    for _bn in (False, True):
        _variant(_depth, _bn)
