"""ResNets (He, Zhang, Ren and Sun 2015, "Deep Residual Learning for Image Recognition").

Two stems share one graph function: the ImageNet nets (7x7 stem, four stages, basic or bottleneck
blocks) and the CIFAR nets of section 4.2 (3x3 stem, three stages of 16/32/64 filters, 6n+2
layers, parameter-free "option A" shortcuts). Convolutions have no bias before BatchNorm
(torchvision convention); the bottleneck strides in its 3x3 convolution ("ResNet v1.5").
"""

from __future__ import annotations

from keras import layers

from zoo.errors import ZooError
from zoo.layers import BatchNorm, ShortcutPad
from zoo.models._common import check_top, finish, model_input, pool, predictions
from zoo.registry import register

PAPER = "He et al. 2015, Deep Residual Learning for Image Recognition (arXiv:1512.03385)"
BN = {"momentum": 0.9, "epsilon": 1e-5}


def _conv_bn(x, filters, kernel, strides, name, relu=True):
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = BatchNorm(**BN, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _shortcut(x, filters, strides, name, kind):
    if strides == 1 and x.shape[-1] == filters:
        return x
    if kind == "pad":
        return ShortcutPad(filters, strides, name=f"{name}_0_pad")(x)
    return _conv_bn(x, filters, 1, strides, f"{name}_0", relu=False)


def _basic(x, filters, strides, name, shortcut):
    s = _shortcut(x, filters, strides, name, shortcut)
    x = _conv_bn(x, filters, 3, strides, f"{name}_1")
    x = _conv_bn(x, filters, 3, 1, f"{name}_2", relu=False)
    x = layers.Add(name=f"{name}_add")([s, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _bottleneck(x, filters, strides, name, shortcut):
    s = _shortcut(x, 4 * filters, strides, name, shortcut)
    x = _conv_bn(x, filters, 1, 1, f"{name}_1")
    x = _conv_bn(x, filters, 3, strides, f"{name}_2")
    x = _conv_bn(x, 4 * filters, 1, 1, f"{name}_3", relu=False)
    x = layers.Add(name=f"{name}_add")([s, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _resnet(
    *,
    block: str,
    depths: tuple[int, ...],
    stem: str,
    include_top: bool,
    weights,
    input_shape,
    pooling,
    classes: int,
    classifier_activation,
    shortcut: str,
    name: str,
    width: int = 1,
):
    check_top(name, include_top, pooling, classes)
    if shortcut not in ("pad", "projection"):
        raise ZooError(f"{name}: shortcut must be 'pad' or 'projection', received {shortcut!r}")
    if stem == "cifar":
        default, widths = (32, 32, 3), (16 * width, 32 * width, 64 * width)
    else:
        default, widths = (224, 224, 3), (64, 128, 256, 512)
    inputs = model_input(name, input_shape, default, min_size=8, fixed_size=False)
    if stem == "imagenet":
        x = _conv_bn(inputs, 64, 7, 2, "conv1")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    else:
        x = _conv_bn(inputs, widths[0], 3, 1, "conv1")
    unit = _basic if block == "basic" else _bottleneck
    for stage, (depth, filters) in enumerate(zip(depths, widths, strict=True), start=2):
        for i in range(1, depth + 1):
            strides = 2 if i == 1 and stage > 2 else 1
            x = unit(x, filters, strides, f"conv{stage}_block{i}", shortcut)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = predictions(x, classes, classifier_activation)
    else:
        x = pool(x, pooling)
    return finish(inputs, x, name=name, weights=weights)


DOC = """{title}.

    {note}

    Args:
        include_top: whether to end in global average pooling and the classifier.
        weights: None or the path of a local weights file.
        input_shape: (height, width, channels), any size from 8x8 (None for variable size);
            default {default}.
        pooling: None, "avg" or "max" when `include_top=False`.
        classes: number of classes.
        classifier_activation: activation of the output layer (None for logits).
        shortcut: "{shortcut}" (the paper's choice here) or "{other}" for shortcuts that change
            shape: "pad" subsamples and zero-pads channels, "projection" is a 1x1 conv + BN.
        stem: {stem_doc}
        width: the CIFAR nets' filters times `width` in every stage (Wide ResNet's k,
            Zagoruyko & Komodakis 2016); 1 for the paper's nets, and for the ImageNet nets.

    Example:

    ```python
    model = zoo.get("{name}", input_shape={example}, classes=10)
    ```
    """


def _variant(name, *, block, depths, stem):
    imagenet = stem == "imagenet"
    default = (224, 224, 3) if imagenet else (32, 32, 3)
    default_shortcut = "projection" if imagenet else "pad"

    def build(
        *,
        include_top: bool = True,
        weights=None,
        input_shape=None,
        pooling=None,
        classes: int = 1000 if imagenet else 10,
        classifier_activation="softmax",
        shortcut: str = default_shortcut,
        stem: str = stem,
        width: int = 1,
        name: str = name,
    ):
        allowed = ("imagenet", "small") if imagenet else ("cifar",)
        if stem not in allowed:
            raise ZooError(f"{name}: stem must be one of {allowed}, received {stem!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ZooError(f"{name}: width must be a positive integer, received {width!r}")
        if imagenet and width != 1:
            raise ZooError(f"{name}: width is for the CIFAR nets (16, 32, 64 filters); leave it 1")
        return _resnet(
            block=block,
            depths=depths,
            stem=stem,
            include_top=include_top,
            weights=weights,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            shortcut=shortcut,
            name=name,
            width=width,
        )

    layers_count = (3 if block == "bottleneck" else 2) * sum(depths) + 2
    build.__name__ = name
    build.__doc__ = DOC.format(
        title=(
            f"ResNet-{layers_count}, the ImageNet net: {block} blocks {depths}"
            if imagenet
            else f"ResNet-{layers_count} for 32x32 images: CIFAR, 6n+2 layers with n={depths[0]}"
        ),
        note=(
            "Section 3.3 and table 1 of the paper, with the 7x7 stem for ImageNet-sized images."
            if imagenet
            else "Section 4.2 of the paper: three stages of 16, 32 and 64 filters."
        ),
        default=default,
        shortcut=default_shortcut,
        other="pad" if imagenet else "projection",
        stem_doc=(
            '"imagenet" (7x7/2 convolution and 3x3/2 max pool) or "small" (one 3x3/1 '
            "convolution, no pool: the usual adaptation to 32x32 images)"
            if imagenet
            else '"cifar", fixed for this family (3x3/1 convolution, 16 filters)'
        ),
        name=name,
        example="(224, 224, 3)" if imagenet else "(32, 32, 3)",
    )
    tasks = ("classification", "backbone")
    register(name, family="resnet", tasks=tasks, input_shape=default, paper=PAPER)(build)


_variant("resnet18", block="basic", depths=(2, 2, 2, 2), stem="imagenet")
_variant("resnet34", block="basic", depths=(3, 4, 6, 3), stem="imagenet")
_variant("resnet50", block="bottleneck", depths=(3, 4, 6, 3), stem="imagenet")
_variant("resnet101", block="bottleneck", depths=(3, 4, 23, 3), stem="imagenet")
_variant("resnet152", block="bottleneck", depths=(3, 8, 36, 3), stem="imagenet")
for _n in (3, 5, 7, 9, 18):
    _variant(f"resnet{6 * _n + 2}", block="basic", depths=(_n, _n, _n), stem="cifar")
