"""Keras backends other than TensorFlow: a run trained on JAX (tf.data feeding it) writes the
same run directory and exports through TensorFlow with the same parity report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo import runtime
from zoo.errors import ZooError
from zoo.recipes.schema import RuntimeConfig

BIN = Path(sys.executable).parent


def test_a_jax_run_trains_and_exports_through_tensorflow(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["lenet_digits", "--set", "fit.epochs=2", "--set", "fit.verbose=0"]
    done = subprocess.run(
        [str(BIN / "zoo-train"), *args, "--output", str(run)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Keras on jax, CPU, precision float32, XLA True" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs"] == 2
    assert metrics["accuracy"] > 0.8
    # This process runs TensorFlow: the .keras file is backend-neutral.
    report = zoo.export(run, format="tflite")
    assert report["top1_agreement"] >= 0.99
    assert abs(report["export_accuracy"] - metrics["accuracy"]) < 0.01


def test_the_policy_on_jax(monkeypatch):
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")
    chosen = runtime.policy(RuntimeConfig())
    assert (chosen.precision, chosen.jit_compile, chosen.gpus) == ("float32", True, 0)
    assert chosen.describe().startswith("Keras on jax, CPU")
    with pytest.raises(ZooError, match="runtime.strategy 'mirrored' is TensorFlow's"):
        runtime.policy(RuntimeConfig(strategy="mirrored"))


def test_tensorflow_multi_worker_is_refused_with_the_reason():
    from zoo.recipes import load_recipe

    with pytest.raises(ZooError, match=r"'multi_worker' .* does not train Keras 3 models"):
        load_recipe("lenet_digits", ["runtime.strategy='multi_worker'"])


def test_text_recipes_say_they_need_tensorflow(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime.keras.backend, "backend", lambda: "jax")
    with pytest.raises(ZooError, match="text models turn strings into tokens inside the model"):
        zoo.train("textcnn_sms_spam", output=tmp_path / "run")
    assert not (tmp_path / "run").exists()
