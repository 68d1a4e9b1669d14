"""Fine-tuning: which layers a phase's `trainable` leaves trainable, and freezing the rest."""

from __future__ import annotations

import keras

from zoo.backbones.taps import LEVELS, is_head
from zoo.backbones.weights import sublayers
from zoo.errors import ZooError, suggest


def trainable_layers(net: keras.Model, trainable: str, found: dict[str, str]) -> list[str]:
    """Names of the layers of `net` that `trainable` leaves trainable, in graph order.

    `trainable`: "all"; "head" (the layers after the deepest tap); a level "P1".."P5" (the
    stage that computes that tap, and everything above it); or a layer name or name prefix
    ("conv4", "block_13", "block6a": that layer, and everything above it).
    """
    layers = [layer for layer in net.layers if not isinstance(layer, keras.layers.InputLayer)]
    order = [layer.name for layer in layers]
    if trainable == "all":
        start = 0
    elif trainable == "head":
        start = order.index(found[list(found)[-1]]) + 1
    elif trainable in LEVELS:
        if trainable not in found:
            raise ZooError(
                f"{net.name} has no tap {trainable}; its taps are {', '.join(found)} "
                f"(trainable may also be 'head', 'all' or a layer name)"
            )
        below = [level for level in found if LEVELS[level] < LEVELS[trainable]]
        start = order.index(found[below[-1]]) + 1 if below else 0
    else:
        matches = [
            i
            for i, n in enumerate(order)
            if n == trainable or n.startswith(f"{trainable}_") or n.startswith(f"{trainable}/")
        ]
        if not matches:
            raise suggest(
                trainable,
                order,
                what="layer",
                hint="trainable is 'head', 'all', a tap P1..P5, or a layer name (prefix) of "
                f"{net.name}",
            )
        start = matches[0]
    # Head layers train whenever the layers above `trainable` do, wherever the graph order puts
    # them (a decoder's projection of a shallow tap comes before the deeper backbone stages).
    return [n for k, n in enumerate(order) if k >= start or is_head(n)]


def set_trainable(net: keras.Model, trainable: str, found: dict[str, str]) -> None:
    """Freezes the layers of `net` below `trainable` (see `trainable_layers`) and unfreezes the
    rest. Frozen BatchNormalization layers then run in inference mode (Keras' rule), so their
    moving statistics stay as trained. Compile again after this."""
    keep = set(trainable_layers(net, trainable, found))
    for layer in net.layers:
        layer.trainable = layer.name in keep
        # A nested model (an ensemble's member) does not pass it on to layers that were set
        # apart (a frozen BatchNormalization): each is set.
        for inner in sublayers(layer):
            inner.trainable = layer.trainable
