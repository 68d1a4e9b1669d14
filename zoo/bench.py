"""Benchmarks that print numbers: latency and size of a run's exports beside its Keras model,
and training speed (images/s, FLOPs, MFU)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from zoo import rundir
from zoo.errors import ZooError, check_counts
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


def peak_flops(repeats: int = 10, n: int = 1024, dtype: str = "float32") -> float:
    """This machine's measured matrix-product rate (FLOP/s) in `dtype`: the fastest of
    `repeats` n x n products, the ceiling that model FLOP utilization (MFU) is a fraction of."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((n, n), seed=1), dtype)
    b = tf.cast(tf.random.uniform((n, n), seed=2), dtype)
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product().numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def forward_flops(model) -> int | None:
    """Floating-point operations of one image's forward pass (TensorFlow's profiler over the
    frozen graph; a multiply-add counts 2), or None off the TensorFlow backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((1, *model.input.shape[1:]), model.input.dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    profiler = tf.compat.v1.profiler
    options = profiler.ProfileOptionBuilder(profiler.ProfileOptionBuilder.float_operation())
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notice
    try:
        info = profiler.profile(
            graph=graph,
            run_meta=tf.compat.v1.RunMetadata(),
            cmd="op",
            options=options.with_empty_output().build(),
        )
    finally:
        tf.get_logger().setLevel(level)
    return int(info.total_float_ops)


def compiled_for_training(name: str, size: int, classes: int, precision: str = "auto"):
    """(model, policy): registry model `name` on size x size RGB, built and compiled as
    zoo-train would on this device (its precision, loss scaling and XLA policy; `precision`
    as a recipe's runtime.precision), with SGD with momentum and sparse cross-entropy."""
    import keras

    from zoo import registry, runtime
    from zoo.recipes.schema import RuntimeConfig
    from zoo.training import _dtype_policy, loss_scaled

    policy = runtime.policy(RuntimeConfig(precision=precision))
    with _dtype_policy(policy.precision):
        model = registry.get(name, input_shape=(size, size, 3), classes=classes)
    model.compile(
        optimizer=loss_scaled(model, keras.optimizers.SGD(0.01, momentum=0.9)),
        loss="sparse_categorical_crossentropy",
        jit_compile=policy.jit_compile,
    )
    return model, policy


def bench_training(
    name: str,
    *,
    batch: int = 32,
    size: int = 64,
    classes: int = 10,
    steps: int = 10,
    windows: int = 5,
    warmup: int = 3,
    precision: str = "auto",
) -> dict:
    """Training images/s of registry model `name` as zoo-train runs it on this machine (its
    precision and XLA policy, or `precision` as a recipe's runtime.precision; SGD with
    momentum, `model.fit`), fed cached tensors so that the
    input pipeline is not measured: the median of `windows` timed windows of `steps` steps after
    `warmup` steps. With the forward FLOPs per image, the training FLOPs (3x forward: the
    forward pass and two products per layer backward) and MFU, the fraction of the measured
    matrix-product peak that training reaches.

    Example:

    ```python
    row = bench_training("resnet18", batch=32, size=64)
    print(row["images_per_second"], row["mfu"])
    ```
    """
    import keras
    import tensorflow as tf

    from zoo import runtime

    check_counts(batch=batch, size=size, steps=steps, windows=windows, warmup=warmup)
    runtime.seed_everything(0)
    model, policy = compiled_for_training(name, size, classes, precision)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, batch)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    ends = []

    class StepEnds(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            ends.append(time.perf_counter())

    total = warmup + steps * windows
    model.fit(
        data, steps_per_epoch=total, epochs=1, verbose=0, callbacks=[StepEnds()], shuffle=False
    )
    marks = ends[warmup - 1 :: steps]  # the end of the warm-up, then of each window
    seconds = [b - a for a, b in zip(marks, marks[1:])]
    per_second = batch * steps / statistics.median(seconds)
    flops = forward_flops(model)
    # Against the peak of the precision the layers compute in (bfloat16 runs on other units).
    compute = policy.precision.removeprefix("mixed_")
    peak = peak_flops(dtype=compute)
    row = {
        "model": name,
        "backend": keras.backend.backend(),
        "batch": batch,
        "size": size,
        "precision": policy.precision,
        "jit_compile": policy.jit_compile,
        "onednn": runtime.onednn(),
        "images_per_second": per_second,
        "window_images_per_second": [batch * steps / s for s in seconds],
        "forward_gflops_per_image": flops / 1e9 if flops else None,
        "peak_gflops": peak / 1e9,
        "peak_dtype": compute,
        "mfu": 3 * flops * per_second / peak if flops else None,
    }
    return row


def format_training(row: dict) -> str:
    from zoo.runtime import onednn_words

    lines = [
        f"{row['model']} training on Keras/{row['backend']}, batch {row['batch']}, "
        f"{row['size']}x{row['size']}, {row['precision']}, XLA {row['jit_compile']}"
        + onednn_words(row.get("onednn")),
        f"images/s        {row['images_per_second']:.1f} (median of "
        f"{len(row['window_images_per_second'])} windows: "
        + ", ".join(f"{v:.1f}" for v in row["window_images_per_second"])
        + ")",
    ]
    if row["forward_gflops_per_image"] is not None:
        lines.append(f"GFLOPs/image    {row['forward_gflops_per_image']:.3f} forward, x3 training")
    lines.append(
        f"matmul peak     {row['peak_gflops']:.1f} GFLOP/s (measured, {row['peak_dtype']})"
    )
    if row["mfu"] is not None:
        lines.append(f"MFU             {row['mfu']:.1%}")
    return "\n".join(lines)


def bench_data(recipe, *, steps: int = 50, repeats: int = 5) -> dict:
    """The recipe's input pipeline on its own and under training: images/s of `steps` training
    batches drawn from the pipeline (decode and cache on the first pass, then warm), and
    `repeats` training windows of `steps` steps fed by the pipeline, interleaved with as many
    fed the same batches held in memory (in A B B A order, so that a slowdown of the machine
    that comes and goes on a period does not fall on one side only). The rates and
    `fed_vs_cached` come from each side's fastest window: the pipeline's own cost is in every
    fed window, while a slowdown of the host (other tenants, throttling) only ever adds time to
    some windows; the medians are in the row too. `fed_vs_cached` near 1 means the pipeline
    keeps up with training.

    Example:

    ```python
    row = bench_data("lenet_digits", steps=20)
    print(row["warm_images_per_second"], row["fed_vs_cached"])
    ```
    """
    import keras
    import tensorflow as tf

    from zoo import data as data_lib
    from zoo import runtime, tasks
    from zoo.recipes import Recipe, load_recipe
    from zoo.training import build_model, compile_model

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    check_counts(steps=steps, repeats=repeats)
    runtime.seed_everything(recipe.runtime.seed)
    policy = runtime.policy(recipe.runtime)
    data = data_lib.build(recipe)
    steps = min(steps, data.steps_per_epoch)
    images = steps * data.batch_size

    def drain():
        start = time.perf_counter()
        for _ in data.train.take(steps):
            pass
        return time.perf_counter() - start

    cold, warm = drain(), statistics.median(drain() for _ in range(repeats))
    held = [batch for batch in data.train.take(steps)]
    joined = tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *held)
    cached = tf.data.Dataset.from_tensor_slices(joined).batch(data.batch_size).cache()
    cached = cached.with_options(data.train.options())  # the same tf.data settings
    task = tasks.get(recipe.task)
    with policy.strategy.scope():
        model = build_model(recipe, len(data.class_names), policy.precision, data)
        trained = task.trainer(recipe, model, len(data.class_names))
        compile_model(trained, recipe, data.steps_per_epoch, policy.jit_compile)

    def train(dataset):
        start = time.perf_counter()
        trained.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - start

    train(cached.repeat())  # builds the training step
    seconds = {"fed": [], "cached": []}
    sources = {"fed": data.train.repeat, "cached": cached.repeat}
    for i in range(repeats):  # interleaved, so that both see the same machine
        for side in ("fed", "cached") if i % 2 == 0 else ("cached", "fed"):
            seconds[side].append(train(sources[side]()))
    fed, kept = min(seconds["fed"]), min(seconds["cached"])
    return {
        "recipe": recipe.name,
        "backend": keras.backend.backend(),
        "steps": steps,
        "batch": data.batch_size,
        "cold_images_per_second": images / cold,
        "warm_images_per_second": images / warm,
        "fed_images_per_second": images / fed,
        "cached_images_per_second": images / kept,
        "fed_vs_cached": kept / fed,
        "fed_seconds": seconds["fed"],
        "cached_seconds": seconds["cached"],
        "median_fed_vs_cached": statistics.median(seconds["cached"])
        / statistics.median(seconds["fed"]),
    }


def format_data(row: dict) -> str:
    return "\n".join(
        [
            f"{row['recipe']}: {row['steps']} training batches of {row['batch']} "
            f"(Keras/{row['backend']})",
            f"pipeline alone   {row['cold_images_per_second']:.0f} images/s first pass, "
            f"{row['warm_images_per_second']:.0f} warm",
            f"training fed     {row['fed_images_per_second']:.0f} images/s by the pipeline, "
            f"{row['cached_images_per_second']:.0f} from memory",
            f"fed vs cached    {row['fed_vs_cached']:.2f}x (fastest of "
            f"{len(row['fed_seconds'])} interleaved windows each; medians "
            f"{row['median_fed_vs_cached']:.2f}x)",
        ]
    )
