"""keras.applications families as zoo models: a zoo backbone plus zoo's classification head.

Unlike zoo's own nets, these have published ImageNet weights (`weights="imagenet"`, downloaded
by keras.applications on first use) and take [0, 255] RGB pixels, their family's preprocessing
being part of the model.
"""

from __future__ import annotations

import keras

from zoo.backbones import KERAS, backbone, deepest
from zoo.errors import ZooError
from zoo.heads import classification
from zoo.models._common import check_top, pool
from zoo.registry import register

DOC = """{constructor} from keras.applications, with zoo's classification head.

    Args:
        include_top: whether to end in the classification head (global pooling, optional
            hidden layers and dropout, classifier); False gives the coarsest feature map.
        weights: None, "imagenet" (downloaded once; needs a network), a local weights file
            (keras.applications' no-top `.h5`), or a zoo run directory / `.keras` file whose
            layers of the same names seed this net (its head is left out).
        input_shape: (height, width, 3), None dimensions for any size; default {default}.
        pooling: with `include_top=False`: None, "avg" or "max"; with the head: "avg"
            (default) or "max".
        classes: number of classes.
        classifier_activation: activation of the output layer (None for logits).
        dropout: dropout rate before each Dense layer of the head.
        hidden: units of hidden Dense+ReLU layers in the head.
        **options: passed to keras.applications.{constructor} (alpha, minimalistic, ...).

    Example:

    ```python
    model = zoo.get("{name}", classes=5, weights="imagenet")
    ```
    """


def _variant(name: str):
    spec = KERAS[name]
    default = (spec.input_size, spec.input_size, 3)

    def build(
        *,
        include_top: bool = True,
        weights=None,
        input_shape=None,
        pooling=None,
        classes: int = 1000,
        classifier_activation="softmax",
        dropout: float = 0.0,
        hidden=(),
        **options,
    ):
        check_top(name, include_top, pooling, classes)
        if include_top and weights == "imagenet" and classes == 1000:
            raise ZooError(
                f"{name}: weights='imagenet' loads the ImageNet backbone; zoo's head over it is "
                "new, so 1000 classes would not be ImageNet's classifier. For that use "
                f"keras.applications.{spec.constructor}(weights='imagenet'); to fine-tune, "
                "pass classes=<your class count>; for features, include_top=False"
            )
        features = backbone(name, input_shape=input_shape or default, weights=weights, **options)
        if include_top:
            return classification(
                features,
                classes,
                pooling=pooling or "avg",
                hidden=tuple(hidden),
                dropout=dropout,
                activation=classifier_activation,
                name=name,
            )
        return keras.Model(features.inputs, pool(deepest(features), pooling), name=name)

    build.__name__ = name
    build.__doc__ = DOC.format(constructor=spec.constructor, default=default, name=name)
    tasks = ("classification", "backbone")
    register(name, family=spec.family, tasks=tasks, input_shape=default, paper=spec.paper)(build)


for _name in KERAS:
    _variant(_name)
