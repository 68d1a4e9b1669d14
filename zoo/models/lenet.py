"""LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998, "Gradient-based learning applied to document
recognition"): two convolution-subsampling stages, the C5 convolution and two dense layers."""

from __future__ import annotations

from keras import layers

from zoo.models._common import check_top, finish, model_input, pool, predictions
from zoo.registry import register

PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"


@register("lenet5", family="lenet", input_shape=(32, 32, 1), paper=PAPER)
def lenet5(
    *,
    include_top: bool = True,
    weights=None,
    input_shape=None,
    pooling=None,
    classes: int = 10,
    classifier_activation="softmax",
    activation: str = "relu",
    name: str = "lenet5",
):
    """LeNet-5: the 61,706-parameter digit classifier of the paper, for 32x32 (or 28x28) images.

    Inputs smaller than 32x32 (MNIST's 28x28) are zero-padded to 32x32, as the paper padded its
    digits, so C5 sees a 5x5 map. Larger inputs keep their size and C5 is flattened.

    Args:
        include_top: whether to end in the F6 and output layers.
        weights: None or the path of a local weights file.
        input_shape: (height, width, channels); default (32, 32, 1).
        pooling: None, "avg" or "max" over the C5 map when `include_top=False`.
        classes: number of classes of the output layer.
        classifier_activation: activation of the output layer (None for logits).
        activation: hidden activation; the paper used a scaled tanh, "relu" trains faster.

    Example:

    ```python
    model = zoo.get("lenet5", input_shape=(28, 28, 1), classes=10)
    ```
    """
    check_top(name, include_top, pooling, classes)
    inputs = model_input(name, input_shape, (32, 32, 1), min_size=20, fixed_size=include_top)
    x = inputs
    h, w = inputs.shape[1], inputs.shape[2]
    if h is not None and w is not None and (h < 32 or w < 32):
        pad_h, pad_w = max(0, 32 - h), max(0, 32 - w)
        x = layers.ZeroPadding2D(
            ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)), name="pad"
        )(x)
    x = layers.Conv2D(6, 5, activation=activation, name="c1")(x)
    x = layers.AveragePooling2D(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation=activation, name="c3")(x)
    x = layers.AveragePooling2D(2, name="s4")(x)
    x = layers.Conv2D(120, 5, activation=activation, name="c5")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(84, activation=activation, name="f6")(x)
        x = predictions(x, classes, classifier_activation)
    else:
        x = pool(x, pooling)
    return finish(inputs, x, name=name, weights=weights)
