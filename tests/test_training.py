"""Training end to end on small real data (scikit-learn digits): run dir, resume, errors."""

import csv
import json
import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
from tests.conftest import count_traces
from zoo import rundir
from zoo.errors import ZooError
from zoo.recipes import load_recipe
from zoo.schedules import learning_rate

FAST = ["fit.verbose=0", "data.batch_size=64"]


def history_epochs(run):
    with (run / rundir.HISTORY).open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_train_writes_the_run_directory(tmp_path, quiet):
    recipe = load_recipe("lenet_digits", [*FAST, "fit.epochs=3"])
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    for name in (
        rundir.RECIPE,
        rundir.MODEL,
        rundir.HISTORY,
        rundir.METRICS,
        rundir.CURVES,
        rundir.BEST,
        rundir.CONFUSION,
    ):
        assert (run / name).is_file(), name
    assert any((run / rundir.TENSORBOARD).rglob("events.out.tfevents*"))
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert metrics["accuracy"] > 0.5 and metrics["loss"] > 0
    # The class report: its confusion matrix holds every eval image, its diagonal the correct.
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 360
    assert matrix.trace() / 360 == pytest.approx(metrics["accuracy"])
    assert [metrics[f"support_{d}"] for d in range(10)] == matrix.sum(axis=1).tolist()
    recalls = [metrics[f"recall_{d}"] for d in range(10)]
    np.testing.assert_allclose(recalls, matrix.diagonal() / matrix.sum(axis=1))
    assert metrics["macro_f1"] == pytest.approx(np.mean([metrics[f"f1_{d}"] for d in range(10)]))
    assert metrics["train_seconds"] > 0 and metrics["epochs"] == 3
    assert metrics["eval_examples"] == 360
    assert history_epochs(run) == [0, 1, 2]
    assert load_recipe(run / rundir.RECIPE) == recipe
    # The saved model takes raw [0, 255] pixels: its preprocessing is inside.
    model = keras.saving.load_model(run / rundir.MODEL)
    assert model.get_layer("rescale") is not None
    # Re-evaluation reproduces the metrics.
    again = zoo.evaluate(run)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    assert again["train_seconds"] == metrics["train_seconds"]


class Crash(keras.callbacks.Callback):
    """Kills training after `epoch` completed epochs, as a crash or Ctrl-C would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated crash")


def test_resume_continues_from_the_last_epoch(tmp_path, quiet):
    recipe = load_recipe("lenet_digits", [*FAST, "fit.epochs=4"])
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=out, callbacks=[Crash(2)], log=quiet)
    assert not (out / rundir.METRICS).exists()
    assert history_epochs(out) == [0, 1]

    with pytest.raises(ZooError, match="already holds a run; pass --resume"):
        zoo.train(recipe, output=out, log=quiet)

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(int(self.model.optimizer.iterations.numpy()))

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    run = zoo.train(recipe, output=out, resume=True, callbacks=[Record()], log=quiet)
    steps = 23  # ceil(1437 / 64)
    assert seen == [2 * steps, 2, 3]  # optimizer state restored, epochs 0 and 1 not redone
    assert history_epochs(run) == [0, 1, 2, 3]
    assert json.loads((run / rundir.METRICS).read_text())["epochs"] == 4

    with pytest.raises(ZooError, match="already finished"):
        zoo.train(recipe, output=out, resume=True, log=quiet)


def test_a_run_failing_before_its_first_epoch_leaves_nothing_behind(tmp_path, quiet):
    recipe = load_recipe("lenet_digits", [*FAST, "fit.epochs=1"])
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=out, callbacks=[Crash(0)], log=quiet)
    assert not out.exists()  # so a plain retry is not refused
    nested = tmp_path / "new" / "runs" / "one"
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=nested, callbacks=[Crash(0)], log=quiet)
    assert not (tmp_path / "new").exists()  # the folders it made, parents too
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=existing, callbacks=[Crash(0)], log=quiet)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]  # the user's file stays
    run = zoo.train(recipe, output=out, log=quiet)
    assert json.loads((run / rundir.METRICS).read_text())["epochs"] == 1
    assert not (run / rundir.LOCK).exists()


def test_a_second_process_on_the_same_run_is_refused(tmp_path, quiet):
    import socket
    import subprocess

    recipe = load_recipe("lenet_digits", [*FAST, "fit.epochs=1"])
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (out / rundir.LOCK).write_text(f"{socket.gethostname()} {other.pid}\n")
        with pytest.raises(
            ZooError, match=rf"in use by another zoo-train \(host .*, pid {other.pid}\)"
        ):
            zoo.train(recipe, output=out, log=quiet)
        assert (out / rundir.LOCK).is_file() and not (out / rundir.RECIPE).exists()
    finally:
        other.kill()
        other.wait()
    # Its process is gone: the lock is stale and the run goes ahead.
    run = zoo.train(recipe, output=out, log=quiet)
    assert (run / rundir.METRICS).is_file() and not (run / rundir.LOCK).exists()


def test_resume_refuses_another_recipe(tmp_path, quiet):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zoo.train(
            load_recipe("lenet_digits", [*FAST, "fit.epochs=2"]),
            output=out,
            callbacks=[Crash(1)],
            log=quiet,
        )
    with pytest.raises(ZooError, match="recipe differs"):
        zoo.train(
            load_recipe("lenet_digits", [*FAST, "fit.epochs=3"]), output=out, resume=True, log=quiet
        )
    with pytest.raises(ZooError, match="holds no run to resume"):
        zoo.train("lenet_digits", output=tmp_path / "empty", resume=True, log=quiet)


def test_nan_loss_stops_with_a_clear_message(tmp_path, quiet):
    recipe = load_recipe(
        "lenet_digits",
        [*FAST, "fit.epochs=3", "compile.optimizer={name='sgd', learning_rate=1e12}"],
    )
    with pytest.raises(ZooError, match="loss became NaN.*Lower compile.optimizer.learning_rate"):
        zoo.train(recipe, output=tmp_path / "run", log=quiet)


def test_label_smoothing_mixup_and_top5_train(tmp_path, quiet):
    recipe = load_recipe(
        "lenet_digits",
        [
            *FAST,
            "fit.epochs=1",
            "compile.label_smoothing=0.1",
            "compile.metrics=['accuracy', 'top5_accuracy']",
            "augment=[{layer='MixUp'}]",
        ],
    )
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    metrics = json.loads((run / rundir.METRICS).read_text())
    assert 0 <= metrics["accuracy"] <= metrics["top5_accuracy"] <= 1


def steps_lr(recipe_overrides, steps_per_epoch=10, epochs=10):
    recipe = load_recipe("lenet_digits", [*recipe_overrides, f"fit.epochs={epochs}"])
    schedule = learning_rate(recipe.compile, steps_per_epoch, epochs)
    return [float(schedule(s)) for s in range(steps_per_epoch * epochs)]


def test_schedules_derive_steps_from_the_data():
    lr = "compile.optimizer={name='sgd', learning_rate=0.1}"
    step = steps_lr([lr, "compile.schedule={name='step', fractions=[0.5, 0.75]}"])
    assert step[49] == pytest.approx(0.1) and step[50] == pytest.approx(0.01)
    assert step[75] == pytest.approx(0.001)
    cosine = steps_lr([lr, "compile.schedule={name='cosine', warmup_epochs=1}"])
    assert cosine[0] == pytest.approx(0.01) and cosine[9] == pytest.approx(0.1)
    assert cosine[10] == pytest.approx(0.1) and cosine[-1] < 1e-3
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:]))
    expo = steps_lr([lr, "compile.schedule={name='exponential', decay_rate=0.5, decay_epochs=2}"])
    assert expo[20] == pytest.approx(0.05) and expo[40] == pytest.approx(0.025)
    const = steps_lr([lr, "compile.schedule={name='constant', warmup_epochs=0.5}"])
    assert const[4] == pytest.approx(0.1) and const[2] == pytest.approx(0.06)
    assert set(np.round(const[5:], 6)) == {0.1}


def test_phased_schedule_and_loss_follow_their_phase_variable():
    """Phases compiled together read their schedule and loss by a variable: each phase's
    values are exactly what its own schedule and loss give."""
    from zoo.losses import MarginLoss, PhaseLoss
    from zoo.schedules import PhaseSchedule

    schedules = keras.optimizers.schedules
    rates = [schedules.CosineDecay(0.1, 20), schedules.CosineDecay(0.01, 50, alpha=0.1)]
    losses = [MarginLoss(scale=8.0), MarginLoss(scale=8.0, m2=0.5)]
    phase = keras.Variable(0, dtype="int32", trainable=False)
    rate, loss = PhaseSchedule(rates, phase), PhaseLoss(losses, phase)
    labels = np.array([0, 2, 1])
    cosines = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype("float32")
    for k in (0, 1):
        phase.assign(k)
        for step in (0, 7, 19):
            assert float(rate(step)) == float(rates[k](step))
        assert float(loss(labels, cosines)) == float(losses[k](labels, cosines))
    assert float(losses[1](labels, cosines)) > float(losses[0](labels, cosines))  # the margin


def test_a_decaying_optimizer_traces_its_schedule_once_per_step():
    """AdamW reads its rate once per variable to decay it; a zoo optimizer's traced step
    computes the schedule once (per graph traced), and trains to bitwise the same weights."""
    import tensorflow as tf

    from zoo.training import rate_once_per_trace

    traced = []

    class Counted(keras.optimizers.schedules.CosineDecay):
        def __call__(self, step):
            if not tf.executing_eagerly():
                traced.append(tf.compat.v1.get_default_graph())
            return super().__call__(step)

    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    y = (x[:, :2].sum(1) > 0).astype("int32")
    trained, calls = [], []
    for once in (False, True):
        traced.clear()
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
        )
        optimizer = keras.optimizers.AdamW(Counted(0.05, 20), weight_decay=0.1)
        if once:
            rate_once_per_trace(optimizer)
        model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=False)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        trained.append([w.numpy() for w in model.weights])
        calls.append(len(traced) / len(set(traced)))
    # Keras' own: once to apply the gradients, once per variable (4 here) to decay it
    assert calls[0] > calls[1] == 1
    for a, b in zip(*trained):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("amx, precision", [(False, "float32"), (True, "mixed_bfloat16")])
def test_device_policy_on_cpu_and_overrides(monkeypatch, amx, precision):
    from zoo import runtime
    from zoo.recipes.schema import RuntimeConfig
    from zoo.runtime import policy

    monkeypatch.setattr(runtime, "bfloat16_units", lambda: amx)
    cpu = policy(RuntimeConfig())
    assert (cpu.precision, cpu.jit_compile, cpu.gpus) == (precision, False, 0)
    assert cpu.strategy.num_replicas_in_sync == 1
    assert policy(RuntimeConfig(precision="float32")).precision == "float32"
    forced = policy(RuntimeConfig(precision="mixed_bfloat16", jit_compile=True))
    assert (forced.precision, forced.jit_compile) == ("mixed_bfloat16", True)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_model_keeps_float32_outputs(precision):
    from zoo.training import build_model

    before = keras.config.dtype_policy().name
    model = build_model(load_recipe("resnet20_cifar10"), classes=10, precision=precision)
    assert keras.config.dtype_policy().name == before  # no global state left behind
    compute = precision.removeprefix("mixed_")
    assert model.get_layer("resnet20").get_layer("conv1_conv").compute_dtype == compute
    assert model.output.dtype == "float32"
    out = keras.ops.convert_to_numpy(model(np.zeros((2, 32, 32, 3), "float32")))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-3)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16", "float32"])
def test_mixed_float16_scales_the_loss_so_small_gradients_still_update(precision):
    """A loss a million times smaller has gradients below float16's smallest number: only a
    loss-scaled optimizer still moves the weights. bfloat16 has float32's range: no scaling."""
    from zoo.training import build_model, compile_model

    recipe = load_recipe("lenet_digits")
    keras.utils.set_random_seed(0)
    model = build_model(recipe, classes=10, precision=precision)
    compile_model(model, recipe, steps_per_epoch=1, jit_compile=False)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    kernel = model.get_layer("lenet5").get_layer("c1")
    before = keras.ops.convert_to_numpy(kernel.kernel).copy()
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    model.fit(x, np.arange(8) % 10, sample_weight=np.full(8, 1e-6), epochs=1, verbose=0)
    assert not np.array_equal(keras.ops.convert_to_numpy(kernel.kernel), before)


def test_compiled_models_trace_their_train_step_once():
    """compile_model creates the optimizer's variables: Keras, without a tf.distribute strategy,
    would create them inside the first train step's trace and then trace the step again (about
    30 s of a five-net faces model's first epoch, in each phase)."""
    from zoo.training import build_model, compile_model

    recipe = load_recipe("lenet_digits")
    model = build_model(recipe, classes=10)
    compile_model(model, recipe, steps_per_epoch=1, jit_compile=False)
    assert model.optimizer.built
    traces = count_traces(model)
    x = np.zeros((8, 32, 32, 1), "float32")
    model.fit(x, np.arange(8) % 10, epochs=2, verbose=0)
    assert len(traces) == 1  # Keras 3.15 alone: 2


def test_mirrored_strategy_trains(tmp_path, quiet):
    recipe = load_recipe("lenet_digits", [*FAST, "fit.epochs=1", "runtime.strategy=mirrored"])
    run = zoo.train(recipe, output=tmp_path / "run", log=quiet)
    assert json.loads((run / rundir.METRICS).read_text())["accuracy"] > 0.3


def test_backup_is_the_last_epoch_end_step(tmp_path):
    """A crash between writing an epoch's history row and its backup must not lose the row."""
    from zoo.training import _callbacks, _State

    recipe = load_recipe("lenet_digits", ["fit.early_stopping={patience=2}"])
    state = _State(tmp_path / "state.json", {})
    kinds = [type(c).__name__ for c in _callbacks(tmp_path, recipe, state, 0, None)]
    assert kinds[-1] == "_Backup"  # zoo's BackupAndRestore
    assert {"CSVLogger", "_Checkpoint", "_State", "EarlyStopping"} < set(kinds[:-1])


def test_a_backup_is_whole_whatever_moment_a_kill_lands_on(tmp_path, quiet):
    """The backup's metadata names its weights file; both are written under temporary names
    and renamed, so a kill leaves the previous backup or the new one, never a mix."""
    recipe = load_recipe("lenet_digits", [*FAST, "fit.epochs=3"])
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        zoo.train(recipe, output=out, callbacks=[Crash(2)], log=quiet)
    backup = out / rundir.backup(0)
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta == {"epoch": 2, "batch": 0, "weights": "epoch2-batch0.npz"}
    assert sorted(p.name for p in backup.iterdir()) == [meta["weights"], "training_metadata.json"]
    # Every variable of the model and of its optimizer, in order, with its path.
    with np.load(backup / meta["weights"]) as saved:
        paths = [str(p) for p in saved["paths"]]
        assert len(saved.files) == len(paths) + 1 == 1 + 10 + 1 + 2 * 10  # lenet5's, Adam's
        assert paths[0] == "c1/kernel" and paths[10].endswith("/iteration")
        assert int(saved["v10"]) == 2 * 23  # two epochs of 1,437 images, 64 a step

    # A kill while the next backup's weights are written: a half file under a temporary name,
    # which resume ignores (and the next backup removes).
    (backup / ".epoch3-batch0.npz.x1y2.npz").write_bytes(b"half")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    run = zoo.train(recipe, output=out, resume=True, callbacks=[Record()], log=quiet)
    assert seen == [2] and history_epochs(run) == [0, 1, 2]
    assert not backup.exists()  # the finished phase's backup is gone, half file and all


def test_resumed_best_checkpoint_starts_from_the_best_so_far(tmp_path):
    from zoo.training import _best_so_far

    (tmp_path / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.0,0.61,0.9\n1,0.6,0.8,0.58,0.7\n"
    )
    assert _best_so_far(tmp_path / "history.csv", "val_accuracy") == ("max", 0.61)
    assert _best_so_far(tmp_path / "history.csv", "val_loss") == ("min", 0.7)
    assert _best_so_far(tmp_path / "none.csv", "val_loss") == ("min", None)


def test_standardization_inside_the_model():
    from zoo.training import build_model

    recipe = load_recipe("resnet20_cifar10")
    model = build_model(recipe, classes=10)
    layer = model.get_layer("standardize")
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    out = keras.ops.convert_to_numpy(layer(pixels))[0, 0, 0]
    mean, std = np.array(recipe.data.mean), np.array(recipe.data.std)
    np.testing.assert_allclose(out, (np.array([0.0, 0.5, 1.0]) - mean) / std, rtol=1e-5)
    assert not layer.weights  # constants: nothing for an exporter to turn into inputs


def test_onednn_is_asked_for_on_x86_unless_the_user_chose(monkeypatch):
    from zoo import _startup

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    _startup.prefer_onednn("aarch64")
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    _startup.prefer_onednn("x86_64")
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    _startup.prefer_onednn("x86_64")
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="zoo asks for oneDNN on x86 only")
@pytest.mark.parametrize(("user", "expected"), [(None, "1 True"), ("0", "0 False")])
def test_tensorflow_runs_onednn_after_import_zoo(user, expected):
    # A fresh process: TensorFlow reads the setting once, when it first loads.
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user
    code = (
        "import os, zoo; from zoo.runtime import onednn; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], onednn())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == expected


def test_bench_peers_other_than_zoo_run_with_the_users_onednn_setting(monkeypatch):
    from zoo import _startup
    from zoo.bench_peers import peer_environment

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # as zoo set it
    monkeypatch.setattr(_startup, "USER_ONEDNN", None)
    assert peer_environment("zoo")["TF_ENABLE_ONEDNN_OPTS"] == "1"
    for peer in ("keras", "keras-hub", "timm"):
        assert "TF_ENABLE_ONEDNN_OPTS" not in peer_environment(peer)
    monkeypatch.setattr(_startup, "USER_ONEDNN", "1")  # the user's own choice holds for all
    assert peer_environment("keras-hub")["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_bfloat16_units_are_read_from_the_cpu_flags(monkeypatch, tmp_path):
    from zoo import runtime

    def cpu(flags):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n\n")
        return runtime.bfloat16_units(str(info))

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert cpu("avx512f avx512_bf16 amx_bf16 amx_tile") is True
    assert cpu("avx2 avx512_bf16") is False  # bfloat16 dot products, no matrix units
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert cpu("amx_bf16") is False
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    assert runtime.bfloat16_units(str(tmp_path / "missing")) is False  # no cpuinfo: no
