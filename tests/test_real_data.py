"""Real data from $ZOO_TEST_DATA (CI sets it to ../shared/data)."""

import json

import keras
import numpy as np
import pytest

import zoo
from tests.conftest import shared_data
from zoo.data import build
from zoo.recipes import load_recipe

pytestmark = pytest.mark.data


def test_lenet_learns_real_mnist_idx_quickly(tmp_path, quiet):
    """A short check for make test: 1,000 images of each digit, two epochs, the real test set
    (the 98% and 99% bars run under make test-all)."""
    mnist = shared_data("mnist")
    recipe = load_recipe(
        "lenet_mnist",
        [
            "data.source=idx",
            f"data.path='{mnist}'",
            "data.max_per_class=1000",
            "fit.epochs=2",
            "fit.verbose=0",
        ],
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    metrics = json.loads((run / "metrics.json").read_text())
    # The test files, at most 1,000 of each digit too.
    assert metrics["eval_split"] == "test" and 9_000 < metrics["eval_examples"] <= 10_000
    assert metrics["accuracy"] >= 0.88  # 0.92 measured; chance is 0.1


@pytest.mark.slow
def test_lenet_on_real_mnist_idx_reaches_98_percent(tmp_path, quiet):
    mnist = shared_data("mnist")
    recipe = load_recipe(
        "lenet_mnist", ["data.source=idx", f"data.path='{mnist}'", "fit.epochs=2", "fit.verbose=0"]
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_examples"] == 10_000 and metrics["eval_split"] == "test"
    assert metrics["accuracy"] >= 0.98


def test_cifar10_image_folder_pipeline():
    cifar = shared_data("cifar10")
    recipe = load_recipe(
        "resnet20_cifar10",
        [
            "data.source=image_folder",
            f"data.path='{cifar}'",
            "data.classes=['cat', 'ship']",
            "data.max_per_class=50",
            "data.batch_size=100",
        ],
    )
    data = build(recipe)
    assert data.class_names == ["cat", "ship"]
    assert (data.train_count, data.eval_count) == (90, 10)
    x, y = next(iter(data.eval))
    assert tuple(x.shape) == (10, 32, 32, 3)
    assert sorted(y.numpy().tolist()) == [0] * 5 + [1] * 5
    assert 60 < float(x.numpy().mean()) < 200  # real photographs, raw pixel values


def test_att_faces_pgm_through_image_folder():
    faces = shared_data("att_faces")
    recipe = load_recipe(
        "lenet_digits",
        [
            "data.source=image_folder",
            f"data.path='{faces}'",
            "data.image_size=[56, 46]",
            "data.classes=['s1', 's2', 's3']",
            "data.validation_split=0.2",
        ],
    )
    data = build(recipe)
    assert (data.train_count, data.eval_count) == (24, 6)
    x, _ = next(iter(data.eval))
    assert tuple(x.shape) == (6, 56, 46, 1)


@pytest.mark.slow
def test_lenet_mnist_recipe_reaches_99_percent(tmp_path, quiet):
    """The shipped recipe as the README runs it offline: 10 epochs, the 10,000 test images."""
    mnist = shared_data("mnist")
    recipe = load_recipe(
        "lenet_mnist", ["data.source=idx", f"data.path='{mnist}'", "fit.verbose=0"]
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0.99


def test_cifar_resnet_exports_to_every_format(tmp_path, quiet):
    """Standardization and the parameter-free shortcuts survive SavedModel, TFLite and ONNX."""
    cifar = shared_data("cifar10")
    recipe = load_recipe(
        "resnet20_cifar10",
        [
            "data.source=image_folder",
            f"data.path='{cifar}'",
            "data.classes=['cat', 'ship']",
            "data.max_per_class=30",
            "data.validation_split=0.5",
            "fit.epochs=1",
            "fit.verbose=0",
            # One step at the recipe's rate 0.1 leaves the batch norms' moving statistics far
            # from the activations: every probability 0 or 1, which any export would match.
            "compile.optimizer.learning_rate=0.001",
        ],
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    images, _ = next(iter(build(recipe, training=False).eval))
    probabilities = keras.saving.load_model(run / "model.keras").predict(images, verbose=0)
    assert np.median(probabilities.max(axis=1)) < 0.99  # the parity below compares something
    for fmt in ("savedmodel", "tflite", "onnx"):
        report = zoo.export(run, format=fmt)
        assert report["examples"] == 30
        assert report["top1_agreement"] == 1.0 and report["max_abs_diff"] < 1e-4
