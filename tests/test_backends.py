"""Keras backends other than TensorFlow: a run trained on JAX (tf.data feeding it) writes the
same run directory and exports through TensorFlow with the same parity report."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import runtime
from zoo.errors import ZooError
from zoo.recipes import load_recipe
from zoo.recipes.schema import RuntimeConfig

BIN = Path(sys.executable).parent


def _train_digits(backend: str, run: Path, by_recipe: bool = False):
    """zoo-train lenet_digits for 2 epochs on `backend`, in a child process: named by
    KERAS_BACKEND, or with `by_recipe` by the recipe's runtime.backend alone."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    args = ["lenet_digits", "--set", "fit.epochs=2", "--set", "fit.verbose=0"]
    if by_recipe:
        args += ["--set", f"runtime.backend='{backend}'"]
    else:
        env["KERAS_BACKEND"] = backend
    done = subprocess.run(
        [str(BIN / "zoo-train"), *args, "--output", str(run)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_a_jax_run_trains_and_exports_through_tensorflow(tmp_path):
    run = tmp_path / "run"
    # The recipe names the backend: zoo-train starts itself again on JAX.
    done = _train_digits("jax", run, by_recipe=True)
    assert "Keras on jax, CPU, precision float32, XLA True" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs"] == 2
    assert 'backend = "jax"' in (run / "recipe.toml").read_text()
    assert metrics["accuracy"] > 0.8
    # This process runs TensorFlow: the .keras file is backend-neutral.
    report = zoo.export(run, format="tflite")
    assert report["top1_agreement"] >= 0.99
    assert abs(report["export_accuracy"] - metrics["accuracy"]) < 0.01


def test_the_recipe_backend_must_be_the_process_backend(tmp_path, monkeypatch):
    # This process runs TensorFlow: zoo.train cannot switch, and says how to.
    recipe = load_recipe("lenet_digits", ["runtime.backend='jax'"])
    refused = r"runtime.backend\) but this process runs Keras on tensorflow.*KERAS_BACKEND=jax"
    with pytest.raises(ZooError, match=refused):
        zoo.train(recipe, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    auto, same = RuntimeConfig(), RuntimeConfig(backend="tensorflow")
    assert runtime.backend_to_start(auto) is None and runtime.backend_to_start(same) is None
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert runtime.backend_to_start(RuntimeConfig(backend="jax")) == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(
        ZooError,
        match="KERAS_BACKEND=tensorflow but the recipe sets "
        "runtime.backend = 'jax': unset KERAS_BACKEND",
    ):
        runtime.backend_to_start(RuntimeConfig(backend="jax"))
    monkeypatch.delenv("KERAS_BACKEND")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(
        ZooError,
        match=r"needs torch, which is not installed: pip install "
        r"'keras-zoo\[torch\]'",
    ):
        runtime.backend_to_start(RuntimeConfig(backend="torch"))


def test_the_recipe_backend_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    import zoo_cli

    def invoke(*args):
        result = CliRunner().invoke(
            zoo_cli.train_cmd, ["lenet_digits", *args], prog_name="zoo-train"
        )
        return result.exit_code, result.stderr.strip().splitlines()

    out = ["--output", str(tmp_path / "r")]
    code, err = invoke("--workers", "2", "--set", "runtime.backend='tensorflow'", *out)
    assert code == 2 and err == [
        "error: --workers trains on Keras' JAX backend, and the recipe sets runtime.backend = "
        "'tensorflow': leave it at 'auto' or set it to 'jax'"
    ]
    code, err = invoke("--set", "runtime.backend='pytorch'", *out)
    assert code == 2 and "runtime.backend" in err[0] and "'torch'" in err[0]
    assert not (tmp_path / "r").exists()


def test_the_policy_on_jax(monkeypatch):
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(runtime, "bfloat16_units", lambda: True)  # TensorFlow's choice only
    chosen = runtime.policy(RuntimeConfig())
    assert (chosen.precision, chosen.jit_compile, chosen.gpus) == ("float32", True, 0)
    assert chosen.describe().startswith("Keras on jax, CPU")
    with pytest.raises(ZooError, match="runtime.strategy 'mirrored' is TensorFlow's"):
        runtime.policy(RuntimeConfig(strategy="mirrored"))


def test_tensorflow_multi_worker_is_refused_with_the_reason():
    refused = r"'multi_worker' .* does not train Keras 3 models.* --workers N"
    with pytest.raises(ZooError, match=refused):
        load_recipe("lenet_digits", ["runtime.strategy='multi_worker'"])


def test_text_recipes_say_they_need_tensorflow(monkeypatch, tmp_path):
    with pytest.raises(ZooError, match="TensorFlow ops: runtime.backend 'torch' cannot run"):
        load_recipe("textcnn_sms_spam", ["runtime.backend='torch'"])
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")
    with pytest.raises(ZooError, match="text models turn strings into tokens inside the model"):
        zoo.train("textcnn_sms_spam", output=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# Run by a child process on another backend: each model builds, trains one step
# (model.train_on_batch, no TensorFlow API) and comes back from .keras computing the same
# outputs. A name is a registered model, or a head over a backbone ("fpn", "embedding"). One
# JSON line per model.
JAX_ROUND_TRIP = """
import json, sys, tempfile
import keras, numpy as np, zoo
from zoo.losses import SegmentationLoss

SEGMENTATION_HEADS = {"unet_head": zoo.heads.unet, "fpn": zoo.heads.fpn,
                      "deeplabv3plus": zoo.heads.deeplabv3plus}

def build(name):
    # (model, input shape, its target's shape)
    if name in SEGMENTATION_HEADS:
        backbone = zoo.backbone("mobilenet_v2", input_shape=(64, 64, 3), weights="none")
        return SEGMENTATION_HEADS[name](backbone, 5), (64, 64, 3), (64, 64)
    if name == "embedding":
        backbone = zoo.backbone("resnet20", input_shape=(32, 32, 3))
        return zoo.heads.embedding(backbone, 16), (32, 32, 3), (16,)
    shape = (32, 32, 3) if name != "lenet5" else (28, 28, 1)
    segmentation = name in zoo.list_models(task="segmentation")
    return zoo.get(name, input_shape=shape, classes=5), shape, (32, 32) if segmentation else ()

for name in sys.argv[1:]:
    keras.utils.set_random_seed(0)
    model, shape, target = build(name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, *shape)).astype("float32")  # zoo's nets take scaled pixels
    if name == "embedding":
        y, loss = rng.normal(size=(2, *target)).astype("float32"), "mse"
    else:
        y = rng.integers(0, 5, (2, *target))
        # Segmentation trains with zoo's loss (Keras' sparse cross-entropy on per-pixel
        # probabilities fails in PyTorch's backward: "grad_input must be contiguous").
        loss = SegmentationLoss(5) if target else "sparse_categorical_crossentropy"
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    # Adam: a step of at most its learning rate per weight. (SGD's first step on two
    # images blows up the batch norms of deep nets whose last maps are 1x1.)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss,
                  jit_compile=keras.backend.backend() == "jax")
    loss = float(model.train_on_batch(x, y))
    moved = sum(not np.array_equal(b, keras.ops.convert_to_numpy(w))
                for b, w in zip(before, model.trainable_weights))
    out = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    path = tempfile.mkdtemp() + "/m.keras"
    model.save(path)
    again = keras.ops.convert_to_numpy(keras.saving.load_model(path).predict_on_batch(x))
    print(json.dumps({"name": name, "backend": keras.backend.backend(), "loss": loss,
                      "moved": moved, "weights": len(before), "shape": list(out.shape),
                      "finite": bool(np.isfinite(out).all()),
                      "diff": float(np.abs(out - again).max())}), flush=True)
"""


# PyTorch is an optional extra (keras-zoo[torch], gigabytes of CUDA libraries from the
# registry): its tests run where it is installed.
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is not installed (zoo[torch])"
)


# One of each family zoo builds itself; one of each keras.applications family; every head
# (the segmentation heads over mobilenet_v2, the embedding head over resnet20). Text models
# vectorize with TensorFlow ops and train on TensorFlow only.
FAMILIES = {
    "zoo": ["lenet5", "resnet20", "resnet18", "vgg11_bn", "unet"],
    "keras.applications": [
        "mobilenet_v3_small",
        "efficientnet_b0",
        "efficientnet_v2_b0",
        "densenet121",
        "convnext_tiny",
        "keras_resnet50",
        "resnet50_v2",
        "keras_vgg16",
    ],
    "heads": ["unet_head", "fpn", "deeplabv3plus", "embedding"],
}


@pytest.mark.slow  # about a minute
def test_mixed_precision_on_jax():
    """The TensorFlow tests of mixed precision, run by pytest on JAX: float16 and bfloat16
    compute with float32 outputs, and float16's loss-scaled optimizer still updates on
    gradients below float16's range."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    tests = Path(__file__).parent / "test_training.py"
    names = "mixed_precision_model_keeps_float32_outputs or mixed_float16_scales_the_loss"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), "-k", names],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "5 passed" in done.stdout, done.stdout[-1000:]


def test_the_round_trip_covers_every_family_of_image_models():
    from zoo import registry

    family = {spec.name: spec.family for spec in registry.specs()}  # info() builds each
    covered = {family[n] for n in FAMILIES["zoo"] + FAMILIES["keras.applications"]}
    text = {family[n] for n in zoo.list_models(task="text")}
    assert covered == set(family.values()) - text


@pytest.mark.slow  # JAX compiles each net: 12 minutes for the three groups here (busy CPU)
@pytest.mark.parametrize("group", list(FAMILIES))
@pytest.mark.parametrize("backend", ["jax", pytest.param("torch", marks=needs_torch)])
def test_families_and_heads_train_a_step_and_round_trip(backend, group):
    names = FAMILIES[group]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", JAX_ROUND_TRIP, *names], env=env, capture_output=True, text=True
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["name"] for r in rows] == names
    for row in rows:
        assert row["backend"] == backend and np.isfinite(row["loss"]) and row["finite"], row
        # On two tiny images a unit can be dead or saturated and its weights keep still.
        assert row["moved"] >= 0.9 * row["weights"], row
        assert row["diff"] <= 1e-5, row


@pytest.mark.slow
@needs_torch
def test_a_torch_run_trains_and_exports_through_tensorflow(tmp_path):
    run = tmp_path / "run"
    done = _train_digits("torch", run)
    assert "Keras on torch, CPU, precision float32, XLA False" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == "torch" and metrics["accuracy"] > 0.8
    # Saved with PyTorch's own Adam (keras.src.backend.torch...): loaded here without it.
    report = zoo.export(run, format="tflite")
    assert report["top1_agreement"] >= 0.99
    assert zoo.evaluate(run)["accuracy"] == pytest.approx(metrics["accuracy"])


def test_saved_models_name_keras_own_optimizer_classes(tmp_path):
    """Keras on PyTorch saves Adam as keras.src.backend.torch.optimizers.torch_adam.Adam, which
    TensorFlow cannot rebuild (and whose import crashes a process holding both): zoo's saved
    files name keras.optimizers.Adam instead, with the same configuration and state."""
    import keras

    from zoo import rundir

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(np.ones((8, 4), "float32"), np.arange(8), verbose=0)
    rundir.save_model(model, tmp_path / "plain.keras")
    before = (tmp_path / "plain.keras").read_bytes()
    rundir.backend_neutral(tmp_path / "plain.keras")  # nothing backend-specific: untouched
    assert (tmp_path / "plain.keras").read_bytes() == before

    torch_saved = tmp_path / "torch.keras"
    with (
        zipfile.ZipFile(tmp_path / "plain.keras") as source,
        zipfile.ZipFile(torch_saved, "w") as target,
    ):
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                optimizer = config["compile_config"]["optimizer"]
                optimizer["module"] = "keras.src.backend.torch.optimizers.torch_adam"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises(Exception, match="Could not deserialize class"):
        keras.saving.load_model(torch_saved)
    rundir.backend_neutral(torch_saved)
    loaded = keras.saving.load_model(torch_saved)
    assert type(loaded.optimizer) is keras.optimizers.Adam
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.01)
    assert int(loaded.optimizer.iterations) == 1
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
