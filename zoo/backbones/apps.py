"""The keras.applications families as zoo backbones: the table (constructor, family,
preprocessing, default size, paper) and the builder that puts each family's preprocessing in
front of the keras.applications net, with stable layer names and export-friendly layers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras

from zoo import network
from zoo.backbones.rewrite import exportable, stable_names
from zoo.errors import ZooError

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


def has_builtin_preprocessing(name: str | None) -> bool:
    """Whether backbone/model `name` preprocesses [0, 255] pixels itself (keras.applications)."""
    return name in KERAS


def preprocessing(kind: str) -> list:
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


def build(name: str, input_shape, weights, options: dict) -> keras.Model:
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
    for layer in preprocessing(spec.preprocessing):
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
    stable_names(model)
    return exportable(model)


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
