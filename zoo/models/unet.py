"""U-Net (Ronneberger, Fischer and Brox 2015, "U-Net: Convolutional Networks for Biomedical
Image Segmentation").

The paper's net with "same" padding, so the output has the input's size: `depth` poolings
(4 in the paper), two 3x3 convolutions per level with `base_filters` doubling at each pooling
(64 to 1024), 2x2 up-convolutions halving them, skip connections by concatenation, and a 1x1
classifier. Optional batch normalization after each convolution (not in the paper, which
predates it; it lets short runs train at a higher rate; momentum 0.9, as PyTorch's default, so
that the moving statistics of a few hundred steps are usable) and dropout at the bottom (the paper
uses dropout at the end of the contracting path).
"""

from __future__ import annotations

from keras import layers

from zoo.errors import ZooError
from zoo.layers import BatchNorm
from zoo.models._common import finish, model_input
from zoo.registry import register

PAPER = (
    "Ronneberger et al. 2015, U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation (arXiv:1505.04597)"
)


def _block(x, filters, name, batch_norm):
    for k in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{k}",
        )(x)
        if batch_norm:
            x = BatchNorm(momentum=0.9, name=f"{name}_bn{k}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{k}")(x)
    return x


@register("unet", family="unet", tasks=("segmentation",), input_shape=(256, 256, 1), paper=PAPER)
def unet(
    *,
    input_shape=None,
    classes: int = 2,
    base_filters: int = 64,
    depth: int = 4,
    batch_norm: bool = False,
    dropout: float = 0.0,
    classifier_activation="softmax",
    weights=None,
):
    """U-Net: the paper's encoder-decoder for biomedical segmentation, output size = input size.

    Args:
        input_shape: (height, width, channels), any channel count; height and width multiples
            of 2**depth, or None for any such size. Default (256, 256, 1).
        classes: number of classes, background included (per-pixel softmax).
        base_filters: filters of the first level (64 in the paper), doubled at each pooling.
        depth: number of poolings (4 in the paper).
        batch_norm: batch normalization after each convolution (not in the paper).
        dropout: dropout rate at the bottom of the net (0 for none).
        classifier_activation: of the per-pixel classifier ("softmax", or None for logits).
        weights: None or a local weights file of this architecture.

    Example:

    ```python
    model = zoo.get("unet", input_shape=(256, 256, 1), classes=2, base_filters=32)
    ```
    """
    if not isinstance(depth, int) or not 1 <= depth <= 6:
        raise ZooError(f"unet: depth must be an integer from 1 to 6, received {depth!r}")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ZooError(f"unet: base_filters must be a positive integer, received {base_filters!r}")
    if not isinstance(classes, int) or classes < 1:
        raise ZooError(f"unet: classes must be a positive integer, received {classes!r}")
    stride = 2**depth
    inputs = model_input("unet", input_shape, (256, 256, 1), stride, fixed_size=False)
    for size in inputs.shape[1:3]:
        if size is not None and size % stride:
            raise ZooError(
                f"unet: input height and width must be multiples of {stride} (2**depth), "
                f"received {tuple(inputs.shape[1:])}; e.g. "
                f"{round(size / stride) * stride or stride}"
            )
    x, skips = inputs, []
    for level in range(depth):
        x = _block(x, base_filters * 2**level, f"enc{level + 1}", batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    x = _block(x, base_filters * 2**depth, "bottom", batch_norm)
    if dropout:
        x = layers.Dropout(dropout, name="bottom_dropout")(x)
    for level in range(depth, 0, -1):
        filters = base_filters * 2 ** (level - 1)
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_upconv")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([skips[level - 1], x])
        x = _block(x, filters, f"dec{level}", batch_norm)
    x = layers.Conv2D(classes, 1, activation=classifier_activation, name="predictions")(x)
    return finish(inputs, x, name="unet", weights=weights)
