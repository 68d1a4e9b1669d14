"""Benchmarks that print numbers: latency and size of a run's exports beside its Keras model."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from zoo import rundir
from zoo.errors import ZooError
from zoo.export import artifact_name, export, runner, size_bytes

# (label, format, quantization) of the exports compared with the Keras model.
EXPORTS = (
    ("SavedModel", "savedmodel", "none"),
    ("TFLite float32", "tflite", "none"),
    ("TFLite int8", "tflite", "int8"),
    ("ONNX Runtime", "onnx", "none"),
)


# What a text model is timed on: a message of typical length.
TEXT = "Hi, are we still meeting at 6 tonight? Call me when you get this, I will be at the station"


def _median_ms(fn, x, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_exports(run, *, repeats: int = 50, warmup: int = 5, batches=(1, 32)) -> list[dict]:
    """Median latency (ms) at each batch size and file size of the Keras model and each export
    of `run` (exported first where missing), on this machine's CPU.

    Example:

    ```python
    rows = bench_exports("runs/digits", repeats=20)
    ```
    """
    run = Path(run)
    if not run.is_dir():
        raise ZooError(f"{run} is not a run directory: bench --export needs a finished zoo run")
    model = rundir.load(run, what="bench --export")[0]
    texts = model.input.dtype == "string"
    if texts:  # a text model: strings in (token-id exports vectorize them first, in Python)
        import tensorflow as tf

        x = np.asarray([TEXT] * max(batches), object)
        keras_fn = lambda b: model.predict_on_batch(tf.constant(b))  # noqa: E731
    else:
        shape = tuple(model.input.shape[1:])
        x = np.random.default_rng(0).uniform(0, 255, (max(batches), *shape)).astype("float32")
        keras_fn = model.predict_on_batch
    candidates = [("Keras", run / rundir.MODEL, keras_fn)]
    for label, fmt, quantize in EXPORTS:
        path = run / "export" / artifact_name(fmt, quantize)
        if not path.exists():
            export(run, format=fmt, quantize=quantize)
        if texts:
            from zoo.predict import load

            candidates.append((label, path, load(path)[0]))
        else:
            candidates.append((label, path, runner(path, fmt)))
    rows = []
    for label, path, fn in candidates:
        row = {"model": label, "path": str(path), "size_bytes": size_bytes(path)}
        for b in batches:
            row[f"batch{b}_ms"] = _median_ms(fn, x[:b], repeats, warmup)
        rows.append(row)
    keras_row = rows[0]
    for row in rows:
        for key in [k for k in row if k.endswith("_ms")]:
            row[key.replace("_ms", "_vs_keras")] = row[key] / keras_row[key]
    return rows


def format_table(rows: list[dict]) -> str:
    batches = [k[: -len("_ms")] for k in rows[0] if k.endswith("_ms")]
    head = f"{'model':<16}{'size':>11}" + "".join(f"{b + ' ms':>13}{'x Keras':>9}" for b in batches)
    lines = [head]
    for row in rows:
        line = f"{row['model']:<16}{row['size_bytes'] / 1024:>8.0f} KiB"
        for b in batches:
            line += f"{row[b + '_ms']:>13.3f}{row[b + '_vs_keras']:>9.2f}"
        lines.append(line)
    return "\n".join(lines)
