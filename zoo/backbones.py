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

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import keras

from zoo import network, registry, rundir
from zoo.errors import ZooError, suggest

LEVELS = {f"P{k}": 2**k for k in range(1, 6)}

_RESNET = "He et al. 2015, Deep Residual Learning for Image Recognition (arXiv:1512.03385)"
_RESNET_V2 = "He et al. 2016, Identity Mappings in Deep Residual Networks (arXiv:1603.05027)"
_MOBILENET_V2 = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks"
_MOBILENET_V3 = "Howard et al. 2019, Searching for MobileNetV3 (arXiv:1905.02244)"
_EFFICIENTNET = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling (arXiv:1905.11946)"
_EFFICIENTNET_V2 = "Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training"
_DENSENET = "Huang et al. 2017, Densely Connected Convolutional Networks (arXiv:1608.06993)"
_CONVNEXT = "Liu et al. 2022, A ConvNet for the 2020s (arXiv:2201.03545)"
_VGG = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks (arXiv:1409.1556)"

# Preprocessing of each keras.applications family, on [0, 255] RGB input (what each family's
# `preprocess_input` does). "builtin": the keras.applications model has it inside already.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class KerasBackbone:
    """A keras.applications constructor wrapped as a zoo backbone."""

    constructor: str
    family: str
    preprocessing: str  # "caffe" | "tf" | "torch" | "builtin"
    input_size: int
    paper: str
    # Taps are taken only among layers whose name matches this, where the deepest layer at a
    # resolution is not the one to use (ResNet v2: the pre-activations, not the bottleneck).
    tap_filter: str | None = None


def _table() -> dict[str, KerasBackbone]:
    t = {}
    for depth in (50, 101, 152):
        # zoo's own resnet50/101/152 are other nets (no conv bias, stride in the 3x3 conv).
        t[f"keras_resnet{depth}"] = KerasBackbone(f"ResNet{depth}", "resnet", "caffe", 224, _RESNET)
        t[f"resnet{depth}_v2"] = KerasBackbone(
            f"ResNet{depth}V2",
            "resnet_v2",
            "tf",
            224,
            _RESNET_V2,
            tap_filter=r"^conv1_conv$|_preact_relu$|^post_relu$",
        )
    t["mobilenet_v2"] = KerasBackbone("MobileNetV2", "mobilenet", "tf", 224, _MOBILENET_V2)
    for size in ("small", "large"):
        t[f"mobilenet_v3_{size}"] = KerasBackbone(
            f"MobileNetV3{size.title()}", "mobilenet", "builtin", 224, _MOBILENET_V3
        )
    for b, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
        t[f"efficientnet_b{b}"] = KerasBackbone(
            f"EfficientNetB{b}", "efficientnet", "builtin", size, _EFFICIENTNET
        )
    for v, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300)):
        t[f"efficientnet_v2_{v}"] = KerasBackbone(
            f"EfficientNetV2{v.upper()}", "efficientnet_v2", "builtin", size, _EFFICIENTNET_V2
        )
    for v, size in (("s", 384), ("m", 480), ("l", 480)):
        t[f"efficientnet_v2_{v}"] = KerasBackbone(
            f"EfficientNetV2{v.upper()}", "efficientnet_v2", "builtin", size, _EFFICIENTNET_V2
        )
    for depth in (121, 169, 201):
        t[f"densenet{depth}"] = KerasBackbone(
            f"DenseNet{depth}", "densenet", "torch", 224, _DENSENET
        )
    for size in ("tiny", "small", "base", "large", "xlarge"):
        t[f"convnext_{size}"] = KerasBackbone(
            "ConvNeXt" + {"xlarge": "XLarge"}.get(size, size.title()),
            "convnext",
            "builtin",
            224,
            _CONVNEXT,
        )
    for depth in (16, 19):
        t[f"keras_vgg{depth}"] = KerasBackbone(f"VGG{depth}", "vgg", "caffe", 224, _VGG)
    return t


KERAS = _table()


def names() -> list[str]:
    """Every backbone name: zoo's CNNs and the keras.applications families."""
    return sorted(set(registry.list_models(task="backbone")) | set(KERAS))


def has_builtin_preprocessing(name: str | None) -> bool:
    """Whether backbone/model `name` preprocesses [0, 255] pixels itself (keras.applications)."""
    return name in KERAS


# ---------------------------------------------------------------------------------------------
# Building


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
        net = _keras_net(name, input_shape, build_weights, options)
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


def _preprocessing(kind: str) -> list:
    layers = keras.layers
    if kind == "tf":
        return [layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if kind == "torch":
        scale = [1 / (255 * s) for s in _TORCH_STD]
        offset = [-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD, strict=True)]
        return [layers.Rescaling(scale, offset=offset, name="preprocess")]
    if kind == "caffe":
        from zoo.layers import ReverseChannels

        return [
            ReverseChannels(name="preprocess_bgr"),
            layers.Rescaling(1.0, offset=[-m for m in _CAFFE_MEAN_BGR], name="preprocess"),
        ]
    return []


def _keras_net(name: str, input_shape, weights, options: dict) -> keras.Model:
    spec = KERAS[name]
    shape = tuple(input_shape) if input_shape is not None else (spec.input_size,) * 2 + (3,)
    if len(shape) != 3:
        raise ZooError(
            f"backbone {name}: input_shape must be (height, width, channels), got {shape}"
        )
    if weights == "imagenet":
        _check_download(name)
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for layer in _preprocessing(spec.preprocessing):
        x = layer(x)
    constructor = getattr(keras.applications, spec.constructor)
    try:
        app = constructor(
            include_top=False, weights=weights, input_tensor=x, input_shape=shape, **options
        )
    except TypeError as e:
        raise ZooError(f"backbone {name}: {e}") from e
    except ValueError as e:
        raise ZooError(f"backbone {name}: {e}".splitlines()[0]) from e
    except Exception as e:  # keras.utils.get_file raises a bare Exception on a failed download
        if weights == "imagenet":
            raise _offline_error(name, str(e)) from e
        raise
    # One functional graph from our input: the preprocessing, then the keras.applications layers.
    model = keras.Model(inputs, app.output, name=name)
    _stable_names(model)
    return _exportable(model)


def _is_depthwise(layer) -> bool:
    """A Conv2D with one group per input channel, as many filters as channels."""
    return (
        type(layer) is keras.layers.Conv2D
        and layer.groups > 1
        and layer.groups == layer.filters
        and layer.kernel.shape[-2] == 1
    )


def _exportable(model: keras.Model) -> keras.Model:
    """`model` with the same weights and outputs, rebuilt from layers that every exporter
    converts: a Normalization becomes a constant Rescaling (ONNX conversion turns its mean and
    variance into extra graph inputs) and a Conv2D with one group per channel a DepthwiseConv2D
    (Keras' grouped convolution is an XLA function tf2onnx cannot convert)."""
    changed = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Normalization) or _is_depthwise(layer)
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
        if _is_depthwise(layer):
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
        if _is_depthwise(old):  # (k, k, 1, C) -> (k, k, C, 1)
            weights = [np.transpose(weights[0], (0, 1, 3, 2)), *weights[1:]]
        elif isinstance(old, keras.layers.Normalization):
            continue
        new.set_weights(weights)
    return rebuilt


def _stable_names(model: keras.Model) -> None:
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


def _check_download(name: str) -> None:
    """Fails fast when 'imagenet' weights are neither cached nor downloadable."""
    cache_dir = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    cached = cache_dir.is_dir() and any(cache_dir.glob("*.h5"))
    if not cached and not network.online():
        raise _offline_error(name, "no network")


def _offline_error(name: str, why: str) -> ZooError:
    return ZooError(
        f"backbone {name}: its 'imagenet' weights must be downloaded by keras.applications from "
        f"storage.googleapis.com, which failed ({why.splitlines()[0][:200]}). On a machine with "
        f"a network, build it once (keras.applications.{KERAS[name].constructor}(include_top="
        "False)) and copy the .h5 file from ~/.keras/models/ here; then pass its path: "
        "weights=PATH, or model.backbone_weights = PATH in a recipe. weights=None trains "
        "from scratch"
    )


def _canonical(name: str, shape, options: dict) -> keras.Model:
    """The net at a fixed size (randomly initialized), to find taps of a variable-size one."""
    canonical = (256, 256, shape[-1] if shape and shape[-1] else 3)
    if name in KERAS:
        return _keras_net(name, canonical, None, options)
    return registry.get(name, include_top=False, input_shape=canonical, **options)


# ---------------------------------------------------------------------------------------------
# Taps


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
    return KERAS[name].tap_filter if name in KERAS else None


def deepest(model: keras.Model):
    """The coarsest feature map of a backbone built by `backbone()`."""
    outputs = model.output
    return outputs[[level for level in LEVELS if level in outputs][-1]]


# ---------------------------------------------------------------------------------------------
# Weights from a zoo run or a saved model


def is_saved_model(path: str) -> bool:
    """Whether `path` names a zoo run directory or a .keras file (weights taken by name)."""
    return path.endswith(".keras") or os.path.isdir(path)


def load_source(path) -> keras.Model:
    """The model saved in a finished zoo run directory or a `.keras` file."""
    if not Path(path).exists():
        raise ZooError(f"weights file {str(path)!r} does not exist")
    return rundir.load(path, what="backbone weights", compile=False)[0]


def leaves(model) -> dict:
    """Every layer that is not itself a model, by name, nested models flattened (outer first)."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for name, inner in leaves(layer).items():
                out.setdefault(name, inner)
        else:
            out.setdefault(layer.name, layer)
    return out


def transfer(target: keras.Model, source, what: str) -> int:
    """Copies every weighted layer of `target` from the layer of the same name in `source` (a
    model, a run directory or a .keras file); layers only the source has (its head) are left.
    Returns the number of layers copied; raises if any target layer is missing or differs."""
    label = source if isinstance(source, str | os.PathLike) else getattr(source, "name", "model")
    if not isinstance(source, keras.Model):
        source = load_source(source)
    have = leaves(source)
    missing, different, copied = [], [], 0
    for name, layer in leaves(target).items():
        if not layer.weights:
            continue
        theirs = have.get(name)
        if theirs is None:
            missing.append(name)
            continue
        mine, given = (
            [tuple(w.shape) for w in layer.weights],
            [tuple(w.shape) for w in theirs.weights],
        )
        if mine != given:
            different.append(f"{name} {given} there, {mine} here")
            continue
        layer.set_weights(theirs.get_weights())
        copied += 1
    if missing or different:
        problems = []
        if missing:
            problems.append(f"{len(missing)} layers missing ({', '.join(missing[:3])}, ...)")
        if different:
            problems.append(f"{len(different)} of other shapes ({different[0]})")
        raise ZooError(
            f"{what}: {label} does not hold its weights: {'; '.join(problems)}. Take weights "
            "from a run of the same architecture and options"
        )
    return copied


# ---------------------------------------------------------------------------------------------
# Fine-tuning


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
