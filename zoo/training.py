"""Training a recipe: run directory, model, compile, callbacks, `model.fit`, final evaluation.

Read top to bottom, `train` is the whole path: everything else here is one step of it.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import keras

from zoo import _startup, backbones, evaluation, rundir, runtime, schedules, tasks
from zoo import data as data_lib
from zoo import losses as zoo_losses
from zoo.errors import ZooError
from zoo.recipes import Recipe, dumps, load_recipe
from zoo.recipes.schema import OPTIMIZERS, PhaseConfig
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


def build_model(recipe: Recipe, classes: int, precision: str = "float32", data=None) -> keras.Model:
    """The recipe's model (the task's net) with its input preprocessing: it takes [0, 255]
    pixels (or, for text, strings). Under mixed precision the net gives logits and a float32
    softmax ends the model: float16 probabilities lose the small ones. `data` (the pipelines)
    is what preprocessing that learns from data adapts on (a text vocabulary)."""
    mixed = precision.startswith("mixed")
    task = tasks.get(recipe.task)
    activation = recipe.model.args.get("classifier_activation", task.ACTIVATION)
    inputs, preprocessing, net_shape = task.model_input(recipe, data)
    with _dtype_policy(precision):
        net = task.net(recipe, net_shape, classes, None if mixed else activation, preprocessing)
    x = inputs
    for layer in preprocessing:
        x = layer(x)
    outputs = net(x)
    if mixed:
        outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(
            outputs
        )
    return keras.Model(inputs, outputs, name=recipe.name)


def _phase_recipe(recipe: Recipe, phase: PhaseConfig | None) -> tuple[Recipe, int]:
    """The recipe as `phase` trains it (its learning rate, schedule and loss where it names
    them), and the epochs its schedule spans."""
    if phase is None:
        return recipe, recipe.epochs
    cfg, update = recipe.compile, {}
    if phase.learning_rate is not None:
        update["optimizer"] = cfg.optimizer.model_copy(
            update={"learning_rate": phase.learning_rate}
        )
    if phase.schedule is not None:
        update["schedule"] = phase.schedule
    if phase.loss is not None:
        update["loss"] = phase.loss
    return recipe.model_copy(update={"compile": cfg.model_copy(update=update)}), phase.epochs


def compile_model(
    model: keras.Model,
    recipe: Recipe,
    steps_per_epoch: int,
    jit_compile,
    phases: list[PhaseConfig | None] | None = None,
) -> Callable[[int], None] | None:
    """Compiles with a new optimizer: the recipe's, or with a phase's learning rate and schedule
    over its epochs (its schedule starts over), and its loss where it names one.

    Several `phases`, which must train the same variables (`shares_step`), share one compiled
    train step (on TensorFlow, tracing a five-net faces model's step takes most of a minute):
    it reads the phase's schedule and loss through a Keras variable. Returns `start(k)`, which
    readies the k-th of them: it sets that variable and gives the optimizer back the state it
    was built with, as a new optimizer would have. With one phase, returns None."""
    phases = phases or [None]
    task = tasks.get(recipe.task)
    classes = model.output.shape[-1]
    recipes = [_phase_recipe(recipe, p) for p in phases]
    rates = [learning_rate(r.compile, steps_per_epoch, epochs) for r, epochs in recipes]
    losses = [task.loss(r, classes) for r, _ in recipes]
    phase, rate, loss = None, rates[0], losses[0]
    if len(phases) > 1:
        phase = keras.Variable(0, dtype="int32", trainable=False, name="phase")
        rate = schedules.PhaseSchedule(rates, phase)
        if any(other.get_config() != loss.get_config() for other in losses):
            loss = zoo_losses.PhaseLoss(losses, phase)
    cfg = recipes[0][0].compile
    optimizer_cls = getattr(keras.optimizers, OPTIMIZERS[cfg.optimizer.name])
    optimizer = optimizer_cls(learning_rate=rate, **cfg.optimizer.args)
    rate_once_per_trace(optimizer)
    optimizer = loss_scaled(model, optimizer)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=task.metrics(recipe, classes),
        jit_compile=jit_compile,
    )
    if keras.backend.backend() == "tensorflow":
        # Without a tf.distribute strategy, Keras creates the optimizer's variables while it
        # traces the first train step, which it then traces a second time; created here, the
        # step is traced once (a five-net faces model: its first step 74 s -> 43 s).
        optimizer.build(model.trainable_variables)
    if phase is None:
        return None
    fresh = [variable.numpy() for variable in optimizer.variables]

    def start(k: int) -> None:
        for variable, value in zip(optimizer.variables, fresh):
            variable.assign(value)
        phase.assign(k)

    return start


def rate_once_per_trace(optimizer) -> None:
    """Has `optimizer` (Keras', on TensorFlow) compute its scheduled learning rate once per
    traced graph. Keras' TensorFlow optimizers read the rate once per variable where they
    decay weights (AdamW; SGD and Adam with weight_decay), each read adding the schedule's
    operations to the traced step again: a faces fixture's two ResNet-20s, 122 variables,
    traced 122 schedules into their step, several seconds of its tracing. Every read in one
    step sees the same step count (the optimizer counts its step after all its updates), so
    the rate is the same tensor: the weights come out bitwise the same. Eager reads (callbacks,
    the rate a run logs) compute it each time, as Keras does."""
    if keras.backend.backend() != "tensorflow" or not hasattr(
        optimizer, "_get_current_learning_rate"
    ):
        return
    import tensorflow as tf

    compute = optimizer._get_current_learning_rate
    held: dict = {}

    def current():
        if tf.executing_eagerly():
            return compute()
        graph = tf.compat.v1.get_default_graph()
        if held.get("graph") is not graph:
            held.update(graph=graph, rate=compute())
        return held["rate"]

    optimizer._get_current_learning_rate = current


def shares_step(phases: list[PhaseConfig | None], k: int) -> bool:
    """Whether phase k can train with phase k-1's compiled step: both train the same
    variables, on TensorFlow (JAX's compiled step would keep the phase it was traced in)."""
    before, phase = phases[k - 1] if k else None, phases[k]
    return (
        keras.backend.backend() == "tensorflow"
        and before is not None
        and phase is not None
        and (before.trainable, before.freeze_batchnorm) == (phase.trainable, phase.freeze_batchnorm)
    )


def loss_scaled(model: keras.Model, optimizer):
    """`optimizer` in a LossScaleOptimizer where any layer of `model` (nested models included)
    computes in float16. Keras scales the loss only where the compiled model's own policy is
    mixed_float16; zoo's outer model is float32 around a float16 net, so it is asked for here:
    without it, small gradients underflow to zero in float16."""
    stack = [model]
    while stack:
        layer = stack.pop()
        if layer.dtype_policy.compute_dtype == "float16":
            return keras.optimizers.LossScaleOptimizer(optimizer)
        stack.extend(getattr(layer, "layers", []))
    return optimizer


class _State(keras.callbacks.Callback):
    """Keeps the training seconds, epochs and finished phases in checkpoints/state.json."""

    def __init__(self, path: Path, state: dict):
        super().__init__()
        self.path, self.state = path, dict(state)
        self.state.setdefault("train_seconds", 0.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.state["train_seconds"] += time.perf_counter() - self._start
        self.state["epochs_done"] = epoch + 1
        self.save()

    def save(self):
        rundir.write_json(self.path, self.state)


class _Epoch(keras.callbacks.Callback):
    """Tells the training pipeline which epoch starts, so that epoch k is fed the order and
    augmentation of epoch k in a resumed run too."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        self.data.epoch.assign(epoch)


def _best_so_far(history: Path, monitor: str) -> tuple[str, float | None]:
    """ModelCheckpoint's mode for `monitor` and the best value in an earlier (resumed) history."""
    mode = "max" if "acc" in monitor or "auc" in monitor or "iou" in monitor else "min"
    values = [row[monitor] for row in evaluation.read_history(history) if monitor in row]
    return mode, (max(values) if mode == "max" else min(values)) if values else None


def _callbacks(run: Path, recipe: Recipe, state: _State, phase: int, data) -> list:
    fit = recipe.fit
    out = [_Epoch(data), keras.callbacks.TerminateOnNaN()]
    if tasks.get(recipe.task).VALIDATE:
        # The best epoch by the eval split's score. A task that does not validate (faces) has
        # only its training loss, by which the best epoch is about the last (and across
        # phases with different losses, no comparison): it keeps no best.keras, whose saves
        # (the five-net faces model: 2-3 s each here, in about half its epochs) buy nothing.
        mode, best = _best_so_far(run / rundir.HISTORY, recipe.monitor)
        out.append(
            _Checkpoint(
                str(run / rundir.BEST),
                monitor=recipe.monitor,
                mode=mode,
                save_best_only=True,
                initial_value_threshold=best,
            )
        )
    out += [
        keras.callbacks.CSVLogger(str(run / rundir.HISTORY), append=True),
        keras.callbacks.TensorBoard(str(run / rundir.TENSORBOARD)),
        state,
    ]
    if fit.early_stopping is not None:
        out.append(keras.callbacks.EarlyStopping(**fit.early_stopping.model_dump()))
    # Last: an epoch is backed up only after its history row, best checkpoint and seconds are
    # written, so a crash in between can leave an extra row (trimmed on resume), never a gap.
    # The backup outlives the phase (train() removes it once the phase's end is saved).
    out.append(_Backup(str(run / rundir.backup(phase)), delete_checkpoint=False))
    return out


class _Checkpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose file every backend loads (rundir.backend_neutral)."""

    def _save_model(self, epoch, batch, logs):
        super()._save_model(epoch, batch, logs)
        if os.path.isfile(self.filepath):
            rundir.backend_neutral(Path(self.filepath))


class _Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose backup is one consistent unit, whatever moment a kill lands on:
    the variables go to a file named after their epoch (written under a temporary name, then
    renamed), then training_metadata.json (likewise) names that file, then older files go.
    Keras' own writes the weights and the metadata in place, one after the other: a kill in
    between pairs new weights with the old epoch, and a half-written metadata file stops
    --resume with a JSON error.

    The file is an .npz of every variable of the model (the dropout layers' seed states too,
    which weights files leave out) and of its optimizer, in their order: restored by that
    order, each shape checked (their paths, saved beside them for a reader, carry Keras'
    per-process name counters). Written every epoch, it costs a sixth of Keras' .weights.h5
    (the five-net faces model: 0.3 s against 1.9 s here). Backups of .weights.h5, written
    before, still restore."""

    METADATA = "training_metadata.json"

    def _variables(self) -> list:
        optimizer = self.model.optimizer
        return [*self.model.variables, *(optimizer.variables if optimizer is not None else [])]

    def _save_model(self):
        import numpy as np

        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch{self._current_epoch}-batch{self._last_batch_seen}.npz"
        variables = self._variables()
        arrays = {f"v{k}": keras.ops.convert_to_numpy(v) for k, v in enumerate(variables)}
        with rundir.atomic_path(folder / name) as tmp, tmp.open("wb") as f:
            np.savez(f, paths=np.array([v.path for v in variables]), **arrays)
        meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        rundir.write_json(folder / self.METADATA, meta)
        for old in [*folder.glob("*.npz*"), *folder.glob("*.weights.h5*")]:
            if old.name != name:
                old.unlink(missing_ok=True)

    def _load_model(self):
        folder = Path(self.backup_dir)
        meta = rundir.read_json(folder / self.METADATA)
        if not meta:
            return
        # Backups written by Keras' own callback (runs started before this one) name no file.
        weights = folder / meta.get("weights", "latest.weights.h5")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        if weights.suffix == ".npz":
            self._load_arrays(weights)
        else:
            self.model.load_weights(weights)
            seeds = meta.get("seeds", [])
            states = _seed_states(self.model)
            if len(seeds) == len(states):
                for variable, value in zip(states, seeds):
                    variable.assign(value)
        self.model._initial_epoch = meta["epoch"]

    def _load_arrays(self, path: Path) -> None:
        import numpy as np

        variables = self._variables()
        with np.load(path) as saved:
            paths = [str(p) for p in saved["paths"]]
            arrays = [saved[f"v{k}"] for k in range(len(paths))]
        mismatch = len(paths) != len(variables) or any(
            tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables)
        )
        if mismatch:
            what = "in number" if len(paths) != len(variables) else "in shape"
            raise ZooError(
                f"the backup {path} holds {len(paths)} variables that do not match the model's "
                f"{len(variables)} ({what}): the run's recipe or zoo changed since it was "
                "written. Resume with the recipe the run began with, or start a new run"
            )
        for variable, value in zip(variables, arrays):
            variable.assign(value)


def _seed_states(model) -> list:
    """The state of each random layer's seed generator (dropout, noise) in `model`, in layer
    order: saved weights leave them out, so a resumed run would repeat epoch 1's masks."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _backed_up_epochs(run: Path, phase: int) -> int | None:
    meta = rundir.read_json(run / rundir.backup(phase) / "training_metadata.json")
    return int(meta["epoch"]) if "epoch" in meta else None


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
    if output is not None and not isinstance(output, str | os.PathLike):
        raise ZooError(f"output must be a folder path, received {type(output).__name__}")
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
    job = runtime.cluster()
    if job is not None:
        # First: JAX joins a job only before its first computation (loading a recipe builds
        # its augmentation layers).
        runtime.join(job)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    runtime.check_backend(recipe.runtime)
    backend = keras.backend.backend()
    if tasks.get(recipe.task).INPUT == "texts" and backend != "tensorflow":
        raise ZooError(
            f"recipe {recipe.name}: text models turn strings into tokens inside the model with "
            f"TensorFlow ops, which Keras' {backend} backend cannot run: train it with "
            "KERAS_BACKEND=tensorflow (the default)"
        )
    if job is not None:
        if output is None:
            raise ZooError(
                "a multi-process run needs its run directory named (--output): every process "
                "must name the same one"
            )
        if not job.primary:
            return _train_secondary(recipe, Path(output), resume, job, callbacks)
    run = check_run(recipe, output, resume)
    # The outermost folder this run creates (runs/ too, where it is new).
    created = None if run.exists() else run
    while created is not None and not created.parent.exists():
        created = created.parent
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZooError(
            f"cannot create the run directory {run}: {e.strerror}; choose another --output"
        ) from None
    with rundir.locked(run):
        state = _State(run / rundir.STATE, rundir.read_json(run / rundir.STATE) if resume else {})
        try:
            if not resume:
                check_run(recipe, run, resume)  # again, now that no other process can start
            _train(run, recipe, resume, state, callbacks, log, job)
        except BaseException:
            if not resume and not state.state.get("epochs_done"):
                # Failed before its first epoch: nothing worth resuming, so nothing is left
                # behind that would block a retry.
                _discard(run, created)
            raise
    return run


def _train_secondary(recipe: Recipe, run: Path, resume: bool, job, callbacks) -> Path:
    """A process other than the first of a multi-process run: it trains in step with the
    others and writes nothing in `run` (process 0 does). Its callbacks write into a scratch
    folder, gone at the end; to resume, it starts from a copy of `run`, so it must be able to
    read it (one machine, or a shared filesystem)."""
    with tempfile.TemporaryDirectory(prefix="zoo-process-") as scratch:
        mirror = Path(scratch) / "run"
        if resume:
            if not (run / rundir.RECIPE).is_file():
                raise ZooError(
                    f"--resume: process {job.process_id} cannot read the run in {run}; every "
                    "process of a multi-process run must see its run directory (one machine, "
                    "or a shared filesystem)"
                )
            shutil.copytree(run, mirror, ignore=shutil.ignore_patterns(rundir.TENSORBOARD))
        else:
            mirror.mkdir()
        state = _State(mirror / rundir.STATE, rundir.read_json(mirror / rundir.STATE))
        _train(mirror, recipe, resume, state, callbacks, lambda *a, **k: None, job)
    return run


def _discard(run: Path, created: Path | None) -> None:
    """Removes what a run that failed before its first epoch wrote: the folders it made
    (`created`, the outermost), else its own files."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for name in (rundir.RECIPE, rundir.HISTORY, rundir.CHECKPOINTS, rundir.TENSORBOARD):
        path = run / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _train(
    run: Path, recipe: Recipe, resume: bool, state: _State, callbacks, log, job=None
) -> None:
    """Data, model, the phases' `fit` calls, the saved model and its evaluation, in `run`
    (locked by the caller). In a multi-process run (`job`), every process trains; process 0
    alone then saves and evaluates."""
    runtime.seed_everything(recipe.runtime.seed)
    policy = runtime.policy(recipe.runtime)
    processes = job.processes if job is not None else 1
    where = f", {processes} processes" if job is not None else ""
    log(f"zoo: {recipe.name} -> {run} ({policy.describe()}{where})")
    data = data_lib.build(recipe, processes=processes, process_id=job.process_id if job else 0)
    log(
        f"zoo: {data.train_count} training and {data.eval_count} eval examples "
        f"({data.eval_name}), {len(data.class_names)} classes"
    )
    if data.skipped:
        log(
            f"zoo: skipped {len(data.skipped)} unreadable file(s) (data.skip_corrupt): "
            + ", ".join(data.skipped[:3])
            + (", ..." if len(data.skipped) > 3 else "")
        )
    phases = list(recipe.phases) or [None]
    first = state.state.get("phases_done", 0)
    starts = [sum(p.epochs for p in phases[:k]) for k in range(len(phases))]
    # The epoch the current phase's backup reached, None where it has none (yet).
    backed_up = _backed_up_epochs(run, first) if first < len(phases) else None
    done = backed_up or (starts[first] if first < len(phases) else recipe.epochs)
    if done:
        # Every weight comes back from the run's own checkpoints: the backbone's source
        # (another run, a download) is not needed again.
        recipe_for_build = recipe.model_copy(
            update={"model": recipe.model.model_copy(update={"backbone_weights": "none"})}
        )
    else:
        recipe_for_build = recipe
    task = tasks.get(recipe.task)
    if job is not None:
        runtime.distribute()
    with policy.strategy.scope():
        model = build_model(recipe_for_build, len(data.class_names), policy.precision, data)
        # What fit trains: the model, or the task's training graph around it.
        trained = task.trainer(recipe, model, len(data.class_names))
    net = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for phase in recipe.phases:  # a misnamed stage fails now, not after hours of phase 1
        _set_trainable(recipe, net, phase)
    if not resume:
        rundir.write_text(run / rundir.RECIPE, dumps(recipe))
    _trim_history(run / rundir.HISTORY, done)
    if resume:
        log(f"zoo: resuming after epoch {done} of {recipe.epochs}")
        if first > 0 and backed_up is None:
            trained.load_weights(run / rundir.phase_end(first - 1))
    if keras.backend.backend() == "tensorflow":
        _startup.say_onednn_int32_note()
    start = None  # readies a phase of those compiled together (see compile_model)
    for k in range(first, len(phases)):
        phase = phases[k]
        end = starts[k] + phase.epochs if phase is not None else recipe.epochs
        if phase is not None:
            trainable = _set_trainable(recipe, net, phase)
            log(
                f"zoo: phase {k + 1} of {len(phases)}, epochs {starts[k] + 1}-{end}: "
                f"{phase.trainable} trainable ({trainable:,} parameters)"
            )
        if start is None or not shares_step(phases, k):
            # The phases compiled together, from the first of them even where a resumed run
            # starts later: the same step as the run would have had, so it resumes to the
            # same weights.
            compiled_at, shared = k, k + 1
            while compiled_at and shares_step(phases, compiled_at):
                compiled_at -= 1
            while shared < len(phases) and shares_step(phases, shared):
                shared += 1
            with policy.strategy.scope():
                start = compile_model(
                    trained,
                    recipe,
                    data.steps_per_epoch,
                    policy.jit_compile,
                    phases[compiled_at:shared],
                )
        if start is not None:
            start(k - compiled_at)
        # BackupAndRestore sets this when it restores, and fit() prefers it to initial_epoch:
        # clear what an earlier phase left.
        trained._initial_epoch = None
        history = trained.fit(
            data.train,
            validation_data=data.validation if task.VALIDATE else None,
            initial_epoch=starts[k],
            epochs=end,
            callbacks=[*_callbacks(run, recipe, state, k, data), *callbacks],
            verbose=recipe.fit.verbose if job is None or job.primary else 0,
            shuffle=False,  # tf.data shuffles (seeded); Keras would only warn that it cannot
        )
        losses = history.history.get("loss", [])
        if any(math.isnan(v) or math.isinf(v) for v in losses):
            rate = _phase_recipe(recipe, phase)[0].compile.optimizer.learning_rate
            raise ZooError(
                f"training of {recipe.name} stopped: the loss became NaN at epoch "
                f"{starts[k] + len(losses)}. Lower compile.optimizer.learning_rate ({rate}) or "
                "add compile.schedule.warmup_epochs, then start a new run"
            )
        # The phase's end, then the state saying so, then its backup can go.
        with rundir.atomic_path(run / rundir.phase_end(k), suffix=".weights.h5") as tmp:
            trained.save_weights(tmp)
        state.state["phases_done"] = k + 1
        state.save()
        shutil.rmtree(run / rundir.backup(k), ignore_errors=True)
        if k:
            (run / rundir.phase_end(k - 1)).unlink(missing_ok=True)
    if job is not None:
        runtime.leave()
        if not job.primary:
            return
    if job is None:
        task.finish(model, data, recipe)
        rundir.save_model(model, run / rundir.MODEL)
    else:
        # The trained model's variables span every process's devices: go on (what the task
        # sets once trained, the evaluation) with the saved model, on this process's own.
        rundir.save_model(model, run / rundir.MODEL)
        model = rundir.load(run / rundir.MODEL, what="eval")[0]
        if task.finish(model, data, recipe):
            rundir.save_model(model, run / rundir.MODEL)
    finish_run(run, model, data, recipe, processes)
    for k in range(len(phases)):
        (run / rundir.phase_end(k)).unlink(missing_ok=True)


def _set_trainable(recipe: Recipe, net: keras.Model, phase: PhaseConfig) -> int:
    """Applies a phase's `trainable` to the recipe's net; returns the trainable weight count."""
    found = {}
    if phase.trainable != "all":
        found = backbones.taps(net, backbones.tap_filter(recipe.model.label))
    try:
        backbones.set_trainable(net, phase.trainable, found)
    except ZooError as e:
        raise ZooError(f"recipe {recipe.name}: phases: trainable {phase.trainable!r}: {e}") from e
    if phase.freeze_batchnorm:
        for layer in backbones.sublayers(net):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return int(sum(math.prod(w.shape) for w in net.trainable_weights))


def finish_run(run: Path, model, data, recipe: Recipe, processes: int = 1) -> dict:
    """Evaluates on the eval split (the task's metrics and plots), writes metrics.json and
    curves.png."""
    metrics = tasks.get(recipe.task).evaluate(model, data, run, recipe)
    metrics["eval_examples"] = data.eval_count
    metrics["eval_split"] = data.eval_name
    state = rundir.read_json(run / rundir.STATE)
    metrics["train_seconds"] = round(float(state.get("train_seconds", 0.0)), 2)
    metrics["epochs"] = int(state.get("epochs_done", 0))
    metrics["classes"] = list(data.class_names)
    metrics["backend"] = keras.backend.backend()
    if processes > 1:
        metrics["processes"] = processes
    if data.skipped:
        metrics["skipped_files"] = list(data.skipped)
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
    if not run.is_dir() or not (run / rundir.RECIPE).is_file():
        raise ZooError(f"{run} is not a finished zoo run: it has no {rundir.RECIPE}")
    model, recipe, _ = rundir.load(run, what="eval")
    runtime.seed_everything(recipe.runtime.seed)
    data = data_lib.build(recipe, training=False)
    return finish_run(run, model, data, recipe)
