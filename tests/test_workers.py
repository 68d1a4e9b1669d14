"""Multi-process data-parallel training (`zoo-train --workers N`, `--coordinator`): Keras'
distribution API on JAX's multi-process runtime. Processes on localhost talk through gloo."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import data as data_lib
from zoo import runtime
from zoo.errors import ZooError
from zoo.recipes import load_recipe

BIN = Path(sys.executable).parent
# 400 training and 100 eval digits: 10 whole batches of 40 per epoch, so a one-process run
# (which keeps a last partial batch) and a two-process run (which drops it) see the same data.
SMALL = ["--set", "data.max_per_class=50", "--set", "data.batch_size=40", "--set", "fit.verbose=2"]


def _env(tmp_path, **extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp_path), **extra}
    for name in (runtime.ADDRESSES, runtime.PROCESSES, runtime.PROCESS_ID):
        env.pop(name, None)
    return env


def _weights(run: Path) -> list:
    """The saved model's weights, read in a child on the JAX backend."""
    code = (
        "import sys, numpy as np, keras; "
        "m = keras.saving.load_model(sys.argv[1]); np.savez(sys.argv[2], *m.get_weights())"
    )
    out = run.parent / f"{run.name}.npz"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(run / "model.keras"), str(out)], env=env)
    with np.load(out) as saved:
        return [saved[k] for k in sorted(saved.files, key=lambda k: int(k.split("_")[1]))]


def _train(tmp_path, run, *args, **env):
    return subprocess.run(
        [str(BIN / "zoo-train"), *args, "--output", str(run)],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_two_processes_train_as_one_and_write_one_run(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    done = _train(tmp_path, two, "lenet_digits", "--workers", "2", "--set", "fit.epochs=2", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data-parallel over 2 device(s) in 2 processes" in done.stdout
    # Process 0 alone reports: one line per epoch, one finish line.
    assert done.stdout.count("Epoch 2/2") == 1 and done.stdout.count("zoo: finished") == 1
    assert "10/10" in done.stdout  # the step count stays known with each process's share
    metrics = zoo.rundir.read_json(two / "metrics.json")
    assert metrics["processes"] == 2 and metrics["backend"] == "jax" and metrics["epochs"] == 2
    # The other process wrote nothing anywhere: its scratch folder is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]
    assert "backup" not in {p.name for p in (two / "checkpoints").iterdir()}

    epochs = ["--set", "fit.epochs=2"]
    done = _train(tmp_path, one, "lenet_digits", *epochs, *SMALL, KERAS_BACKEND="jax")
    assert done.returncode == 0, done.stderr[-3000:]
    # Same global batches, same seed: the same weights, but for the order of the sums.
    for a, b in zip(_weights(one), _weights(two), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(tmp_path):
    run, one = tmp_path / "two", tmp_path / "one"
    args = ["lenet_digits", "--workers", "2", "--set", "fit.epochs=3", *SMALL]
    launcher = subprocess.Popen(
        [str(BIN / "zoo-train"), *args, "--output", str(run)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    for line in launcher.stdout:
        if line.startswith("Epoch 2/3"):  # epoch 1 is backed up
            break
    time.sleep(1)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both processes
    launcher.wait()
    assert not (run / "metrics.json").exists()

    done = _train(tmp_path, run, "--workers", "2", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after epoch" in done.stdout
    epochs = ["--set", "fit.epochs=3"]
    done = _train(tmp_path, one, "lenet_digits", *epochs, *SMALL, KERAS_BACKEND="jax")
    assert done.returncode == 0, done.stderr[-3000:]
    for a, b in zip(_weights(one), _weights(run), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    history = (run / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]


def test_workers_and_joining_flags_are_one_or_the_other(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import zoo_cli

    def invoke(*args):
        result = CliRunner().invoke(
            zoo_cli.train_cmd, ["lenet_digits", *args], prog_name="zoo-train"
        )
        return result.exit_code, result.stderr

    code, err = invoke("--workers", "2", "--coordinator", "h:1", "--output", str(tmp_path / "r"))
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --workers starts the processes of a job on this machine; --coordinator, "
        "--num-processes and --process-id join one started elsewhere: use one or the other"
    ]
    code, err = invoke("--coordinator", "h:1", "--output", str(tmp_path / "r"))
    assert code == 2 and "go together" in err
    assert not (tmp_path / "r").exists() and runtime.PROCESSES not in os.environ
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    code, err = invoke("--workers", "2", "--output", str(tmp_path / "r"))
    assert code == 2 and "JAX is not installed: pip install 'keras-zoo[jax]'" in err


def test_a_multi_process_run_needs_the_jax_backend_and_a_named_output(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.PROCESSES, "2")
    monkeypatch.setenv(runtime.PROCESS_ID, "1")
    monkeypatch.setenv(runtime.ADDRESSES, "localhost:1")
    with pytest.raises(ZooError, match="runs on Keras' JAX backend .* set KERAS_BACKEND=jax"):
        zoo.train("lenet_digits", output=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv(runtime.PROCESS_ID, "2")
    with pytest.raises(ZooError, match="PROCESS_ID=2 must be from 0 to"):
        runtime.cluster()
    monkeypatch.setenv(runtime.PROCESS_ID, "x")
    with pytest.raises(ZooError, match="must be whole numbers"):
        runtime.cluster()
    monkeypatch.setenv(runtime.PROCESSES, "1")
    assert runtime.cluster() is None


def test_each_process_gets_an_equal_share_of_whole_global_batches():
    recipe = load_recipe("lenet_digits", ["data.max_per_class=50", "data.batch_size=40"])
    whole = data_lib.build(recipe)
    shares = [data_lib.build(recipe, processes=2, process_id=i) for i in (0, 1)]
    assert [d.steps_per_epoch for d in (whole, *shares)] == [10, 10, 10]
    for d in shares:
        assert d.train.cardinality() == 10 and d.validation.cardinality() == 2
    first = [next(iter(d.train)) for d in (whole, *shares)]
    # Process i's share is the i-th half of the one-process run's batch.
    np.testing.assert_array_equal(first[1][0], first[0][0][:20])
    np.testing.assert_array_equal(first[2][0], first[0][0][20:])
    with pytest.raises(ZooError, match="data.batch_size 40 is the global batch, .* multiple of 3"):
        data_lib.build(recipe, processes=3)
    with pytest.raises(ZooError, match="whole batches, .* 100 evaluation examples"):
        data_lib.build(
            load_recipe("lenet_digits", ["data.max_per_class=50", "data.batch_size=120"]),
            processes=2,
        )
