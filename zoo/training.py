"""Training a recipe: run directory, model, compile, callbacks, `model.fit`, final evaluation.

Read top to bottom, `train` is the whole path: everything else here is one step of it.
"""

from __future__ import annotations

import csv
import math
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import keras

from zoo import data as data_lib
from zoo import evaluation, registry, rundir, runtime
from zoo.errors import ZooError
from zoo.recipes import Recipe, dumps, load_recipe
from zoo.recipes.schema import OPTIMIZERS
from zoo.schedules import learning_rate


def default_output(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"


@contextmanager
def _dtype_policy(name: str):
    """Builds the model under `name` without leaving a changed global policy behind."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(recipe: Recipe, classes: int, precision: str = "float32") -> keras.Model:
    """The recipe's model with its input preprocessing: it takes [0, 255] pixels."""
    height, width = recipe.data.image_size
    shape = (height, width, recipe.data.channels)
    args = {"input_shape": shape, "classes": classes, **recipe.model.args}
    if args["classes"] != classes:
        raise ZooError(
            f"recipe {recipe.name}: model.args.classes is {args['classes']} but the "
            f"data has {classes} classes; remove model.args.classes"
        )
    mixed = precision.startswith("mixed")
    activation = args.pop("classifier_activation", "softmax")
    with _dtype_policy(precision):
        net = registry.get(
            recipe.model.name, classifier_activation=None if mixed else activation, **args
        )
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for layer in data_lib.preprocessing(recipe.data):
        x = layer(x)
    outputs = net(x)
    if mixed:
        # Softmax and loss in float32: float16 probabilities lose the small ones.
        outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(
            outputs
        )
    return keras.Model(inputs, outputs, name=recipe.name)


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int, jit_compile) -> None:
    cfg = recipe.compile
    optimizer_cls = getattr(keras.optimizers, OPTIMIZERS[cfg.optimizer.name])
    optimizer = optimizer_cls(
        learning_rate=learning_rate(cfg, steps_per_epoch, recipe.fit.epochs), **cfg.optimizer.args
    )
    one_hot = recipe.one_hot_labels
    if one_hot:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    metrics = []
    for name in cfg.metrics:
        if name == "accuracy":
            metrics.append(
                keras.metrics.CategoricalAccuracy(name="accuracy")
                if one_hot
                else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            )
        else:
            top5 = (
                keras.metrics.TopKCategoricalAccuracy
                if one_hot
                else keras.metrics.SparseTopKCategoricalAccuracy
            )
            metrics.append(top5(k=5, name="top5_accuracy"))
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)


class _State(keras.callbacks.Callback):
    """Keeps the training seconds across resumed runs in checkpoints/state.json."""

    def __init__(self, path: Path, seconds: float):
        super().__init__()
        self.path, self.seconds = path, seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start
        rundir.write_json(self.path, {"epochs_done": epoch + 1, "train_seconds": self.seconds})


def _best_so_far(history: Path, monitor: str) -> tuple[str, float | None]:
    """ModelCheckpoint's mode for `monitor` and the best value in an earlier (resumed) history."""
    mode = "max" if "acc" in monitor or "auc" in monitor or "iou" in monitor else "min"
    values = [row[monitor] for row in evaluation.read_history(history) if monitor in row]
    return mode, (max(values) if mode == "max" else min(values)) if values else None


def _callbacks(run: Path, recipe: Recipe, seconds: float) -> list:
    fit = recipe.fit
    mode, best = _best_so_far(run / rundir.HISTORY, fit.monitor)
    out = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(run / rundir.BEST),
            monitor=fit.monitor,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.CSVLogger(str(run / rundir.HISTORY), append=True),
        keras.callbacks.TensorBoard(str(run / rundir.TENSORBOARD)),
        _State(run / rundir.STATE, seconds),
    ]
    if fit.early_stopping is not None:
        out.append(keras.callbacks.EarlyStopping(**fit.early_stopping.model_dump()))
    # Last: an epoch is backed up only after its history row, best checkpoint and seconds are
    # written, so a crash in between can leave an extra row (trimmed on resume), never a gap.
    # double_checkpoint keeps the previous backup, for a kill in the middle of writing one.
    out.append(keras.callbacks.BackupAndRestore(str(run / rundir.BACKUP), double_checkpoint=True))
    return out


def _completed_epochs(run: Path) -> int:
    meta = rundir.read_json(run / rundir.BACKUP / "training_metadata.json")
    return int(meta.get("epoch", 0))


def _trim_history(path: Path, epochs: int) -> None:
    """Drops history rows of epochs after the last backup (a crash can land in between)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < epochs]
    with rundir.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def check_run(recipe: Recipe, output, resume: bool) -> Path:
    """The run directory: free for a new run, or an unfinished run of this recipe to resume.
    Creates nothing, so a run that fails to start leaves nothing behind."""
    run = Path(output) if output else default_output(recipe)
    saved = run / rundir.RECIPE
    if resume:
        if not saved.is_file():
            raise ZooError(
                f"--resume: {run} holds no run to resume (no {rundir.RECIPE}); "
                "pass the --output directory of an earlier run"
            )
        if (run / rundir.METRICS).is_file():
            raise ZooError(
                f"--resume: the run in {run} already finished; see its "
                f"{rundir.METRICS}, or start a new run with another --output"
            )
        if dumps(load_recipe(saved)) != dumps(recipe):
            raise ZooError(
                f"--resume: the recipe differs from the one saved in {saved}; "
                "resume with the same recipe and --set options (or with none)"
            )
        return run
    if saved.is_file():
        raise ZooError(
            f"{run} already holds a run; pass --resume to continue it, or choose another --output"
        )
    return run


def train(
    recipe: Recipe | str, *, output=None, resume: bool = False, callbacks=(), log=print
) -> Path:
    """Trains `recipe` and returns the run directory (see DESIGN.md for its files).

    With `resume=True`, `output` names a run that stopped early; training continues from its
    last completed epoch, with optimizer and schedule state.

    Example:

    ```python
    run = zoo.train("lenet_digits", output="runs/digits")
    ```
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    run = check_run(recipe, output, resume)
    runtime.seed_everything(recipe.runtime.seed)
    policy = runtime.policy(recipe.runtime)
    log(f"zoo: {recipe.name} -> {run} ({policy.describe()})")
    data = data_lib.build(recipe)
    if not resume:
        run.mkdir(parents=True, exist_ok=True)
        rundir.write_text(run / rundir.RECIPE, dumps(recipe))
    log(
        f"zoo: {data.train_count} training and {data.eval_count} eval examples "
        f"({data.eval_name}), {len(data.class_names)} classes"
    )
    with policy.strategy.scope():
        model = build_model(recipe, len(data.class_names), policy.precision)
        compile_model(model, recipe, data.steps_per_epoch, policy.jit_compile)

    done = _completed_epochs(run) if resume else 0
    _trim_history(run / rundir.HISTORY, done)
    if resume:
        log(f"zoo: resuming after epoch {done} of {recipe.fit.epochs}")
    seconds = rundir.read_json(run / rundir.STATE).get("train_seconds", 0.0) if resume else 0.0
    history = model.fit(
        data.train,
        validation_data=data.eval,
        epochs=recipe.fit.epochs,
        callbacks=[*_callbacks(run, recipe, seconds), *callbacks],
        verbose=recipe.fit.verbose,
    )
    losses = history.history.get("loss", [])
    if any(math.isnan(v) or math.isinf(v) for v in losses):
        raise ZooError(
            f"training of {recipe.name} stopped: the loss became NaN at epoch {len(losses)}. "
            f"Lower compile.optimizer.learning_rate ({recipe.compile.optimizer.learning_rate}) or "
            "add compile.schedule.warmup_epochs, then start a new run"
        )
    with rundir.atomic_path(run / rundir.MODEL) as tmp:
        model.save(tmp)
    finish_run(run, model, data)
    return run


def finish_run(run: Path, model, data) -> dict:
    """Evaluates on the eval split and writes metrics.json and curves.png."""
    metrics = evaluation.evaluate(model, data)
    state = rundir.read_json(run / rundir.STATE)
    metrics["train_seconds"] = round(float(state.get("train_seconds", 0.0)), 2)
    metrics["epochs"] = int(state.get("epochs_done", 0))
    metrics["classes"] = list(data.class_names)
    rundir.write_json(run / rundir.METRICS, metrics)
    evaluation.plot_curves(run / rundir.HISTORY, run / rundir.CURVES)
    return metrics


def evaluate_run(run) -> dict:
    """Re-evaluates the saved model of a run on its recipe's eval split; rewrites metrics.json.

    Example:

    ```python
    metrics = zoo.evaluate("runs/digits")
    ```
    """
    run = Path(run)
    for name in (rundir.RECIPE, rundir.MODEL):
        if not (run / name).is_file():
            raise ZooError(f"{run} is not a finished zoo run: it has no {name}")
    recipe = load_recipe(run / rundir.RECIPE)
    runtime.seed_everything(recipe.runtime.seed)
    data = data_lib.build(recipe, training=False)
    model = keras.saving.load_model(run / rundir.MODEL)
    return finish_run(run, model, data)
