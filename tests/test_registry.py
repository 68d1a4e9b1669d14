"""One parametrized test over the whole registry, plus golden parameter counts."""

import keras
import numpy as np
import pytest

import zoo
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
}


def test_golden_table_covers_the_registry():
    assert sorted(GOLDEN) == zoo.list_models()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_parameter_count(name):
    assert zoo.info(name)["parameters"] == GOLDEN[name]


@pytest.mark.parametrize("name", zoo.list_models())
def test_build_forward_train_step_and_round_trip(name, tmp_path):
    # Eager calls: tracing a 150-layer graph costs more than the step itself at this size.
    shape = (32, 32, 3) if name != "lenet5" else (28, 28, 1)
    model = zoo.get(name, input_shape=shape, classes=5)
    x = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    y = np.array([1, 3])
    out = keras.ops.convert_to_numpy(model(x, training=False))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)

    import tensorflow as tf

    before = [w.numpy().copy() for w in model.trainable_weights]
    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    assert np.isfinite(keras.ops.convert_to_numpy(loss)).all()
    changed = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    assert changed == len(before)

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


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ZooError, match="did you mean .*'resnet50'"):
        zoo.get("resnet05")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register("resnet18", family="x", input_shape=(1, 1, 1), paper="")(lambda **k: None)


def test_list_models_filters():
    assert zoo.list_models("vgg1?_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert "lenet5" not in zoo.list_models(task="backbone")
    assert zoo.list_models(task="classification") == zoo.list_models()


def test_info_fields():
    info = zoo.info("resnet56")
    assert info["family"] == "resnet"
    assert info["input_shape"] == [32, 32, 3]
    assert "He et al. 2015" in info["paper"]
    assert info["parameters"] == GOLDEN["resnet56"]
