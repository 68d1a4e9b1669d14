"""One parametrized test over the whole registry, plus golden parameter counts."""

import keras
import numpy as np
import pytest

import zoo
from zoo.backbones import KERAS
from zoo.errors import ZooError
from zoo.registry import register

# Trainable parameters with 1000 classes at the default input (torchvision convention).
GOLDEN = {
    "lenet5": 61_706,  # 10 classes, as the paper
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    # CIFAR ResNets, 10 classes: the paper's 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    # keras.applications backbones under zoo's head (global average pooling + Dense): equal to
    # Keras' published trainable counts where its top is the same (ResNet, MobileNetV2,
    # EfficientNet, DenseNet, ConvNeXt); MobileNetV3 and VGG16/19 have Keras' other tops.
    "keras_resnet50": 25_583_592,
    "resnet50_v2": 25_568_360,
    "keras_resnet101": 44_601_832,
    "resnet101_v2": 44_577_896,
    "keras_resnet152": 60_268_520,
    "resnet152_v2": 60_236_904,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_small": 1_504_008,
    "mobilenet_v3_large": 3_932_952,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet_v2_b0": 7_139_704,
    "efficientnet_v2_b1": 8_141_052,
    "efficientnet_v2_b2": 10_096_086,
    "efficientnet_v2_b3": 14_358_406,
    "efficientnet_v2_s": 21_458_488,
    "efficientnet_v2_m": 54_139_356,
    "efficientnet_v2_l": 118_515_272,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnext_xlarge": 350_196_968,
    "keras_vgg16": 15_227_688,
    "keras_vgg19": 20_537_384,
    # The paper's U-Net ("same" padding, no batch norm): 1 input channel, 2 classes.
    "unet": 31_030_658,
    # Text models, 2 classes, at their default vocabulary and sequence length: TextCNN's
    # embedding (20,000 x 128) is most of it; the character CNN's is one-hot (not trained) and
    # its 1,014-character input makes the first dense layer 8.9M (Zhang et al.'s small model).
    "textcnn": 2_714_502,
    "charcnn": 11_337_730,
}

# One keras.applications net per family is built in `make test`; the others under `make test-all`.
FAST_KERAS = {
    "keras_resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
}


def heavy(names, fast=FAST_KERAS, slow=()):
    """`names` as pytest params: keras.applications ones outside `fast`, and `slow`, marked slow."""
    return [
        pytest.param(n, marks=pytest.mark.slow)
        if (n in KERAS and n not in fast) or n in slow
        else n
        for n in names
    ]


# The round trip (build, train step, save, load) of the deepest nets repeats shallower ones'
# code at several times the cost: those run under `make test-all`.
ROUND_TRIP_SLOW = (
    *("resnet34", "resnet101", "resnet152"),
    *("resnet32", "resnet44", "resnet110"),
    *("vgg13", "vgg13_bn", "vgg19", "vgg19_bn"),
)
# keras.applications nets with layers of their own (hard-swish, Normalization, LayerScale).
# (ConvNeXt's LayerScale: make test-all.)
ROUND_TRIP_KERAS = {"mobilenet_v3_small", "efficientnet_b0"}
# Golden counts build each net at its full default size: two keras.applications ones here.
GOLDEN_KERAS = {"mobilenet_v2", "efficientnet_b0"}


def test_golden_table_covers_the_registry():
    assert sorted(GOLDEN) == zoo.list_models()


@pytest.mark.parametrize("name", heavy(sorted(GOLDEN), fast=GOLDEN_KERAS))
def test_golden_parameter_count(name):
    assert zoo.info(name)["parameters"] == GOLDEN[name]


IMAGE_MODELS = [m for m in zoo.list_models() if m not in zoo.list_models(task="text")]


# Text models take token ids: tests/test_text.py trains and round-trips each.
@pytest.mark.parametrize("name", heavy(IMAGE_MODELS, fast=ROUND_TRIP_KERAS, slow=ROUND_TRIP_SLOW))
def test_build_forward_train_step_and_round_trip(name, tmp_path):
    # Eager calls: tracing a 150-layer graph costs more than the step itself at this size.
    shape = (32, 32, 3) if name != "lenet5" else (28, 28, 1)
    # Seeded: the initial weights and the training step's dropout masks (EfficientNet's dropped
    # blocks, whose weights then get no gradient) are the same at every run.
    keras.utils.set_random_seed(0)
    model = zoo.get(name, input_shape=shape, classes=5)
    scale = 255 if name in KERAS else 1  # keras.applications nets take [0, 255] pixels
    rng = np.random.default_rng(0)
    x = rng.uniform(0, scale, (2, *shape)).astype("float32")
    out = keras.ops.convert_to_numpy(model(x, training=False))
    if name in zoo.list_models(task="segmentation"):  # a class per pixel
        assert out.shape == (2, 32, 32, 5)
        y = rng.integers(0, 5, (2, 32, 32))
    else:
        assert out.shape == (2, 5)
        y = np.array([1, 3])
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)

    import tensorflow as tf

    before = [w.numpy().copy() for w in model.trainable_weights]
    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    assert np.isfinite(keras.ops.convert_to_numpy(loss)).all()
    # Every weight of zoo's nets learns: it moved, or (ConvNeXt's branches behind a 1e-6 layer
    # scale) its gradient is not zero but its step is below float32 resolution. In
    # keras.applications nets on two tiny images a few ReLU6 units can be dead or saturated.
    learning = [
        not np.array_equal(b, w.numpy()) or np.any(g.numpy() != 0)
        for b, w, g in zip(before, model.trainable_weights, grads)
    ]
    assert all(learning) if name not in KERAS else np.mean(learning) > 0.9

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe mode: custom layers must be registered
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-6,
    )


@pytest.mark.parametrize("pooling, rank", [(None, 4), ("avg", 2), ("max", 2)])
def test_headless_pooling(pooling, rank):
    model = zoo.get("resnet20", include_top=False, pooling=pooling, input_shape=(32, 32, 3))
    assert len(model.output.shape) == rank
    assert model.output.shape[-1] == 64


def test_wide_cifar_resnet():
    # Wide ResNet's k (Zagoruyko & Komodakis 2016): each stage's filters times `width`.
    wide = zoo.get("resnet20", width=2, include_top=False, pooling="avg")
    assert wide.output.shape[-1] == 128
    assert wide.get_layer("conv2_block1_1_conv").filters == 32
    # Every convolution has twice the filters on both sides (4x the weights), but the stem's
    # input side, the image's channels (2x).
    plain = zoo.get("resnet20", include_top=False, pooling="avg")
    convs = [w for w in plain.weights if w.name == "kernel"]
    wide_convs = [w for w in wide.weights if w.name == "kernel"]
    first = int(np.prod(convs[0].shape))  # the stem's input side does not widen
    assert (
        sum(int(np.prod(w.shape)) for w in wide_convs)
        == 4 * sum(int(np.prod(w.shape)) for w in convs) - 2 * first
    )
    with pytest.raises(ZooError, match="width must be a positive integer"):
        zoo.get("resnet20", width=0)
    with pytest.raises(ZooError, match="width is for the CIFAR nets"):
        zoo.get("resnet18", width=2)


def test_any_channel_count_and_size():
    model = zoo.get("resnet18", input_shape=(96, 64, 4), classes=3)
    assert model.predict(np.zeros((1, 96, 64, 4), "float32"), verbose=0).shape == (1, 3)
    variable = zoo.get("resnet18", input_shape=(None, None, 1), include_top=False, pooling="avg")
    assert variable.predict(np.zeros((1, 40, 56, 1), "float32"), verbose=0).shape == (1, 512)


def test_logits_and_layer_names():
    model = zoo.get("resnet20", classifier_activation=None)
    assert model.get_layer("predictions").activation.__name__ == "linear"
    assert model.get_layer("conv4_block3_2_bn") is not None
    assert zoo.get("vgg16").get_layer("block5_conv3") is not None


def test_local_weights_file(tmp_path):
    a = zoo.get("lenet5")
    path = tmp_path / "lenet.weights.h5"
    a.save_weights(path)
    b = zoo.get("lenet5", weights=str(path))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": "imagenet"}, "no published 'imagenet' weights"),
        ({"weights": "/nowhere/w.weights.h5"}, "does not exist"),
        ({"input_shape": (16, 16, 3)}, "at least 32"),
        ({"input_shape": (32, 32)}, "(height, width, channels)"),
        ({"pooling": "mean"}, "pooling must be one of"),
        ({"classes": 0}, "classes must be a positive integer"),
        ({"colour": 3}, "its arguments are"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ZooError, match=None) as e:
        zoo.get("vgg11", **kwargs)
    assert message in str(e.value)


def test_a_type_error_inside_a_builder_is_not_reported_as_a_wrong_argument(monkeypatch):
    import dataclasses

    from zoo import registry

    def broken(*, classes: int = 10):
        return len(classes)  # a bug: TypeError from inside the builder

    spec = dataclasses.replace(registry._spec("lenet5"), builder=broken)
    monkeypatch.setitem(registry._REGISTRY, "lenet5", spec)
    with pytest.raises(TypeError, match="has no len"):
        zoo.get("lenet5", classes=3)
    with pytest.raises(ZooError, match="unexpected keyword argument 'colour'; its arguments are"):
        zoo.get("lenet5", colour=3)


def test_imagenet_weights_under_a_1000_class_head_are_refused():
    # A keras.applications user reads this as ImageNet's classifier; zoo's head is random.
    with pytest.raises(ZooError, match=r"keras.applications.MobileNetV2\(weights='imagenet'\)"):
        zoo.get("mobilenet_v2", weights="imagenet")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ZooError, match="did you mean .*'resnet50'"):
        zoo.get("resnet05")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register("resnet18", family="x", input_shape=(1, 1, 1), paper="")(lambda **k: None)


def test_list_models_filters():
    assert zoo.list_models("vgg1?_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert "lenet5" not in zoo.list_models(task="backbone")
    others = {"unet", "textcnn", "charcnn"}
    assert zoo.list_models(task="classification") == [
        m for m in zoo.list_models() if m not in others
    ]
    assert zoo.list_models(task="text") == ["charcnn", "textcnn"]
    assert zoo.list_models(task="segmentation") == ["unet"]
    assert {"mobilenet_v2", "efficientnet_b7", "convnext_xlarge"} < set(zoo.list_models())


def test_info_fields():
    info = zoo.info("resnet56")
    assert info["family"] == "resnet"
    assert info["input_shape"] == [32, 32, 3]
    assert "He et al. 2015" in info["paper"]
    assert info["parameters"] == GOLDEN["resnet56"]


@pytest.mark.parametrize(
    "kwargs", [{}, {"center": False}, {"scale": False, "momentum": 0.9, "epsilon": 1e-5}]
)
def test_fused_batch_norm_trains_as_keras_batch_normalization(kwargs):
    import tensorflow as tf

    from zoo.layers import BatchNorm

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2, 3, (4, 5, 6, 8)).astype("float32"))
    ours, theirs = BatchNorm(**kwargs), keras.layers.BatchNormalization(**kwargs)
    ours.build(x.shape), theirs.build(x.shape)
    weights = [np.abs(rng.normal(size=v.shape)).astype("float32") + 0.5 for v in theirs.weights]
    ours.set_weights(weights), theirs.set_weights(weights)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(0.3 * y * y + y)
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        results.append((y, grads, layer.get_weights()))  # moving statistics updated
    (y1, g1, w1), (y2, g2, w2) = results
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    for a, b in zip([*g1, *w1], [*g2, *w2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Inference and a 2-D input go through Keras' own layer.
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    flat = tf.reshape(x, (-1, 8))
    fresh = BatchNorm(**kwargs)(flat, training=True)
    np.testing.assert_allclose(
        fresh, keras.layers.BatchNormalization(**kwargs)(flat, training=True)
    )
    assert keras.layers.deserialize(keras.layers.serialize(ours)).get_config() == ours.get_config()
    # One value per channel (a pooled ASPP branch at batch 1): no division by n - 1 = 0.
    single, keras_single = BatchNorm(**kwargs), keras.layers.BatchNormalization(**kwargs)
    one = x[:1, :1, :1]
    np.testing.assert_allclose(single(one, training=True), keras_single(one, training=True))
    np.testing.assert_allclose(single.moving_variance, keras_single.moving_variance)


def test_zoo_nets_train_their_batch_norm_fused():
    from zoo.layers import BatchNorm

    for name, kwargs in [
        ("resnet20", {"classes": 4}),
        ("resnet18", {"classes": 4}),
        ("vgg11_bn", {"classes": 4}),
        ("unet", {"base_filters": 4, "batch_norm": True}),
    ]:
        model = zoo.get(name, input_shape=(32, 32, 3), **kwargs)
        norms = [
            layer
            for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        assert norms and all(isinstance(layer, BatchNorm) for layer in norms), name
