"""Segmentation decoders over a backbone's feature taps: U-Net, FPN and DeepLabV3+.

Each returns one flat functional model from the backbone's input to per-pixel class
probabilities at the input's size (`activation=None`: logits). The decoder's layers are named
`head_*` and the last one `predictions`, so fine-tuning phases tell them from the backbone's
and backbone weights move between tasks by layer name. The input's height and width must be
multiples of the coarsest stride the decoder uses (32 for most backbones: P5).
"""

from __future__ import annotations

import keras
from keras import layers

from zoo.backbones import LEVELS
from zoo.errors import ZooError
from zoo.layers import BatchNorm


def _check(backbone: keras.Model, classes: int, deepest: str, what: str) -> None:
    if not isinstance(classes, int) or classes < 2:
        raise ZooError(f"{what} decoder: classes must be an integer >= 2, got {classes!r}")
    stride = LEVELS[deepest]
    height, width = backbone.input.shape[1:3]
    for size in (height, width):
        if size is None or size % stride:
            raise ZooError(
                f"{what} decoder over {backbone.name}: the input size {height}x{width} must be "
                f"a multiple of {stride} (the stride of its {deepest} features); use e.g. "
                f"{_near(height, stride)}x{_near(width, stride)} (data.image_size)"
            )


def _near(size, stride) -> int:
    return max(stride, round((size or stride) / stride) * stride)


def _conv(x, filters, kernel, name, dilation=1, relu=True):
    x = layers.Conv2D(
        filters,
        kernel,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    # Momentum 0.9 (PyTorch's default): segmentation sets are small and batches too, and the
    # moving statistics must be usable after a few hundred steps.
    x = BatchNorm(momentum=0.9, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _finish(backbone, x, classes, activation, name):
    x = layers.Conv2D(classes, 1, activation=activation, name="predictions")(x)
    return keras.Model(backbone.input, x, name=name or backbone.name)


def unet(
    backbone: keras.Model,
    classes: int,
    *,
    decoder_filters=(256, 128, 64, 32, 16),
    activation="softmax",
    name: str | None = None,
) -> keras.Model:
    """A U-Net decoder (Ronneberger et al. 2015) over the backbone's taps, as in
    segmentation_models: from the coarsest tap, each stage doubles the resolution, joins the
    tap of that stride where the backbone has one, and applies two 3x3 conv-BN-ReLU, down to
    stride 1.

    Args:
        backbone: a model from `zoo.backbone`.
        classes: number of classes, background included.
        decoder_filters: channels of the stages, coarsest first (one per stride halving: five
            from P5; fewer stages use the last ones).
        activation: of the per-pixel classifier ("softmax", or None for logits).
        name: the model's name (default: the backbone's).

    Example:

    ```python
    model = zoo.heads.unet(zoo.backbone("resnet18", input_shape=(256, 256, 3)), 2)
    ```
    """
    taps = backbone.output
    deepest = list(taps)[-1]
    _check(backbone, classes, deepest, "unet")
    stages = int(deepest[1:])
    filters = list(decoder_filters)[-stages:]
    if len(filters) < stages:
        raise ZooError(f"unet decoder: decoder_filters needs {stages} values, got {filters}")
    x = taps[deepest]
    for level, width in zip(range(stages - 1, -1, -1), filters):
        x = layers.UpSampling2D(2, name=f"head_stage{level}_up")(x)
        skip = taps.get(f"P{level}")
        if skip is not None:
            x = layers.Concatenate(name=f"head_stage{level}_concat")([x, skip])
        x = _conv(x, width, 3, f"head_stage{level}_1")
        x = _conv(x, width, 3, f"head_stage{level}_2")
    return _finish(backbone, x, classes, activation, name)


def fpn(
    backbone: keras.Model,
    classes: int,
    *,
    pyramid_filters: int = 256,
    segmentation_filters: int = 128,
    dropout: float = 0.0,
    activation="softmax",
    name: str | None = None,
) -> keras.Model:
    """The semantic FPN of Kirillov et al. 2019 (Panoptic Feature Pyramid Networks): a
    top-down pyramid over P2..P5 (1x1 laterals, 2x upsampling and sums), each level brought to
    stride 4 by 3x3 conv-BN-ReLU and 2x upsampling steps, the levels summed, then the classifier
    at stride 4 and a 4x bilinear upsampling.

    Args:
        backbone: a model from `zoo.backbone` with taps P2..P5.
        classes: number of classes, background included.
        pyramid_filters: channels of the pyramid (256 in the paper).
        segmentation_filters: channels of the per-level branches (128 in the paper).
        dropout: spatial dropout before the classifier.
        activation: of the per-pixel classifier ("softmax", or None for logits).
        name: the model's name (default: the backbone's).
    """
    taps = backbone.output
    levels = [level for level in ("P2", "P3", "P4", "P5") if level in taps]
    if levels != ["P2", "P3", "P4", "P5"]:
        raise ZooError(
            f"fpn decoder: {backbone.name} has taps {', '.join(taps)}; the FPN needs P2 to P5 "
            "(use the unet decoder for shallower backbones)"
        )
    _check(backbone, classes, "P5", "fpn")
    pyramid = {}
    x = None
    for level in reversed(levels):
        lateral = layers.Conv2D(pyramid_filters, 1, name=f"head_lateral_{level}")(taps[level])
        if x is not None:
            up = layers.UpSampling2D(2, name=f"head_topdown_{level}_up")(x)
            lateral = layers.Add(name=f"head_topdown_{level}_add")([up, lateral])
        x = pyramid[level] = lateral
    branches = []
    for level in levels:
        y = pyramid[level]
        steps = int(level[1:]) - 2
        for k in range(max(steps, 1)):
            y = _conv(y, segmentation_filters, 3, f"head_{level}_{k + 1}")
            if steps:
                y = layers.UpSampling2D(
                    2, interpolation="bilinear", name=f"head_{level}_{k + 1}_up"
                )(y)
        branches.append(y)
    x = layers.Add(name="head_merge")(branches)
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="head_dropout")(x)
    x = layers.Conv2D(classes, 1, name="head_classifier")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="head_upsample")(x)
    x = layers.Activation(activation or "linear", name="predictions")(x)
    return keras.Model(backbone.input, x, name=name or backbone.name)


def deeplabv3plus(
    backbone: keras.Model,
    classes: int,
    *,
    filters: int = 256,
    atrous_rates=(6, 12, 18),
    low_level_filters: int = 48,
    dropout: float = 0.1,
    activation="softmax",
    name: str | None = None,
) -> keras.Model:
    """DeepLabV3+ (Chen et al. 2018): atrous spatial pyramid pooling over the backbone's
    stride-16 features (P4: output stride 16; the P5 stage is left out), upsampled 4x and joined
    with the projected stride-4 features (P2), two 3x3 conv-BN-ReLU, the classifier and a 4x
    bilinear upsampling to the input size.

    Args:
        backbone: a model from `zoo.backbone` with taps P2 and P4.
        classes: number of classes, background included.
        filters: channels of the ASPP branches and the decoder (256 in the paper).
        atrous_rates: dilation rates of the three 3x3 ASPP branches at output stride 16.
        low_level_filters: channels of the projected P2 features (48 in the paper).
        dropout: dropout after the ASPP projection.
        activation: of the per-pixel classifier ("softmax", or None for logits).
        name: the model's name (default: the backbone's).
    """
    taps = backbone.output
    if "P2" not in taps or "P4" not in taps:
        raise ZooError(
            f"deeplabv3plus decoder: {backbone.name} has taps {', '.join(taps)}; it needs P2 "
            "and P4 (use the unet decoder for shallower backbones)"
        )
    _check(backbone, classes, "P4", "deeplabv3plus")
    x = taps["P4"]
    height, width = x.shape[1:3]
    branches = [_conv(x, filters, 1, "head_aspp_0")]
    for k, rate in enumerate(atrous_rates, start=1):
        branches.append(_conv(x, filters, 3, f"head_aspp_{k}", dilation=rate))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="head_aspp_pool")(x)
    pooled = _conv(pooled, filters, 1, "head_aspp_pool_1")
    pooled = layers.UpSampling2D((height, width), name="head_aspp_pool_up")(pooled)
    x = layers.Concatenate(name="head_aspp_concat")([*branches, pooled])
    x = _conv(x, filters, 1, "head_aspp_project")
    if dropout:
        x = layers.Dropout(dropout, name="head_aspp_dropout")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="head_decoder_up")(x)
    low = _conv(taps["P2"], low_level_filters, 1, "head_low_level")
    x = layers.Concatenate(name="head_decoder_concat")([x, low])
    x = _conv(x, filters, 3, "head_decoder_1")
    x = _conv(x, filters, 3, "head_decoder_2")
    x = layers.Conv2D(classes, 1, name="head_classifier")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="head_upsample")(x)
    x = layers.Activation(activation or "linear", name="predictions")(x)
    return keras.Model(backbone.input, x, name=name or backbone.name)


DECODERS = {"unet": unet, "fpn": fpn, "deeplabv3plus": deeplabv3plus}
