"""Backbones and their taps, weights from runs and files, heads, and what phases freeze."""

import math
import time

import keras
import numpy as np
import pytest

import zoo
from tests.test_registry import heavy
from zoo import backbones
from zoo.backbones.rewrite import is_depthwise
from zoo.errors import ZooError


def _levels(name):
    if name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
        return ["P1", "P2"]  # CIFAR ResNets: stride 1, 2, 4
    if name.startswith("convnext"):
        return ["P2", "P3", "P4", "P5"]  # a 4x4/4 stem
    return ["P1", "P2", "P3", "P4", "P5"]


# Pinned tap layers: TensorFlow's segmentation tutorial taps MobileNetV2 at the same layers;
# ResNet v2 taps its pre-activations (the bottleneck's would be the deepest at a size).
KNOWN_TAPS = {
    "mobilenet_v2": [
        "block_1_expand_relu",
        "block_3_expand_relu",
        "block_6_expand_relu",
        "block_13_expand_relu",
        "out_relu",
    ],
    "keras_resnet50": [
        "conv1_relu",
        "conv2_block3_out",
        "conv3_block4_out",
        "conv4_block6_out",
        "conv5_block3_out",
    ],
    "resnet50_v2": [
        "conv1_conv",
        "conv2_block3_preact_relu",
        "conv3_block4_preact_relu",
        "conv4_block6_preact_relu",
        "post_relu",
    ],
    "efficientnet_b0": [
        "block2a_expand_activation",
        "block3a_expand_activation",
        "block4a_expand_activation",
        "block6a_expand_activation",
        "top_activation",
    ],
    "densenet121": ["conv1_relu", "pool2_conv", "pool3_conv", "pool4_conv", "relu"],
    "resnet18": ["conv1_relu", *(f"conv{s}_block2_out" for s in (2, 3, 4, 5))],
    "resnet20": ["conv3_block3_out", "conv4_block3_out"],
    "vgg16_bn": ["block2_relu2", "block3_relu3", "block4_relu3", "block5_relu3", "block5_pool"],
}


@pytest.mark.parametrize(
    "name", heavy(backbones.names(), slow=("resnet101", "resnet152", "resnet110", "vgg19_bn"))
)
def test_every_backbone_exposes_its_taps_at_their_strides(name):
    model = zoo.backbone(name, input_shape=(64, 64, 3))
    assert model.layers[0].name == "image" and model.input.shape == (None, 64, 64, 3)
    assert list(model.output) == _levels(name)
    for level, tensor in model.output.items():
        stride = backbones.LEVELS[level]
        assert tuple(tensor.shape[1:3]) == (64 // stride, 64 // stride), (level, tensor.shape)
    # The coarsest tap is the net's last feature map.
    assert backbones.deepest(model) is model.outputs[-1]
    if name in KNOWN_TAPS:
        found = backbones.taps(model, backbones.tap_filter(name))
        assert list(found.values()) == KNOWN_TAPS[name]


def test_taps_of_a_small_stem_and_of_variable_size():
    small = zoo.backbone("resnet18", input_shape=(32, 32, 3), stem="small")
    assert {k: tuple(v.shape[1:3]) for k, v in small.output.items()} == {
        "P1": (16, 16),
        "P2": (8, 8),
        "P3": (4, 4),
    }
    variable = zoo.backbone("mobilenet_v2", input_shape=(None, None, 3))
    out = variable.predict(np.zeros((1, 96, 128, 3), "float32"), verbose=0)
    assert {k: v.shape[1:3] for k, v in out.items()} == {
        "P1": (48, 64),
        "P2": (24, 32),
        "P3": (12, 16),
        "P4": (6, 8),
        "P5": (3, 4),
    }


@pytest.mark.parametrize(
    "name, module",
    [("keras_vgg16", "vgg16"), ("mobilenet_v2", "mobilenet_v2"), ("densenet121", "densenet")],
)
def test_family_preprocessing_is_inside_the_model(name, module):
    model = zoo.backbone(name, input_shape=(32, 32, 3))
    preprocess = keras.Model(model.inputs, model.get_layer("preprocess").output)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = getattr(keras.applications, module).preprocess_input(pixels.copy())
    np.testing.assert_allclose(
        preprocess.predict(pixels, verbose=0), expected, rtol=1e-5, atol=1e-4
    )


def _saved_classifier(tmp_path, name="resnet20", classes=10):
    """A trained-looking model as a zoo run saves it: preprocessing, then the nested net."""
    net = zoo.get(name, input_shape=(32, 32, 3), classes=classes)
    rng = np.random.default_rng(1)
    net.set_weights([rng.normal(size=w.shape).astype("float32") for w in net.get_weights()])
    inputs = keras.Input((32, 32, 3), name="image")
    outer = keras.Model(inputs, net(keras.layers.Rescaling(1 / 255, name="rescale")(inputs)))
    run = tmp_path / "run"
    run.mkdir()
    outer.save(run / "model.keras")
    return net, run


def test_weights_from_a_run_transfer_by_name_and_the_head_is_new(tmp_path):
    net, run = _saved_classifier(tmp_path)
    for weights in (run, run / "model.keras"):
        features = zoo.backbone("resnet20", input_shape=(32, 32, 3), weights=str(weights))
        copied = 0
        for layer in backbones.leaves(features).values():
            for mine, theirs in zip(layer.weights, net.get_layer(layer.name).weights):
                np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
                copied += 1
        assert copied == len(features.weights) > 0
        classifier = zoo.heads.classification(features, 3)
        assert classifier.get_layer("predictions").kernel.shape == (64, 3)
    assert net.get_layer("predictions").kernel.shape == (64, 10)


def test_weights_of_another_architecture_are_refused(tmp_path):
    _, run = _saved_classifier(tmp_path)
    with pytest.raises(ZooError, match="does not hold its weights: .*missing"):
        zoo.backbone("resnet32", input_shape=(32, 32, 3), weights=str(run))
    with pytest.raises(ZooError, match="holds no model.keras"):
        zoo.backbone("resnet20", weights=str(tmp_path))
    with pytest.raises(ZooError, match="does not exist"):
        zoo.backbone("resnet20", weights=str(tmp_path / "nowhere.weights.h5"))


def test_a_model_file_with_python_code_is_refused_everywhere_it_is_loaded(tmp_path):
    """Models load in Keras' safe mode: a Lambda layer's bytecode never runs, whether the file
    is given as backbone weights or to export/predict (one loader)."""
    from zoo import rundir

    ran = tmp_path / "ran"
    inputs = keras.Input((32, 32, 3))
    touch = eval(f"lambda t: (__import__('pathlib').Path({str(ran)!r}).touch(), t)[1]")
    outputs = keras.layers.Lambda(touch)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "code.keras")
    ran.unlink(missing_ok=True)  # building the model ran it once
    for load in (
        lambda: rundir.load(tmp_path / "code.keras", what="export"),
        lambda: zoo.backbone("resnet20", weights=str(tmp_path / "code.keras")),
    ):
        with pytest.raises(ZooError, match=r"holds Python code \(a Lambda layer\)"):
            load()
    assert not ran.exists()


def test_weights_by_name_survive_keras_layer_counters(tmp_path):
    """EfficientNet's Normalization layer is named by a session counter; zoo renames it so a
    second build (another session's counters) still finds every layer by name."""
    first = zoo.get("efficientnet_b0", input_shape=(32, 32, 3), classes=4)
    first.save(tmp_path / "a.keras")
    zoo.get("efficientnet_b0", input_shape=(32, 32, 3))  # moves the counters on
    again = zoo.backbone(
        "efficientnet_b0", input_shape=(32, 32, 3), weights=str(tmp_path / "a.keras")
    )
    assert "normalization" in backbones.leaves(again)


def test_offline_imagenet_request_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights
    start = time.perf_counter()
    with pytest.raises(ZooError) as e:
        zoo.backbone("mobilenet_v2", weights="imagenet")
    assert time.perf_counter() - start < 30
    message = str(e.value)
    assert "'imagenet' weights" in message and "storage.googleapis.com" in message
    assert "weights=PATH" in message and "model.backbone_weights" in message


def test_zoo_nets_have_no_imagenet_weights_and_lenet_is_no_backbone():
    with pytest.raises(ZooError, match="no published 'imagenet' weights"):
        zoo.backbone("resnet18", weights="imagenet")
    with pytest.raises(ZooError, match="cannot be a backbone"):
        zoo.backbone("lenet5")
    with pytest.raises(ZooError, match="did you mean 'mobilenet_v2'"):
        zoo.backbone("mobilenet_v22")


def test_registered_keras_classifier_with_head_options():
    model = zoo.get("mobilenet_v2", input_shape=(96, 96, 3), classes=5, hidden=[32], dropout=0.2)
    assert model.output.shape == (None, 5)
    assert model.get_layer("head_dense1").units == 32
    assert model.get_layer("head_dropout").rate == 0.2
    pooled = zoo.get("mobilenet_v2", input_shape=(96, 96, 3), include_top=False, pooling="avg")
    assert pooled.output.shape == (None, 1280)


def _trainable_parameters(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def test_trainable_head_stage_layer_and_all():
    model = zoo.heads.classification(zoo.backbone("resnet18", input_shape=(64, 64, 3)), 5)
    found = backbones.taps(model)
    backbones.set_trainable(model, "head", found)
    assert _trainable_parameters(model) == 512 * 5 + 5
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    backbones.set_trainable(model, "P5", found)
    stage5 = zoo.get("resnet18", include_top=False, input_shape=(64, 64, 3))
    conv5 = sum(
        math.prod(w.shape)
        for layer in stage5.layers
        if layer.name.startswith("conv5_")
        for w in layer.trainable_weights
    )
    assert _trainable_parameters(model) == conv5 + 512 * 5 + 5
    backbones.set_trainable(model, "conv5_block2", found)
    assert not model.get_layer("conv5_block1_2_conv").trainable
    assert model.get_layer("conv5_block2_1_conv").trainable
    backbones.set_trainable(model, "all", found)
    assert _trainable_parameters(model) == 11_176_512 + 512 * 5 + 5  # resnet18 minus its fc
    with pytest.raises(ZooError, match="did you mean 'conv5_block2"):
        backbones.set_trainable(model, "conv5_blok2", found)
    with pytest.raises(ZooError, match="has no tap P5"):
        backbones.set_trainable(zoo.get("resnet20"), "P5", backbones.taps(zoo.get("resnet20")))


def test_frozen_batchnorm_keeps_its_statistics_and_trainable_one_learns():
    model = zoo.heads.classification(zoo.backbone("resnet20", input_shape=(32, 32, 3)), 3)
    found = backbones.taps(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    bn = model.get_layer("conv2_block1_1_bn")

    backbones.set_trainable(model, "head", found)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    mean, head = bn.moving_mean.numpy().copy(), model.get_layer("predictions").kernel.numpy().copy()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    assert not np.array_equal(model.get_layer("predictions").kernel.numpy(), head)

    backbones.set_trainable(model, "all", found)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(bn.moving_mean.numpy(), mean)


def test_local_weights_file_in_the_format_keras_downloads(tmp_path):
    """keras.applications' no-top files are legacy HDF5: what a user copies in from a machine
    with a network (and what `"imagenet"` would have downloaded)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    rng = np.random.default_rng(0)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.get_weights()])
    path = tmp_path / "mobilenet_v2_no_top.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = zoo.get("mobilenet_v2", input_shape=(32, 32, 3), classes=3, weights=str(path))
    for name in ("Conv1", "block_16_project", "out_relu"):
        for mine, theirs in zip(model.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


@pytest.mark.parametrize(
    "name, constructor",
    [
        ("efficientnet_b0", "EfficientNetB0"),
        pytest.param("convnext_tiny", "ConvNeXtTiny", marks=pytest.mark.slow),
    ],
)
def test_rebuilt_for_export_computes_what_keras_applications_does(name, constructor, tmp_path):
    """EfficientNet's Normalization (a constant Rescaling in zoo) and ConvNeXt's per-channel
    convolutions (DepthwiseConv2D in zoo) give the keras.applications net's outputs, weights
    loaded from a Keras weights file included."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    source = getattr(keras.applications, constructor)(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    rng = np.random.default_rng(0)
    for layer in source.layers:  # statistics as ImageNet's, not the identity
        if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            mean, variance, count = layer.get_weights()
            layer.set_weights([mean + [0.485, 0.456, 0.406], variance * [0.05, 0.05, 0.06], count])
            layer.finalize_state()
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = zoo.backbone(name, input_shape=(32, 32, 3), weights=str(path))
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)
    assert not any(is_depthwise(layer) for layer in model.layers)
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = source.predict(pixels, verbose=0)
    got = keras.ops.convert_to_numpy(model(pixels)["P5"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
