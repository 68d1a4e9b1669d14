"""Rewrites of keras.applications nets: the same outputs from layers that every exporter
converts, and layer names that do not depend on what was built before in the process."""

from __future__ import annotations

import re

import keras


def is_depthwise(layer) -> bool:
    """A Conv2D with one group per input channel, as many filters as channels."""
    return (
        type(layer) is keras.layers.Conv2D
        and layer.groups > 1
        and layer.groups == layer.filters
        and layer.kernel.shape[-2] == 1
    )


def exportable(model: keras.Model) -> keras.Model:
    """`model` with the same weights and outputs, rebuilt from layers that every exporter
    converts: a Normalization becomes a constant Rescaling (ONNX conversion turns its mean and
    variance into extra graph inputs) and a Conv2D with one group per channel a DepthwiseConv2D
    (Keras' grouped convolution is an XLA function tf2onnx cannot convert)."""
    changed = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Normalization) or is_depthwise(layer)
    ]
    if not changed:
        return model
    import numpy as np

    def clone(layer):
        if isinstance(layer, keras.layers.Normalization):
            source = layer.adapt_mean if layer.input_mean is None else layer.mean
            mean = np.ravel(keras.ops.convert_to_numpy(source)).astype("float64")
            source = layer.adapt_variance if layer.input_mean is None else layer.variance
            variance = np.ravel(keras.ops.convert_to_numpy(source)).astype("float64")
            std = np.maximum(np.sqrt(variance), keras.backend.epsilon())
            return keras.layers.Rescaling(
                (1 / std).tolist(), offset=(-mean / std).tolist(), name=layer.name
            )
        if is_depthwise(layer):
            return keras.layers.DepthwiseConv2D(
                layer.kernel_size,
                strides=layer.strides,
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                use_bias=layer.use_bias,
                activation=layer.activation,
                name=layer.name,
            )
        return layer.__class__.from_config(layer.get_config())

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, rebuilt.layers, strict=True):
        weights = old.get_weights()
        if is_depthwise(old):  # (k, k, 1, C) -> (k, k, C, 1)
            weights = [np.transpose(weights[0], (0, 1, 3, 2)), *weights[1:]]
        elif isinstance(old, keras.layers.Normalization):
            continue
        new.set_weights(weights)
    return rebuilt


def stable_names(model: keras.Model) -> None:
    """Renames layers named by Keras' session-wide counters ("normalization_4") as a fresh session
    would name them ("normalization"), so that names, and weights taken by name, do not depend
    on what was built before in the process."""
    from keras.src.utils.naming import to_snake_case

    taken = {layer.name for layer in model.layers}
    counts: dict[str, int] = {}
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        if not re.fullmatch(rf"{base}(_\d+)?", layer.name):
            continue
        n = counts.get(base, 0)
        counts[base] = n + 1
        stable = base if n == 0 else f"{base}_{n}"
        if stable != layer.name and stable not in taken:
            taken.discard(layer.name)
            layer.name = stable
            taken.add(stable)
