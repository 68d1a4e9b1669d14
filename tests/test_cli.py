"""The command line as a user runs it: the real console scripts in a subprocess where the
process matters (training, resume after a kill, tracebacks), Click's runner in-process for the
many quick checks of messages and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_zoo_train_lenet_digits_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run(
        "zoo-train",
        "lenet_digits",
        "--set",
        "fit.epochs=4",
        "--set",
        "fit.verbose=2",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "zoo: finished" in result.stdout and "accuracy=" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.8  # 4 epochs; test_real_data holds the recipes to their bars
    assert "epochs = 4" in (out / "recipe.toml").read_text()

    code, out_eval, err = invoke("zoo", "eval", str(out))
    assert code == 0, err[-2000:]
    assert json.loads(out_eval)["accuracy"] == pytest.approx(metrics["accuracy"])


def test_default_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(
        "zoo-train", "lenet_digits", "--set", "fit.epochs=1", "--set", "fit.verbose=0"
    )
    assert code == 0, err[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("lenet_digits-")
    assert (run_dir / "metrics.json").is_file()


def invoke(*args):
    """Runs `zoo ...` or `zoo-train ...` in this process; returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    import zoo_cli as cli

    command = cli.train_cmd if args[0] == "zoo-train" else cli.main
    result = CliRunner().invoke(command, list(args[1:]), prog_name=args[0])
    return result.exit_code, result.stdout, result.stderr


def test_list_info_show():
    code, out, _ = invoke("zoo", "list")
    assert code == 0 and "resnet20" in out and "vgg16_bn" in out
    _, out, _ = invoke("zoo", "list", "recipes")
    assert "lenet_digits" in out and "resnet50_imagenette" in out
    _, out, _ = invoke("zoo", "list", "models", "--pattern", "vgg1?")
    assert [line.split()[0] for line in out.splitlines()] == ["vgg11", "vgg13", "vgg16", "vgg19"]
    _, out, _ = invoke("zoo", "list", "backbones")
    names = [line.split()[0] for line in out.splitlines()]
    assert {"resnet20", "mobilenet_v2", "convnext_xlarge"} < set(names) and "lenet5" not in names
    assert "mobilenet_v2         mobilenet        keras.applications, 'imagenet' weights" in out
    _, out, _ = invoke("zoo", "info", "resnet50")
    assert "25,557,032" in out and "He et al. 2015" in out
    code, out, _ = invoke("zoo", "show", "resnet56_cifar10", "--set", "fit.epochs=7")
    assert code == 0
    assert 'name = "resnet56"' in out and "epochs = 7" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["zoo-train", "lenet_digits", "--set", "data.batch_sise=3"],
            "data.batch_sise is not a recipe key",
        ),
        (
            ["zoo-train", "lenet_digits", "--set", "fit.epochs='ten'"],
            "fit.epochs: input should be a valid integer, received 'ten'",
        ),
        (
            ["zoo-train", "lenet_digits", "--set", "model.name=resnet2O"],
            "model.name: unknown model 'resnet2O'; did you mean",
        ),
        (
            ["zoo-train", "lenet_digits", "--set", "augment=[{layer='RandomFlop'}]"],
            "unknown augmentation layer 'RandomFlop'",
        ),
        (
            [
                "zoo-train",
                "lenet_mnist",
                "--set",
                "data.source=idx",
                "--set",
                "data.path=/no/such/mnist",
            ],
            "data.path '/no/such/mnist' is not a folder",
        ),
        (["zoo-train", "lenet_digitz"], "unknown recipe 'lenet_digitz'; did you mean"),
        (["zoo-train", "lenet_digits", "--resume"], "--resume needs --output"),
        (["zoo", "info", "resnet"], "unknown model 'resnet'"),
        (["zoo", "eval", "/no/such/run"], "is not a finished zoo run"),
        # The command line itself: one line too, with where to look.
        (["zoo", "export", "r"], "Missing option '--format'. Choose from: savedmodel, tflite"),
        (
            ["zoo-train", "lenet_digits", "--epochs", "3"],
            "No such option '--epochs'; the recipe's fit.epochs is set with --set fit.epochs=",
        ),
        (["zoo-train", "lenet_digits", "--epoch", "3"], "No such option '--epoch'."),
        (["zoo", "predict", "r", "a.png", "-k", "0"], "`zoo predict --help` shows the usage"),
        (["zoo", "trian"], "No such command 'trian'"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(*args)
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_an_output_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    code, _, err = invoke("zoo-train", "lenet_digits", "--output", "file/run")
    assert code == 2 and err.startswith("error: cannot create the run directory file/run: ")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_an_error_exits_2_in_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    """In this process (Click's runner), then with --debug in the console script, as a user
    runs it: the traceback is the Python process's own."""
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("zoo-train", "lenet_digits", "--set", "data.batch_sise=3")
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "data.batch_sise is not a recipe key" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
    result = run("zoo-train", "lenet_digits", "--debug", "--set", "data.batch_sise=3", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZooError" in result.stderr


def test_help_does_not_import_tensorflow():
    """`zoo --help` answers without loading Keras or TensorFlow (seconds of start-up)."""
    code = (
        "import sys, zoo_cli\n"
        "try:\n    zoo_cli.main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'zoo') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage: " in result.stdout and result.stdout.splitlines()[-1] == "[]"
    assert result.stderr == ""


def test_help_on_every_command():
    for args in (["zoo", "--help"], ["zoo-train", "--help"]):  # the console scripts
        result = run(*args)
        assert result.returncode == 0 and "Usage:" in result.stdout, args
    for command in ("list", "info", "show", "eval", "export", "predict", "bench"):
        code, out, _ = invoke("zoo", command, "--help")
        assert code == 0 and "Usage:" in out, command


@pytest.mark.slow  # 45 s; in-process resume is tested in test_training.py
def test_killed_run_resumes_from_the_cli(tmp_path):
    """A real crash: SIGKILL the training process after a few epochs, then --resume."""
    import csv
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["lenet_digits", "--set", "fit.epochs=25", "--set", "fit.verbose=0"]
    proc = subprocess.Popen(
        [str(BIN / "zoo-train"), *args, "--output", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    meta = out / "checkpoints" / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists(), "training finished before it could be killed"
    done = json.loads(meta.read_text())["epoch"]

    result = run("zoo-train", "--resume", "--output", str(out))  # RECIPE from the run dir
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming after epoch {done} of 25" in result.stdout
    with (out / "history.csv").open() as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == list(range(25))
    assert json.loads((out / "metrics.json").read_text())["accuracy"] >= 0.95


def test_saved_models_with_custom_objects_load_after_import_zoo(tmp_path):
    """A fresh process that only imports zoo loads a model using zoo's layer and schedule."""
    import zoo
    from zoo.recipes import load_recipe
    from zoo.training import build_model, compile_model

    recipe = load_recipe("resnet18_cifar10", ["model.name=resnet20", "model.args={}"])
    model = build_model(recipe, classes=10)
    compile_model(model, recipe, steps_per_epoch=10, jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    path = tmp_path / "m.keras"
    model.save(path)
    assert zoo.get  # the in-process registry is not what the subprocess relies on
    code = (
        "import sys, zoo, keras; m = keras.saving.load_model(sys.argv[1]); "
        "print(m.optimizer.get_config()['learning_rate']['class_name'], m.get_layer('resnet20')"
        ".get_layer('conv3_block1_0_pad').__class__.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["Warmup", "ShortcutPad"]


def _ci_run(tmp_path, env_data):
    """.ci/run in a copy of the repository with `make` replaced by a recorder."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    repo = tmp_path / "clone" / "main"
    (repo / ".ci").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).resolve().parent.parent / ".ci" / "run", repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "make").write_text('#!/bin/sh\necho "make $* ZOO_TEST_DATA=$ZOO_TEST_DATA"\n')
    (bin_dir / "make").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ZOO_TEST_DATA"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if env_data is not None:
        env["ZOO_TEST_DATA"] = env_data
    return subprocess.run(
        ["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True
    ), repo


def test_ci_stops_when_the_shared_data_is_missing(tmp_path):
    result, _ = _ci_run(tmp_path, None)  # no ../shared/data beside the clone
    assert result.returncode != 0 and "make" not in result.stdout
    result, _ = _ci_run(tmp_path, str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "is not a folder" in result.stderr
    (tmp_path / "clone" / "shared" / "data").mkdir(parents=True)
    result, repo = _ci_run(tmp_path, None)
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "clone" / "shared" / "data").resolve()
    assert result.stdout.splitlines() == [
        f"make install ZOO_TEST_DATA={data}",
        f"make test ZOO_TEST_DATA={data}",
    ]


def test_bench_train_precisions_are_the_recipes():
    """The CLI lists them itself (it does not import zoo before a command runs)."""
    import typing

    import zoo_cli
    from zoo.recipes.schema import RuntimeConfig

    (option,) = [p for p in zoo_cli.bench_train.params if p.name == "precision"]
    allowed = typing.get_args(RuntimeConfig.model_fields["precision"].annotation)
    assert list(option.type.choices) == list(allowed)


def test_bench_train_reports_speed_flops_and_mfu(tmp_path):
    out = tmp_path / "bench.json"
    args = ["lenet5", "--size", "32", "--batch", "8", "--steps", "2", "--windows", "3"]
    code, stdout, err = invoke("zoo", "bench", "train", *args, "--output", str(out))
    assert code == 0, err[-2000:]
    row = json.loads(out.read_text())
    assert row["model"] == "lenet5" and row["backend"] == "tensorflow" and row["batch"] == 8
    assert len(row["window_images_per_second"]) == 3 and row["images_per_second"] > 0
    # LeNet-5 on 32x32x3: 651,720 multiply-adds (c1 352,800, c3 240,000, c5 48,000, f6 10,080,
    # output 840), two FLOPs each, plus bias, activation and pooling operations.
    assert 2 * 651_720 <= row["forward_gflops_per_image"] * 1e9 <= 1.1 * 2 * 651_720
    expected = 3 * row["forward_gflops_per_image"] * row["images_per_second"] / row["peak_gflops"]
    assert row["mfu"] == pytest.approx(expected) and 0 < row["mfu"] < 1
    assert f"images/s        {row['images_per_second']:.1f} (median of 3 windows" in stdout
    assert "MFU" in stdout and "matmul peak" in stdout
    # zoo-train's choice on this CPU, and the peak MFU divides by is that precision's.
    from zoo.recipes.schema import RuntimeConfig
    from zoo.runtime import policy

    chosen = policy(RuntimeConfig()).precision
    assert row["precision"] == chosen
    assert row["peak_dtype"] == chosen.removeprefix("mixed_")
    from zoo.runtime import onednn

    assert row["onednn"] is onednn() is not None  # TensorFlow's kernels, in the header too
    assert f", oneDNN {'on' if row['onednn'] else 'off'}\n" in stdout
    code, stdout, err = invoke("zoo", "bench", "train", *args, "--precision", "mixed_bfloat16")
    assert code == 0, err[-2000:]
    assert "lenet5 training on Keras/tensorflow, batch 8, 32x32, mixed_bfloat16" in stdout
    assert "GFLOP/s (measured, bfloat16)" in stdout
    code, _, err = invoke("zoo", "bench", "train", *args, "--precision", "half")
    assert code == 2 and "--precision" in err
    code, _, err = invoke("zoo", "bench")
    assert code == 2 and err.startswith("error: give --export RUN, or a benchmark: train, data")


def test_bench_train_peers_are_the_same_resnets():
    import zoo
    from zoo.bench_peers import format_peers, plain_keras_resnet

    # The plain Keras peer is zoo's architecture written by hand: the same weights, counted.
    for name in ("resnet18", "resnet50"):
        ours = zoo.get(name, input_shape=(64, 64, 3), classes=10)
        assert plain_keras_resnet(name, 64).count_params() == ours.count_params()
    code, _, err = invoke("zoo", "bench", "train", "vgg11", "--peers")
    assert code == 2
    assert err.startswith("error: --peers compares ResNets, which plain Keras, keras-hub and timm")
    table = format_peers(
        {
            "model": "resnet18",
            "batch": 32,
            "size": 64,
            "steps": 10,
            "peers": [
                {"peer": "zoo", "backend": "tensorflow", "images_per_second": 100.0, "vs_zoo": 1},
                {"peer": "timm", "backend": "torch", "images_per_second": 125.0, "vs_zoo": 0.8},
                {"peer": "keras-hub", "backend": "tensorflow", "error": "No module named x"},
            ],
        }
    )
    assert table.splitlines()[2:] == [
        "zoo        tensorflow             100.0       1.00x",
        "timm       torch                  125.0       0.80x",
        "keras-hub  tensorflow          not measured: No module named x",
    ]


@pytest.mark.slow
def test_bench_train_peers_measures_each_peer_or_says_why_not(tmp_path):
    out = tmp_path / "peers.json"
    args = ["resnet18", "--size", "32", "--batch", "4", "--steps", "1", "--windows", "2"]
    code, stdout, err = invoke("zoo", "bench", "train", *args, "--peers", "--output", str(out))
    assert code == 0, err[-2000:]
    rows = {r["peer"]: r for r in json.loads(out.read_text())["peers"]}
    assert list(rows) == ["zoo", "keras", "keras-hub", "timm"]
    for peer in ("zoo", "keras"):
        assert len(rows[peer]["seconds"]) == 2 and rows[peer]["images_per_second"] > 0
    assert rows["zoo"]["vs_zoo"] == 1
    for peer in ("keras-hub", "timm"):  # optional libraries: measured, or the reason shown
        assert "images_per_second" in rows[peer] or "keras-zoo[bench]" in rows[peer]["error"]
    assert "interleaved" in stdout


def test_bench_data_reports_the_pipeline_alone_and_under_training():
    code, out, err = invoke(
        "zoo", "bench", "data", "lenet_digits", "--steps", "1000", "--repeats", "2", "--json"
    )
    assert code == 0, err[-2000:]
    row = json.loads(out)
    # At most an epoch: 45 batches of 32, the last one short.
    assert row["recipe"] == "lenet_digits" and (row["steps"], row["batch"]) == (45, 32)
    rates = [row[f"{k}_images_per_second"] for k in ("cold", "warm", "fed", "cached")]
    assert all(r > 0 for r in rates)
    assert row["fed_vs_cached"] == pytest.approx(row["fed_images_per_second"] / rates[3])
    # Two windows a side, the fastest of each counts, the medians beside.
    assert len(row["fed_seconds"]) == len(row["cached_seconds"]) == 2
    assert row["fed_images_per_second"] == pytest.approx(45 * 32 / min(row["fed_seconds"]))
    fed, kept = (sum(row[f"{k}_seconds"]) / 2 for k in ("fed", "cached"))
    assert row["median_fed_vs_cached"] == pytest.approx(kept / fed)
