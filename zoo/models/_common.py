"""What every builder shares: input checks, the keras.applications-style top, weight loading."""

from __future__ import annotations

import os

import keras
from keras import layers

from zoo.errors import ZooError

POOLINGS = (None, "avg", "max")


def model_input(name: str, input_shape, default: tuple, min_size: int, fixed_size: bool):
    """Checks `input_shape` (H, W, C) and returns a `keras.Input` for it.

    `min_size` is the smallest height and width the net supports; `fixed_size` says that the
    top needs a known height and width (a Flatten), so `None` dimensions are refused.
    """
    shape = tuple(default if input_shape is None else input_shape)
    if len(shape) != 3:
        raise ZooError(f"{name}: input_shape must be (height, width, channels), received {shape}")
    *hw, channels = shape
    if channels is None or int(channels) < 1:
        raise ZooError(f"{name}: input_shape needs a positive channel count, received {shape}")
    for d in hw:
        if d is None:
            if fixed_size:
                raise ZooError(
                    f"{name}: this top needs a fixed input size, received {shape}; give height "
                    "and width, or use include_top=False with pooling"
                )
        elif int(d) < min_size:
            raise ZooError(
                f"{name}: input height and width must be at least {min_size}, received {shape}"
            )
    return keras.Input(shape=shape, name="image")


def check_top(name: str, include_top: bool, pooling, classes) -> None:
    if pooling not in POOLINGS:
        raise ZooError(f"{name}: pooling must be one of None, 'avg', 'max', received {pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ZooError(f"{name}: classes must be a positive integer, received {classes!r}")


def pool(x, pooling):
    """The keras.applications `pooling` argument: None keeps the feature map."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def predictions(x, classes: int, classifier_activation):
    return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def finish(inputs, outputs, *, name: str, weights):
    """Builds the functional model and loads `weights` (None or a local file)."""
    model = keras.Model(inputs, outputs, name=name)
    if weights is None:
        return model
    if not isinstance(weights, str | os.PathLike):
        raise ZooError(
            f"{name}: weights must be None or a path to a local file, received {weights!r}"
        )
    if str(weights) == "imagenet":
        raise ZooError(
            f"{name}: zoo has no published 'imagenet' weights for its own models; pass "
            "weights=None, or the path of a .weights.h5 or .keras file saved from this architecture"
        )
    if not os.path.isfile(weights):
        raise ZooError(f"{name}: weights file {str(weights)!r} does not exist")
    try:
        model.load_weights(weights)
    except ValueError as e:
        raise ZooError(f"{name}: could not load weights from {str(weights)!r}: {e}") from e
    return model
