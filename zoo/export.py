"""Export a trained model to SavedModel, TFLite (float32, float16, dynamic range, int8) or ONNX,
and check the export against the Keras model on real eval images (the parity report).

Built on Keras' own `model.export`; TFLite models run through ai-edge-litert's interpreter and
ONNX models through onnxruntime. The exported model is the trained one, preprocessing included:
it takes raw pixel values in [0, 255] at the recipe's image size.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from zoo import rundir, tasks
from zoo.errors import ZooError, check_counts

FORMATS = ("savedmodel", "tflite", "onnx")
# The most eval examples the parity report reads by default (the task may read fewer).
SAMPLES = 2000
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


class ParityError(ZooError):
    """The export disagrees with the Keras model more than the tolerance allows."""


def artifact_name(
    fmt: str,
    quantize: str,
    full_integer: bool = False,
    input_dtype: str = "float32",
    any_size: bool = False,
) -> str:
    suffix = "" if quantize == "none" else f"_{quantize}" + ("_full" if full_integer else "")
    suffix += ("_uint8" if input_dtype == "uint8" else "") + ("_anysize" if any_size else "")
    return {
        "savedmodel": f"model{suffix}_savedmodel",
        "tflite": f"model{suffix}.tflite",
        "onnx": f"model{suffix}.onnx",
    }[fmt]


def _eval_batches(recipe, model, samples: int | None, seed: int = 0):
    """Real eval examples of the recipe and their targets (the first `samples` of the split,
    default SAMPLES, and at most the task's PARITY_EXAMPLES) read batch by batch, never the
    whole split into memory; without a recipe, `samples` (default 256) random-pixel images."""
    if recipe is not None:
        from zoo.data import build

        data = build(recipe, training=False)
        limit = min(samples or SAMPLES, tasks.get(recipe.task).PARITY_EXAMPLES or SAMPLES)
        images, targets, total = [], [], 0
        for x, y in data.eval:
            images.append(_numpy(x))
            targets.append(y.numpy())
            total += len(images[-1])
            if total >= limit:
                break
        return (
            np.concatenate(images)[:limit],
            np.concatenate(targets)[:limit],
            data.class_names,
        )
    if model.input.dtype == "string":
        raise ZooError(
            f"{model.name} takes text: export its run directory, whose recipe gives the eval "
            "texts the export is checked on"
        )
    shape = tuple(model.input.shape[1:])
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (samples or 256, *shape)).astype("float32"), None, None


def _numpy(batch) -> np.ndarray:
    """A batch as numpy: pixels, or texts as str objects (what Keras' predict takes)."""
    if batch.dtype.name == "string":
        return np.asarray([t.decode("utf-8", errors="replace") for t in batch.numpy()], object)
    return batch.numpy()


def _calibration_images(recipe, count: int, fallback: np.ndarray) -> np.ndarray:
    """`count` images of the recipe's training split, as the pipeline feeds them but without
    augmentation and whole (a model trained on `data.crop_size` crops is exported at
    `data.image_size`); without a recipe, the parity images."""
    if recipe is None:
        return fallback[:count]
    from zoo.data import build

    whole = recipe.data.model_copy(update={"crop_size": None})
    data = build(recipe.model_copy(update={"augment": [], "data": whole}))
    images, total = [], 0
    for x, _ in data.train:
        images.append(_numpy(x))
        total += len(images[-1])
        if total >= count:
            break
    return np.concatenate(images)[:count]


def _converter_options(quantize: str, calibration, full_integer: bool):
    import tensorflow as tf

    if quantize == "none":
        return {}
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "float16":
        options["target_spec"] = tf.lite.TargetSpec(supported_types=[tf.float16])
    elif quantize == "int8":
        calibration = calibration()

        def representative():
            for image in calibration:
                yield [image[None]]

        options["representative_dataset"] = representative
        if full_integer:
            options["target_spec"] = tf.lite.TargetSpec(
                supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            )
            options["inference_input_type"] = tf.int8
            options["inference_output_type"] = tf.int8
    return options


def float_layers(model) -> list[str]:
    """Names of the layers an int8 export keeps in float: zoo.layers.TanTriggs, whose
    band-pass of a gamma-corrected image is too small beside the image for 8 bits (an int8
    TanTriggs left a ResNet-20's embeddings at cosine 0.57 with Keras', 0.99 when it stayed
    float)."""
    from zoo.backbones.weights import sublayers
    from zoo.layers import TanTriggs

    return [layer.name for layer in sublayers(model) if isinstance(layer, TanTriggs)]


def _litert_keeping_float(model, path: Path, options: dict, keep: list[str]) -> None:
    """Writes `model` as an int8 TFLite file (`options` from `_converter_options`) with the
    operations of the layers named `keep` left in float: TFLite's selective quantization
    (tf.lite.experimental.QuantizationDebugger's denylisted nodes, named by the calibrated
    model's tensors)."""
    import re
    import tempfile
    import warnings

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = options["optimizations"]
        converter.representative_dataset = options["representative_dataset"]
        with warnings.catch_warnings():
            # The debugger runs TensorFlow's own tf.lite.Interpreter, which warns of its end.
            warnings.filterwarnings("ignore", "(?s).*tf.lite.Interpreter is deprecated")
            # Calibrated once; the nodes to keep are named by the calibrated model's tensors,
            # which run through the layers' names (each name_1 in Keras' SavedModel).
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=options["representative_dataset"]
            )
            tensors = Interpreter(model_content=debugger.calibrated_model).get_tensor_details()
            pattern = re.compile("|".join(rf"/{re.escape(name)}(_\d+)?/" for name in keep))
            nodes = [t["name"] for t in tensors if pattern.search(t["name"])]
            if not nodes:
                raise ZooError(f"no TFLite tensors of {', '.join(keep)} to keep in float")
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
            path.write_bytes(debugger.get_nondebug_quantized_model())


def runner(path: Path, fmt: str):
    """A function from a float32 batch of raw pixels to the exported model's outputs."""
    if fmt == "savedmodel":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        (spec,) = serve.structured_input_signature[1].values()
        return lambda x: next(iter(serve(tf.constant(x, dtype=spec.dtype)).values())).numpy()
    if fmt == "onnx":
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types, e.g. InvalidGraph
            raise ZooError(
                f"{path} was written but ONNX Runtime cannot run it: "
                f"{str(e).splitlines()[0][:300]}. SavedModel and TFLite exports do not depend on "
                "ONNX's operator set (ConvNeXt's exact GELU has no ONNX conversion yet)"
            ) from e
        name = session.get_inputs()[0].name
        # "tensor(float)", "tensor(uint8)", "tensor(int32)" (a text model's token ids), ...
        kind = session.get_inputs()[0].type[len("tensor(") : -1]
        dtype = np.float32 if kind == "float" else np.dtype(kind)
        return lambda x: session.run(None, {name: x.astype(dtype)})[0]
    from ai_edge_litert.interpreter import Interpreter

    from zoo._startup import quiet_stderr

    interpreter = Interpreter(model_path=str(path))
    # Tensors are allocated, and their details read, once per input shape: a call is the copy
    # in, invoke and the copy out (what a deployed interpreter does per inference).
    held = {"shape": None}

    def run(x):
        if held["shape"] != x.shape:
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, x.shape)
            with quiet_stderr():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"
                interpreter.allocate_tensors()
            held["shape"] = x.shape
            held["in"] = interpreter.get_input_details()[0]
            held["out"] = interpreter.get_output_details()[0]
        inp, out = held["in"], held["out"]
        if inp["dtype"] != np.float32 and not inp["quantization"][0]:
            x = x.astype(inp["dtype"])  # raw uint8 pixels
        elif inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(
                np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max
            ).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    return run


def in_float32(model):
    """`model` computing in float32: itself, or for a mixed-precision model (trained with
    runtime.precision mixed_float16 or mixed_bfloat16, whose variables are float32 already) a
    copy whose layers compute in float32 too. Converters need it: TFLite has no builtin
    bfloat16 kernels and ONNX Runtime no bfloat16 convolution, and float16 or int8
    quantization starts from a float32 graph. The copy goes through Keras' own `.keras` file
    with the layers' dtype policies rewritten, so everything the file holds (weights,
    vocabularies) comes along."""
    import json
    import tempfile
    import zipfile

    import keras

    def float32(node):
        if isinstance(node, dict):
            config = node.get("config")
            if node.get("class_name") == "DTypePolicy" and isinstance(config, dict):
                if str(config.get("name", "")).startswith("mixed_"):
                    return {**node, "config": {**config, "name": "float32"}}
            return {
                k: "float32" if k == "dtype" and str(v).startswith("mixed_") else float32(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [float32(v) for v in node]
        return node

    described = keras.saving.serialize_keras_object(model)
    if float32(described) == described:
        return model
    with tempfile.TemporaryDirectory() as tmp:
        mixed, plain = Path(tmp) / "mixed.keras", Path(tmp) / "float32.keras"
        model.save(mixed)
        with zipfile.ZipFile(mixed) as src:
            rewritten = float32(json.loads(src.read("config.json")))
            with zipfile.ZipFile(plain, "w") as dst:
                for item in src.infolist():
                    data = src.read(item.filename)
                    if item.filename == "config.json":
                        data = json.dumps(rewritten).encode()
                    dst.writestr(item, data)
        return keras.saving.load_model(plain, compile=False, safe_mode=True)


def _predict(fn, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([fn(images[i : i + batch]) for i in range(0, len(images), batch)])


def export(
    source,
    *,
    format: str,
    quantize: str = "none",
    output=None,
    representative: int = 200,
    full_integer: bool = False,
    tolerance: float | None = None,
    samples: int | None = None,
    input_dtype: str = "float32",
    any_size: bool = False,
) -> dict:
    """Exports a run directory, a .keras file or a Keras model, with a parity report.

    Writes the artifact and `<artifact>.parity.json` into `output` (default RUN_DIR/export).

    The parity report reads the first `samples` eval examples (default 2000; segmentation 64),
    batch by batch. The exported model takes raw pixels at the recipe's image size, as float32
    or, with `input_dtype="uint8"`, as uint8 (what image decoders give); with `any_size=True`
    it takes images of any height and width and resizes them (bilinear) as the pipeline did.

    Returns the parity report (with `path`, `size_bytes`, `tolerance`); raises ParityError
    when the agreement with the Keras model (the task's: top-1 agreement for classifiers, pixel
    agreement for segmentation) falls below `tolerance`.

    Example:

    ```python
    report = zoo.export("runs/digits", format="tflite", quantize="int8")
    ```
    """
    if format not in FORMATS:
        raise ZooError(f"unknown export format {format!r}; allowed: {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ZooError(f"unknown quantization {quantize!r}; allowed: {', '.join(QUANTIZATIONS)}")
    if samples is not None:
        check_counts(samples=samples)
    if quantize != "none" and format != "tflite":
        raise ZooError(
            f"quantization {quantize!r} is for --format tflite; {format} exports float32 only"
        )
    if full_integer and quantize != "int8":
        raise ZooError("full integer input and output needs --quantize int8")
    if input_dtype not in ("float32", "uint8"):
        raise ZooError(f"input_dtype must be 'float32' or 'uint8', received {input_dtype!r}")
    if full_integer and input_dtype != "float32":
        raise ZooError("full integer models take int8 input; leave the input type as float32")
    if tolerance is not None and not 0 <= tolerance <= 1:
        raise ZooError(f"tolerance must be between 0 and 1 (an agreement), received {tolerance}")
    model, recipe, run = rundir.load(source, what="export", compile=False)
    model = in_float32(model)
    keep_float = float_layers(model) if format == "tflite" and quantize == "int8" else []
    if keep_float and full_integer:  # before reading data or writing anything
        raise ZooError(
            f"{', '.join(keep_float)}: a full-integer model cannot keep TanTriggs in float, "
            "and in int8 it loses the image; export with --quantize int8 without "
            "--full-integer (int8 weights and float input and output)"
        )
    task = tasks.get(recipe.task) if recipe else _task_of(model)
    if output is None and not isinstance(source, str | os.PathLike):
        raise ZooError("exporting a model object needs output=, the folder to write to")
    if output:
        out_dir = Path(output)
    else:
        out_dir = Path(source) / "export" if Path(source).is_dir() else Path(source).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    images, targets, class_names = _eval_batches(recipe, model, samples)
    path = out_dir / artifact_name(format, quantize, full_integer, input_dtype, any_size)
    # Predicting first also "calls" a freshly loaded model, which the ONNX exporter requires.
    from zoo._startup import quiet_stderr, quiet_tensorflow_logger

    # Exports one after another in a process (zoo bench --export makes four) would each bring
    # TensorFlow's warnings of tf.function retracing.
    with quiet_tensorflow_logger():
        reference = model.predict(images, verbose=0, batch_size=64)
    keras_format = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}[format]
    # What is converted (the model behind the users' input, or a text model's token-id
    # network), how eval inputs become its inputs, and files that go beside it.
    target, feed, files = task.serving(model, format, input_dtype, any_size)
    options = _converter_options(
        quantize,
        lambda: feed(_calibration_images(recipe, representative, images)),
        full_integer,
    )
    if target is not model:
        with quiet_tensorflow_logger():
            target.predict(feed(images[:1]), verbose=0)  # "called", for ONNX
    # Written under a temporary name, then moved over the old artifact: an export that fails
    # (or is killed) half-way leaves the previous one whole.
    tmp = path.with_name(f".{os.getpid()}-{path.name}")
    try:
        # The converters print their progress and notes (TFLite's "fully_quantize: 0, ...",
        # tf2onnx's warnings) on file descriptor 2: shown only if the export fails.
        with quiet_stderr():
            if keep_float:
                _litert_keeping_float(target, tmp, options, keep_float)
            else:
                target.export(str(tmp), format=keras_format, verbose=False, **options)
    except Exception as e:  # converters raise many types; the message names the layer
        _remove(tmp)
        raise ZooError(f"{format} export failed: {str(e).splitlines()[0]}") from e
    _replace(tmp, path)
    if class_names:
        rundir.write_text(out_dir / "labels.txt", "\n".join(class_names) + "\n")
    for name, text in files.items():
        rundir.write_text(out_dir / name, text)

    run = runner(path, format)
    exported = _predict(lambda x: run(feed(x)), images)
    report = task.parity(reference, exported, targets, class_names)
    threshold = task.TOLERANCE[quantize] if tolerance is None else tolerance
    report.update(
        {
            "task": task.__name__.rsplit(".", 1)[-1],
            "agreement": task.AGREEMENT,
            "format": format,
            "quantize": quantize,
            "full_integer": full_integer,
            "input_dtype": input_dtype,
            "any_size": any_size,
            "path": str(path),
            "size_bytes": size_bytes(path),
            "tolerance": threshold,
            "data": recipe.data.source if recipe else "random pixels (no recipe)",
        }
    )
    rundir.write_json(out_dir / f"{path.name}.parity.json", report)
    agreement = report[task.AGREEMENT]
    if agreement < threshold:
        raise ParityError(
            f"{path.name}: {task.AGREEMENT.replace('_', ' ')} with Keras {agreement:.4f} is below "
            f"the tolerance {threshold} (see {path.name}.parity.json)"
        )
    return report


def _task_of(model):
    """The task of a model without a recipe, from its output's rank."""
    task = tasks.for_output_rank(len(model.output.shape))
    if task is None:
        raise ZooError(
            f"cannot tell the task of {model.name} (output shape {model.output.shape}); "
            "export its run directory"
        )
    return task


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(new: Path, path: Path) -> None:
    """Moves `new` (a file or a SavedModel folder) to `path`, over what was there."""
    if new.is_file():
        os.replace(new, path)
        return
    old = path.with_name(f".{os.getpid()}-old-{path.name}")
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    _remove(old)


def size_bytes(path: Path) -> int:
    """Size of a file, or of everything in a folder (a SavedModel)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
