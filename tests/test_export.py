"""Exports of a small trained model in every format and quantization, reloaded and compared."""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from tests.conftest import TF_LOG_LINE, run_as_user
from zoo.errors import ZooError
from zoo.export import ParityError, artifact_name, export, runner
from zoo.recipes import load_recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    recipe = load_recipe("lenet_digits", ["fit.epochs=6", "fit.verbose=0"])
    return zoo.train(recipe, output=out, log=lambda *a, **k: None)


CASES = [
    ("savedmodel", "none", False, "model_savedmodel"),
    ("tflite", "none", False, "model.tflite"),
    ("tflite", "float16", False, "model_float16.tflite"),
    ("tflite", "dynamic", False, "model_dynamic.tflite"),
    ("tflite", "int8", False, "model_int8.tflite"),
    ("tflite", "int8", True, "model_int8_full.tflite"),
    ("onnx", "none", False, "model.onnx"),
]


@pytest.mark.parametrize("fmt, quantize, full, name", CASES, ids=lambda v: str(v))
def test_export_matches_keras(trained, fmt, quantize, full, name):
    report = export(trained, format=fmt, quantize=quantize, full_integer=full)
    path = trained / "export" / name
    assert Path(report["path"]) == path and path.exists()
    saved = json.loads((trained / "export" / f"{name}.parity.json").read_text())
    assert saved == report
    assert report["examples"] == 360  # the whole eval split of digits
    assert (trained / "export" / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    if quantize in ("none",):
        assert report["top1_agreement"] == 1.0
        assert report["max_rel_diff"] < 1e-4
    elif quantize == "float16":
        assert report["top1_agreement"] >= 0.99
    else:
        assert report["top1_agreement"] >= 0.98
        assert abs(report["export_accuracy"] - report["keras_accuracy"]) <= 0.01
    # The exported file runs on its own: raw [0, 255] pixels in, probabilities out.
    pixels = np.full((2, 32, 32, 1), 255.0, "float32")
    out = runner(path, fmt)(pixels)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=0.02)


def exported_once(trained, format, quantize="none", full_integer=False):
    """The report of `export(trained, ...)` into the run's export folder: read back where a
    test before made that artifact there (the same model and settings; exporting takes
    seconds), made where none did."""
    name = artifact_name(format, quantize, full_integer, "float32", False)
    saved = trained / "export" / f"{name}.parity.json"
    if (trained / "export" / name).exists() and saved.exists():
        report = json.loads(saved.read_text())
        asked = {"format": format, "quantize": quantize, "full_integer": full_integer}
        if {k: report.get(k) for k in asked} == asked and report.get("input_dtype") == "float32":
            return report
    return export(trained, format=format, quantize=quantize, full_integer=full_integer)


def test_int8_is_small_and_full_integer_takes_int8(trained):
    f32 = exported_once(trained, "tflite")
    i8 = exported_once(trained, "tflite", "int8", full_integer=True)
    assert i8["size_bytes"] <= 0.30 * f32["size_bytes"]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=i8["path"])
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


def test_parity_reads_a_bounded_number_of_eval_images(trained, tmp_path):
    code, out, err = zoo_cli(
        "export", str(trained), "--format", "tflite", "--samples", "50", "-o", str(tmp_path)
    )
    assert code == 0, err
    report = json.loads((tmp_path / "model.tflite.parity.json").read_text())
    assert report["examples"] == 50  # of the 360 eval images


def test_export_of_a_keras_file_uses_random_pixels(trained, tmp_path):
    report = export(trained / "model.keras", format="tflite", output=tmp_path, samples=16)
    assert report["examples"] == 16 and "keras_accuracy" not in report
    assert report["data"].startswith("random pixels")


def test_export_of_a_model_object(trained, tmp_path):
    import keras

    model = keras.saving.load_model(trained / "model.keras")
    with pytest.raises(ZooError, match="needs output="):
        export(model, format="onnx")
    report = export(model, format="onnx", output=tmp_path, samples=8)
    assert report["top1_agreement"] == 1.0 and (tmp_path / "model.onnx").is_file()


def test_parity_below_tolerance_raises_and_keeps_the_report(trained, monkeypatch):
    from zoo.tasks import classification

    real = classification.parity
    monkeypatch.setattr(classification, "parity", lambda *a: {**real(*a), "top1_agreement": 0.5})
    with pytest.raises(
        ParityError, match="top1 agreement with Keras 0.5000 is below the tolerance"
    ):
        export(trained, format="tflite", quantize="dynamic")
    saved = json.loads((trained / "export" / "model_dynamic.tflite.parity.json").read_text())
    assert saved["top1_agreement"] == 0.5 and saved["tolerance"] == 0.98


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "coreml"}, "unknown export format 'coreml'"),
        ({"format": "tflite", "quantize": "int4"}, "unknown quantization 'int4'"),
        ({"format": "onnx", "quantize": "int8"}, "is for --format tflite"),
        ({"format": "tflite", "full_integer": True}, "needs --quantize int8"),
        ({"format": "tflite", "tolerance": 1.5}, "tolerance must be between 0 and 1"),
        ({"format": "tflite", "samples": 0}, "samples must be a positive whole number"),
    ],
)
def test_export_errors(trained, kwargs, message):
    with pytest.raises(ZooError, match=message):
        export(trained, **kwargs)


@pytest.mark.parametrize(
    "inputs, kwargs, message",
    [
        ("x.png", {"top_k": 0}, "top_k must be a positive whole number, received 0"),
        (7, {}, "inputs must be a file path, a text, or a list of them, received int"),
        ([], {}, "nothing to predict"),
    ],
)
def test_predict_argument_errors(trained, inputs, kwargs, message):
    with pytest.raises(ZooError, match=message):
        zoo.predict(trained, inputs, **kwargs)


def test_train_output_must_be_a_path(tmp_path):
    with pytest.raises(ZooError, match="output must be a folder path, received float"):
        zoo.train("lenet_digits", output=1.5)


def test_export_needs_a_model(tmp_path):
    with pytest.raises(ZooError, match="holds no model.keras"):
        export(tmp_path, format="onnx")


def zoo_cli(*args):
    """`zoo ARGS` in this process (the console script is tested in test_cli.py)."""
    from click.testing import CliRunner

    import zoo_cli

    result = CliRunner().invoke(zoo_cli.main, list(args), prog_name="zoo")
    return result.exit_code, result.stdout, result.stderr


def test_cli_export_prints_the_parity_table(trained):
    code, out, err = zoo_cli("export", str(trained), "--format", "tflite", "--quantize", "float16")
    assert code == 0, err[-2000:]
    assert "top-1 agreement" in out and "exported" in out
    code, _, err = zoo_cli("export", str(trained), "--format", "savedmodel", "--quantize", "int8")
    assert code == 2 and "is for --format tflite" in err


def test_cli_export_shows_no_converter_lines(trained, tmp_path):
    """The converters' own lines (TFLite's "fully_quantize: 0, ...", LiteRT's "Created
    TensorFlow Lite XNNPACK delegate", tf2onnx's FutureWarning) stay off the terminal: in a
    fresh process, as a user runs it, without TF_CPP_MIN_LOG_LEVEL set."""
    for args in (["--format", "tflite", "--quantize", "int8"], ["--format", "onnx"]):
        result = run_as_user("zoo", "export", str(trained), "--output", str(tmp_path), *args)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "top-1 agreement" in result.stdout
        for line in result.stderr.splitlines():
            assert not TF_LOG_LINE.match(line), line
            assert not re.search("fully_quantize|XNNPACK|FutureWarning", line), line


def png_digits(tmp_path, trained):
    """Eval images of the trained recipe written as PNG files, with their labels."""
    from PIL import Image

    from zoo.data import build

    data = build(load_recipe(trained / "recipe.toml"), training=False)
    x, y = next(iter(data.eval))
    paths = []
    for i, image in enumerate(x.numpy()[:6]):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(image[..., 0].round().astype("uint8"), mode="L").save(path)
        paths.append(path)
    return paths, y.numpy()[:6], x.numpy()[:6]


@pytest.fixture(scope="module")
def exported(trained):
    """The trained run with a float SavedModel, TFLite, int8 TFLite and ONNX export."""
    for fmt, quantize in (
        ("savedmodel", "none"),
        ("tflite", "none"),
        ("tflite", "int8"),
        ("onnx", "none"),
    ):
        exported_once(trained, fmt, quantize)
    return trained


@pytest.mark.parametrize(
    "target",
    ["run", "keras", "model_savedmodel", "model.tflite", "model_int8.tflite", "model.onnx"],
)
def test_predict_every_format_agrees_with_keras(exported, tmp_path, target):
    import keras

    trained = exported
    paths, labels, pixels = png_digits(tmp_path, trained)
    model = {"run": trained, "keras": trained / "model.keras"}.get(
        target, trained / "export" / target
    )
    results = zoo.predict(model, paths, top_k=3)
    keras_top1 = keras.saving.load_model(trained / "model.keras").predict(pixels, verbose=0)
    agree = 0
    for result, expected in zip(results, keras_top1.argmax(1)):
        assert len(result["top"]) == 3
        agree += result["top"][0]["name"] == str(expected)
        scores = [t["score"] for t in result["top"]]
        assert scores == sorted(scores, reverse=True)
    # The PNG round trip is lossless at the trained size: float formats agree on every image,
    # int8 (98% agreement over the eval split) on all but at most one.
    assert agree >= (5 if "int8" in target else 6)


def test_cli_predict_json(trained, tmp_path):
    paths, _, _ = png_digits(tmp_path, trained)
    code, out, err = zoo_cli("predict", str(trained), *map(str, paths[:2]), "--json", "-k", "2")
    assert code == 0, err[-2000:]
    parsed = json.loads(out)
    assert [r["image"] for r in parsed] == [str(p) for p in paths[:2]]
    assert all(len(r["top"]) == 2 for r in parsed)
    code, _, err = zoo_cli("predict", str(tmp_path / "none.tflite"), str(paths[0]))
    assert code == 2 and "cannot predict with" in err


def test_a_failed_export_leaves_the_previous_artifact_whole(trained, tmp_path, monkeypatch):
    import keras

    first = export(trained, format="tflite", output=tmp_path)
    before = Path(first["path"]).read_bytes()

    def half_written(self, filepath, **kwargs):
        Path(filepath).write_bytes(b"half a model")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(keras.Model, "export", half_written)
    with pytest.raises(ZooError, match="tflite export failed: converter crashed"):
        export(trained, format="tflite", output=tmp_path)
    assert Path(first["path"]).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "labels.txt",
        "model.tflite",
        "model.tflite.parity.json",
    ]


def test_tflite_runner_allocates_once_per_input_shape(exported, monkeypatch):
    """What bench times for TFLite is the copy in, invoke and copy out, not the allocation."""
    from ai_edge_litert.interpreter import Interpreter

    calls = []
    allocate = Interpreter.allocate_tensors
    monkeypatch.setattr(
        Interpreter, "allocate_tensors", lambda self: (calls.append(1), allocate(self))[1]
    )
    fn = runner(exported / "export" / "model.tflite", "tflite")
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    first = fn(x)
    for _ in range(3):
        np.testing.assert_array_equal(fn(x), first)
    assert len(calls) == 1
    assert fn(x[:1]).shape == (1, 10) and len(calls) == 2
    np.testing.assert_allclose(fn(x[:1]), first[:1], atol=1e-6)


def test_a_classifier_is_no_embedder(exported, tmp_path):
    """Class probabilities are not embeddings: embed and verify say so instead of printing
    them as vectors, for the run and its exports alike."""
    from zoo.verification import embed, verify

    paths, _, _ = png_digits(tmp_path, exported)
    for model in (exported, exported / "export" / "model.tflite"):
        with pytest.raises(ZooError, match="is a classification model .* not embeddings"):
            embed(model, paths[:1])
    with pytest.raises(ZooError, match="not embeddings"):
        verify(exported, paths[0], paths[1], threshold=0.5)


def test_int8_calibration_of_a_uint8_input_model_feeds_uint8(exported, monkeypatch):
    """The representative images reach the converter as the model's input type."""
    import importlib

    export_module = importlib.import_module("zoo.export")  # the module, not zoo.export()

    seen = []
    original = export_module._converter_options

    def spy(quantize, calibration, full_integer):
        options = original(quantize, calibration, full_integer)
        seen.extend(x[0].dtype for x, _ in zip(options["representative_dataset"](), range(3)))
        return options

    monkeypatch.setattr(export_module, "_converter_options", spy)
    report = export(exported, format="tflite", quantize="int8", input_dtype="uint8")
    assert seen == [np.uint8] * 3 and report["top1_agreement"] >= 0.98


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_uint8_input_carries_the_preprocessing(exported, tmp_path, fmt):
    """Decoded image bytes go in as they are: same top-1 as the Keras model on the pipeline."""
    import keras

    report = export(exported, format=fmt, input_dtype="uint8")
    assert report["top1_agreement"] == 1.0 and report["input_dtype"] == "uint8"
    paths, _, pixels = png_digits(tmp_path, exported)
    from PIL import Image

    raw = np.stack([np.asarray(Image.open(p))[..., None] for p in paths])  # uint8 from PNG
    assert raw.dtype == np.uint8
    keras_top1 = keras.saving.load_model(exported / "model.keras").predict(pixels, verbose=0)
    exported_out = runner(Path(report["path"]), fmt)(raw)
    np.testing.assert_array_equal(exported_out.argmax(1), keras_top1.argmax(1))


def test_bench_exports_reports_every_runtime(exported):
    from zoo.bench import bench_exports, format_table

    rows = bench_exports(exported, repeats=2, warmup=1)
    assert [r["model"] for r in rows] == [
        "Keras",
        "SavedModel",
        "TFLite float32",
        "TFLite int8",
        "ONNX Runtime",
    ]
    for row in rows:
        assert row["size_bytes"] > 0 and row["batch1_ms"] > 0 and row["batch32_ms"] > 0
    assert rows[0]["batch1_vs_keras"] == 1.0
    assert rows[3]["size_bytes"] <= 0.30 * rows[2]["size_bytes"]
    table = format_table(rows)
    assert table.splitlines()[0].split()[:2] == ["model", "size"]
    assert len(table.splitlines()) == 6


def test_bench_exports_what_is_missing_without_retracing_warnings(trained, tmp_path, caplog):
    """bench --export on a run without exports makes the four in one process; TensorFlow's
    logger would warn of tf.function retracing by the third."""
    import logging
    import shutil

    from zoo.bench import bench_exports

    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("export"))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        rows = bench_exports(run, repeats=1, warmup=0, batches=(1,))
    assert len(rows) == 5 and all(Path(row["path"]).exists() for row in rows)
    assert not [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]


def _architectures():
    """zoo's own nets, and one keras.applications net per family."""
    from tests.test_registry import FAST_KERAS
    from zoo.backbones import KERAS

    return [n for n in zoo.list_models() if n not in KERAS or n in FAST_KERAS]


@pytest.mark.slow
@pytest.mark.parametrize("name", _architectures())
def test_every_registry_model_exports(name, tmp_path):
    """Each architecture converts to TFLite and ONNX with outputs equal to Keras."""
    shape = (28, 28, 1) if name == "lenet5" else (32, 32, 3)
    model = zoo.get(name, input_shape=shape, classes=5)
    model.save(tmp_path / "model.keras")
    for fmt in ("tflite", "onnx"):
        if fmt == "onnx" and name.startswith("convnext"):
            # tf2onnx writes Keras' exact GELU as Erfc, which ONNX Runtime has no kernel for.
            with pytest.raises(ZooError, match="ONNX Runtime cannot run it: .*Erfc"):
                export(tmp_path / "model.keras", format=fmt, samples=8)
            continue
        report = export(tmp_path / "model.keras", format=fmt, samples=8)
        assert report["top1_agreement"] == 1.0
        assert report["max_abs_diff"] < 1e-4


def test_keras_applications_preprocessing_exports(tmp_path):
    """The preprocessing zoo adds to keras.applications ResNet (v1) and VGG nets (RGB to BGR,
    then mean subtraction) converts with outputs equal to Keras. (The nets themselves: the
    slow whole-registry test.)"""
    import keras

    from zoo.backbones.apps import preprocessing

    inputs = keras.Input((16, 16, 3), name="image")
    x = inputs
    for layer in preprocessing("caffe"):
        x = layer(x)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.save(tmp_path / "model.keras")
    for fmt in ("tflite", "onnx"):
        report = export(tmp_path / "model.keras", format=fmt, samples=8)
        assert report["top1_agreement"] == 1.0
        assert report["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_any_size_export_resizes_inside(exported, tmp_path, fmt):
    """Images of another size go in as they are; the model resizes as training did."""
    from PIL import Image

    report = export(exported, format=fmt, any_size=True, input_dtype="uint8")
    assert report["top1_agreement"] == 1.0 and report["any_size"]
    paths, _, _ = png_digits(tmp_path, exported)
    big = []
    for p in paths:  # 2x nearest-neighbour upscale: 64x64 pictures of the same digits
        image = Image.open(p)
        bigger = tmp_path / f"big_{p.name}"
        image.resize((64, 64), Image.Resampling.NEAREST).save(bigger)
        big.append(bigger)
    small = zoo.predict(exported, paths, top_k=1)
    large = zoo.predict(Path(report["path"]), big, top_k=1)
    same = sum(a["top"][0]["name"] == b["top"][0]["name"] for a, b in zip(small, large))
    assert same >= 5


@pytest.mark.parametrize(
    "precision, data, formats",
    [
        ("mixed_bfloat16", [], [("tflite", "none"), ("tflite", "int8"), ("onnx", "none")]),
        # float16 trains slowly on a CPU (about 3x bfloat16's time): a fifth of the digits,
        # too few for a model whose int8 export keeps its top-1 (the path is bfloat16's).
        ("mixed_float16", ["data.max_per_class=60"], [("tflite", "none"), ("onnx", "none")]),
    ],
    ids=["mixed_bfloat16", "mixed_float16"],
)
def test_a_mixed_precision_run_exports_in_float32(tmp_path, precision, data, formats):
    # TFLite has no builtin bfloat16 kernels and ONNX Runtime no bfloat16 convolution: the
    # export computes in float32, from the run's float32 variables.
    overrides = ["fit.epochs=1", "fit.verbose=0", f'runtime.precision="{precision}"', *data]
    recipe = load_recipe("lenet_digits", overrides)
    run = zoo.train(recipe, output=tmp_path / "run", log=lambda *a, **k: None)
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.get_layer("lenet5").get_layer("c1").dtype_policy.name == precision
    for fmt, quantize in formats:
        report = export(run, format=fmt, quantize=quantize)
        assert report["top1_agreement"] >= (0.98 if quantize == "int8" else 0.99), report
    assert report["max_rel_diff"] < 1e-4  # ONNX against the float32 Keras model


def test_a_float32_model_is_exported_as_it_is():
    from zoo.export import in_float32

    model = zoo.get("lenet5", input_shape=(32, 32, 1), classes=10)
    assert in_float32(model) is model
