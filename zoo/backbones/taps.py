"""Feature taps: the layer of a net at each pyramid level P1..P5 (stride 2..32), found from the
graph, and which layers belong to a task head."""

from __future__ import annotations

import math
import re

import keras

from zoo.errors import ZooError

LEVELS = {f"P{k}": 2**k for k in range(1, 6)}


def taps(net: keras.Model, name_filter: str | None = None, rebuild=None) -> dict[str, str]:
    """Layer names of `net`'s feature taps by level: the last layer (in graph order) whose output
    has the size of the input divided by 2, 4, 8, 16 or 32 (rounded up, as "same" padding does).

    Works on a net with a known input size; for a variable-size one, `rebuild(shape)` must
    return the same net at a fixed size. Heads (layers after the deepest tap) are ignored, so
    this also finds the backbone inside a whole classifier.
    """
    height, width = net.inputs[0].shape[1:3]
    if height is None or width is None:
        if rebuild is None:
            raise ZooError(f"{net.name}: taps of a variable-size net need a fixed-size rebuild")
        return taps(rebuild(tuple(net.inputs[0].shape[1:])), name_filter)
    # From the coarsest level down, so a tiny input whose last levels share one size (8x8:
    # strides 8, 16 and 32 all give 1x1) names that size by its finest level.
    sizes = {}
    for level, stride in reversed(LEVELS.items()):
        sizes[(math.ceil(height / stride), math.ceil(width / stride))] = level
    sizes.pop((height, width), None)
    found = {}
    for layer in net.layers:
        if isinstance(layer, keras.layers.InputLayer) or is_head(layer.name):
            continue
        if name_filter and not re.search(name_filter, layer.name):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer called more than once
            continue
        if len(shape) == 4 and (shape[1], shape[2]) in sizes:
            found[sizes[(shape[1], shape[2])]] = layer.name
    if not found:
        raise ZooError(f"{net.name}: no feature map at stride 2 to 32 of its input")
    return {level: found[level] for level in LEVELS if level in found}


def is_head(layer_name: str) -> bool:
    """Whether a layer belongs to a task head (zoo.heads name theirs `head_*`, `predictions`)."""
    return layer_name.startswith("head_") or layer_name in ("predictions", "probabilities")


def tap_filter(name: str | None) -> str | None:
    """The name filter `taps` needs for backbone or model `name` (see KerasBackbone)."""
    from zoo.backbones.apps import KERAS

    return KERAS[name].tap_filter if name in KERAS else None


def deepest(model: keras.Model):
    """The coarsest feature map of a backbone built by `backbone()`."""
    outputs = model.output
    return outputs[[level for level in LEVELS if level in outputs][-1]]
