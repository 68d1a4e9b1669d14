"""Backbones: headless CNNs that expose named feature maps ("taps") at strides 2 to 32.

`backbone(name)` builds any zoo CNN registered for the "backbone" task and the keras.applications
families below. The result is a functional Keras model with one input, "image", and a dict of
outputs named by pyramid level, keras-hub's convention: P1 (stride 2), P2 (4), P3 (8), P4 (16)
and P5 (32), as far as the net goes (a CIFAR ResNet stops at P2, ConvNeXt starts at P2).
Each tap is the deepest layer at its resolution, found from the graph rather than listed by
hand; the tests pin the known names (MobileNetV2's block_1_expand_relu, ResNet's conv2_block3_out,
...). Classification, segmentation and face heads all start from these taps.

keras.applications backbones take [0, 255] RGB pixels: each family's own preprocessing is the
first part of the model. zoo's own backbones take what their recipe's `data.normalization`
gives them, as every zoo model does.
"""

from __future__ import annotations

import os

import keras

from zoo import registry
from zoo.backbones import apps
from zoo.backbones.apps import KERAS, KerasBackbone, has_builtin_preprocessing
from zoo.backbones.freezing import set_trainable, trainable_layers
from zoo.backbones.taps import LEVELS, deepest, is_head, tap_filter, taps
from zoo.backbones.weights import is_saved_model, leaves, load_source, sublayers, transfer
from zoo.errors import ZooError, suggest

__all__ = [
    "KERAS",
    "LEVELS",
    "KerasBackbone",
    "backbone",
    "deepest",
    "has_builtin_preprocessing",
    "is_head",
    "is_saved_model",
    "leaves",
    "load_source",
    "names",
    "set_trainable",
    "sublayers",
    "tap_filter",
    "taps",
    "trainable_layers",
    "transfer",
]


def names() -> list[str]:
    """Every backbone name: zoo's CNNs and the keras.applications families."""
    return sorted(set(registry.list_models(task="backbone")) | set(KERAS))


def backbone(name: str, input_shape=None, weights=None, **options) -> keras.Model:
    """A headless `name` whose outputs are its feature maps by pyramid level (P1..P5).

    Args:
        name: a zoo CNN (`zoo.list_models(task="backbone")`) or a keras.applications family
            (`zoo.backbones.KERAS`: mobilenet_v2, efficientnet_b0, convnext_tiny, ...).
        input_shape: (height, width, channels); None dimensions for any size. Default: the
            net's usual input (224x224x3 for ImageNet nets, 32x32x3 for CIFAR ResNets).
        weights: None (or "none") for random initialization; "imagenet" (keras.applications
            families; downloads once, needs a network); a local weights file (`.h5` /
            `.weights.h5`, as the builder would load it); or a zoo run directory or `.keras`
            file (or a loaded keras.Model), from which every backbone layer is taken by name
            (the old head is dropped).
        **options: the builder's own options (`stem` for ResNets, `alpha` for MobileNets, ...).

    Example:

    ```python
    features = zoo.backbone("mobilenet_v2", input_shape=(160, 160, 3))
    features.output["P4"].shape  # (None, 10, 10, 576)
    ```
    """
    if isinstance(weights, keras.Model):
        transfer_from, build_weights = weights, None
    elif weights is None or isinstance(weights, str | os.PathLike):
        weights = None if weights is None or str(weights) == "none" else str(weights)
        transfer_from = weights if weights and is_saved_model(weights) else None
        build_weights = None if transfer_from else weights
    else:
        raise ZooError(
            f"backbone {name}: weights must be None, 'imagenet', a path or a keras.Model, "
            f"received {weights!r}"
        )
    if build_weights not in (None, "imagenet") and not os.path.isfile(build_weights):
        raise ZooError(f"backbone {name}: weights file {build_weights!r} does not exist")

    if name in KERAS:
        net = apps.build(name, input_shape, build_weights, options)
    else:
        _check_zoo_backbone(name)
        try:
            net = registry.get(
                name, include_top=False, input_shape=input_shape, weights=build_weights, **options
            )
        except ZooError as e:
            raise ZooError(f"backbone {e}") from e

    found = taps(net, tap_filter(name), rebuild=lambda shape: _canonical(name, shape, options))
    model = keras.Model(
        net.inputs[0],
        {level: net.get_layer(layer).output for level, layer in found.items()},
        name=name,
    )
    if transfer_from is not None:
        transfer(model, transfer_from, what=f"backbone {name}")
    return model


def _check_zoo_backbone(name: str) -> None:
    if name not in registry.list_models():
        raise suggest(name, names(), what="backbone", hint="`zoo list backbones` shows them all")
    if name not in registry.list_models(task="backbone"):
        raise ZooError(
            f"{name} cannot be a backbone (its feature maps are not tapped); "
            f"backbones: {', '.join(names())}"
        )


def _canonical(name: str, shape, options: dict) -> keras.Model:
    """The net at a fixed size (randomly initialized), to find taps of a variable-size one."""
    canonical = (256, 256, shape[-1] if shape and shape[-1] else 3)
    if name in KERAS:
        return apps.build(name, canonical, None, options)
    return registry.get(name, include_top=False, input_shape=canonical, **options)
