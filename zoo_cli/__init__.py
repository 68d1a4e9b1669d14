"""The command line: `zoo` (list, info, show, eval, export, predict, embed, verify, identify,
bench) and `zoo-train`.
Thin: parse, call the library, print.

It lives beside the `zoo` package, not in it: importing anything in `zoo` imports Keras and
TensorFlow (saved zoo models must load after `import zoo`), and `--help` should not wait for
them. Each command imports the library when it runs.

Every error a user can fix (ZooError) becomes one message and exit status 2 here, in one place;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _OneLine:
    """Command-line mistakes (an unknown option, a bad choice, a missing argument) as one
    `error:` line and exit status 2, like every other error, instead of click's usage block."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as e:
            path = e.ctx.command_path if e.ctx is not None else (prog_name or self.name)
            message = " ".join(e.format_message().split())
            key = _recipe_key(e)
            if key is not None:  # `--epochs 3` meant as a recipe setting
                message = (
                    f"No such option '{e.option_name}'; the recipe's {key} is set with "
                    f"--set {key}=VALUE."
                )
            click.echo(f"error: {message} (`{path} --help` shows the usage)", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _recipe_key(error: click.UsageError) -> str | None:
    """The recipe key ("fit.epochs") an unknown option of a command with --set names."""
    if not isinstance(error, click.NoSuchOption) or error.ctx is None:
        return None
    if not any(p.name == "overrides" for p in error.ctx.command.params):
        return None
    from zoo.recipes.schema import Recipe

    name = error.option_name.lstrip("-").replace("-", "_")
    for section, field in Recipe.model_fields.items():
        fields = getattr(field.annotation, "model_fields", {})
        if name in fields:
            return f"{section}.{name}"
    return None


class _Group(_OneLine, click.Group):
    def invoke(self, ctx):
        return _guarded(ctx, super().invoke)


class _Command(_OneLine, click.Command):
    def invoke(self, ctx):
        return _guarded(ctx, super().invoke)


def _guarded(ctx, invoke):
    from zoo.errors import ZooError

    try:
        return invoke(ctx)
    except ZooError as e:
        if (ctx.obj or {}).get("debug") or ctx.params.get("debug"):
            raise
        # One line whatever the message holds (a key with a line break or a control character).
        click.echo("error: " + " ".join(str(e).splitlines()), err=True)
        ctx.exit(2)


def _set_option(f):
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a recipe key (TOML value), e.g. --set fit.epochs=5.",
    )(f)


def _debug_option(f):
    def remember(ctx, _param, value):
        obj = ctx.ensure_object(dict)
        obj["debug"] = obj.get("debug", False) or value
        return value

    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=remember,
        is_eager=True,
        help="Show the traceback of errors.",
    )(f)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_debug_option
def main():
    """zoo: a Keras model zoo with a registry of CNNs and named training recipes."""


@main.command("list", cls=_Command)
@click.argument("what", type=click.Choice(["models", "backbones", "recipes"]), default="models")
@click.option("--pattern", help="fnmatch pattern on names, e.g. 'resnet*'.")
@click.option("--task", help="Only models for this task, e.g. classification.")
def list_cmd(what, pattern, task):
    """List registered models (default), backbones or shipped recipes."""
    import fnmatch

    if what in ("models", "backbones"):
        from zoo import backbones, registry

        if what == "backbones":
            task = "backbone"
        for spec in registry.specs():
            if spec.name not in registry.list_models(pattern, task):
                continue
            if what == "backbones":
                origin = (
                    "keras.applications, 'imagenet' weights"
                    if spec.name in backbones.KERAS
                    else "zoo, weights from your runs"
                )
                click.echo(f"{spec.name:<20} {spec.family:<16} {origin}")
            else:
                click.echo(f"{spec.name:<20} {spec.family:<16} {spec.summary}")
    else:
        from zoo.recipes import list_recipes, load_recipe

        for name in list_recipes():
            if pattern is None or fnmatch.fnmatch(name, pattern):
                click.echo(f"{name:<22} {load_recipe(name).description}")


@main.command(cls=_Command)
@click.argument("model")
def info(model):
    """Show a model's family, tasks, input shape, parameter count and paper."""
    from zoo import registry

    for key, value in registry.info(model).items():
        if isinstance(value, int):
            value = f"{value:,}"
        click.echo(f"{key:<12} {value}")


@main.command(cls=_Command)
@click.argument("recipe")
@_set_option
def show(recipe, overrides):
    """Print the resolved recipe (extends and --set applied) as TOML."""
    from zoo.recipes import dumps, load_recipe

    click.echo(dumps(load_recipe(recipe, overrides)), nl=False)


@main.command("eval", cls=_Command)
@click.argument("run_dir", type=click.Path(file_okay=False))
def eval_cmd(run_dir):
    """Re-evaluate a finished run's model on its eval split (rewrites metrics.json)."""
    from zoo.training import evaluate_run

    click.echo(json.dumps(evaluate_run(run_dir), indent=2, sort_keys=True))


@main.command("export", cls=_Command)
@click.argument("source", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["savedmodel", "tflite", "onnx"]),
    required=True,
    help="Export format.",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "dynamic", "float16", "int8"]),
    default="none",
    show_default=True,
    help="TFLite quantization.",
)
@click.option(
    "--full-integer",
    is_flag=True,
    help="With --quantize int8: int8 input and output (microcontrollers).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    help="Eval examples the parity check reads (default 2000; segmentation 64).",
)
@click.option(
    "--representative",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Training-pipeline images used to calibrate int8.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    help="Minimum agreement with Keras: top-1 for classifiers (default 0.99 float, 0.98 "
    "quantized), pixels for segmentation (0.99 float, 0.97 int8).",
)
@click.option(
    "--input-dtype",
    type=click.Choice(["float32", "uint8"]),
    default="float32",
    show_default=True,
    help="Type of the exported model's raw pixel input.",
)
@click.option(
    "--any-size",
    is_flag=True,
    help="Take images of any size and resize them inside the model (bilinear, without the "
    "antialiasing training uses when shrinking: ONNX has no such op).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    help="Folder for the export (default RUN_DIR/export).",
)
def export_cmd(
    source,
    fmt,
    quantize,
    samples,
    full_integer,
    representative,
    tolerance,
    input_dtype,
    any_size,
    output,
):
    """Export SOURCE (a run directory or a .keras file) and check it against Keras.

    Writes the model, labels.txt and <model>.parity.json; exits 1 when the agreement with the
    Keras model on the eval images (top-1 classes, or mask pixels) is below the tolerance.
    """
    from zoo.export import ParityError, export

    try:
        report = export(
            source,
            format=fmt,
            quantize=quantize,
            output=output,
            representative=representative,
            samples=samples,
            full_integer=full_integer,
            tolerance=tolerance,
            input_dtype=input_dtype,
            any_size=any_size,
        )
    except ParityError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    from zoo import tasks

    rows = [
        ("file", report["path"]),
        ("size", f"{report['size_bytes'] / 1024:.1f} KiB"),
        ("examples", report["examples"]),
        ("max abs diff", f"{report['max_abs_diff']:.3g}"),
        ("max rel diff", f"{report['max_rel_diff']:.3g}"),
        *tasks.get(report["task"]).describe_parity(report),
    ]
    for key, value in rows:
        click.echo(f"{key:<16} {value}")


@main.command(cls=_Command)
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, metavar="IMAGES|TEXTS...")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default="predictions",
    show_default=True,
    help="Segmentation: the folder for the mask and overlay PNGs.",
)
@click.option(
    "--file",
    "texts_file",
    type=click.Path(dir_okay=False),
    help="Text models: a file of texts to predict, one per line.",
)
def predict(model, inputs, top_k, as_json, output, texts_file):
    """Predict with MODEL (a run directory, a .keras file, a SavedModel directory, a .tflite
    or an .onnx file): the top-k classes of each image file (or, for a text model, each text
    given as an argument or a line of --file); for segmentation, each image's mask (at the
    image's size) and an overlay written as PNGs, and the fraction of pixels of each class."""
    from pathlib import Path

    from zoo.errors import ZooError
    from zoo.predict import describe
    from zoo.predict import predict as run_predict

    inputs = list(inputs)
    if texts_file:
        path = Path(texts_file)
        if not path.is_file():
            raise ZooError(
                f"--file {texts_file!r} is not a file; give a text file, one text a line"
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ZooError(f"--file {texts_file!r} is not UTF-8 text: {e}") from None
        inputs += [line for line in lines if line.strip()]
    if not inputs:
        raise ZooError("give what to predict: image files or texts, or --file with texts")
    results = run_predict(model, inputs, top_k=top_k, output=output)
    if as_json:
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for result in results:
        for line in describe(result):
            click.echo(line)


@main.command(cls=_Command)
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the embeddings as JSON.")
def embed(model, images, as_json):
    """The unit-length embedding of each of IMAGES with MODEL (a faces run directory, its
    .keras file or an export)."""
    from zoo.verification import embed as run_embed

    vectors = run_embed(model, images)
    if as_json:
        rows = [{"image": i, "embedding": [float(v) for v in e]} for i, e in zip(images, vectors)]
        click.echo(json.dumps(rows, indent=2))
        return
    for image, vector in zip(images, vectors, strict=True):
        click.echo(f"{image}  " + " ".join(f"{v:+.4f}" for v in vector))


@main.command(cls=_Command)
@click.argument("model", type=click.Path())
@click.argument("first", type=click.Path())
@click.argument("second", type=click.Path())
@click.option(
    "--threshold",
    type=click.FloatRange(-1, 1),
    help="Cosine similarity threshold (default: the one the run calibrated).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(model, first, second, threshold, as_json):
    """Whether FIRST and SECOND show the same person: their cosine similarity against the
    threshold MODEL's run calibrated at its target false accept rate (FAR), with the share of
    genuine pairs of its unseen identities that the threshold accepted (TAR). Exit status 0
    either way."""
    from zoo.verification import verify as run_verify

    result = run_verify(model, first, second, threshold=threshold)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    rates = []
    if result["target_far"] is not None:
        rates.append(f"FAR {result['target_far']:g}")
    if result["tar_at_threshold"] is not None:
        rates.append(f"TAR {result['tar_at_threshold']:.2f}")
    operating_point = f" ({', '.join(rates)})" if rates else ""
    click.echo(
        f"similarity {result['similarity']:.4f}  threshold {result['threshold']:.4f}"
        f"{operating_point}  " + ("same" if result["same"] else "different")
    )


@main.command(cls=_Command)
@click.argument("model", type=click.Path())
@click.argument("image", type=click.Path())
@click.option(
    "--gallery",
    type=click.Path(),
    required=True,
    help="A folder with one sub-folder of images per identity.",
)
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the ranking as JSON.")
def identify(model, image, gallery, top_k, as_json):
    """Rank the gallery's identities by similarity to the face in IMAGE; the best is a match
    when it reaches the run's calibrated threshold."""
    from zoo.verification import identify as run_identify

    result = run_identify(model, image, gallery, top_k=top_k)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for entry in result["matches"]:
        click.echo(f"{entry['similarity']:.4f}  {entry['identity']} ({entry['images']} images)")
    if result["threshold"] is None:
        click.echo("no calibrated threshold: cannot say whether the best is a match")
    elif result["match"]:
        click.echo(f"match: {result['match']} (threshold {result['threshold']:.4f})")
    else:
        click.echo(f"no match: no identity reaches the threshold {result['threshold']:.4f}")


@main.group(cls=_Group, invoke_without_command=True)
@click.option(
    "--export",
    "run_dir",
    type=click.Path(file_okay=False),
    help="A finished run: time its Keras model and its exports.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Timed calls per model and batch size (after 5 warm-up calls).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_context
def bench(ctx, run_dir, repeats, as_json):
    """Benchmarks on this machine. `--export RUN`: latency (median, batch 1 and 32) and size of
    a run's exports beside the Keras model, exporting what is missing first. `train MODEL`:
    training speed. `data RECIPE`: the input pipeline's."""
    if ctx.invoked_subcommand is not None:
        if run_dir is not None:
            raise click.UsageError(f"--export and `bench {ctx.invoked_subcommand}` are separate")
        return
    if run_dir is None:
        raise click.UsageError("give --export RUN, or a benchmark: train, data")
    from zoo.bench import bench_exports, format_table

    rows = bench_exports(run_dir, repeats=repeats)
    click.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))


@bench.command("train", cls=_Command)
@click.argument("model")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Steps per timed window.",
)
@click.option(
    "--windows",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Timed windows (the median is reported), after 3 warm-up steps.",
)
@click.option(
    "--peers",
    is_flag=True,
    help="Also train the same ResNet in plain Keras, keras-hub and timm (PyTorch), timed "
    "windows interleaved, and print images/s with zoo's ratio to each.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "mixed_float16", "mixed_bfloat16"]),
    default="auto",
    show_default=True,
    help="zoo's precision, as a recipe's runtime.precision (auto: zoo-train's choice for "
    "this device).",
)
@click.option("--output", type=click.Path(dir_okay=False), help="Also save the result as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_train(model, batch, size, steps, windows, peers, precision, output, as_json):
    """Training images/s of MODEL (a registry name) as zoo-train runs it, fed cached tensors;
    its FLOPs per image and the fraction of this machine's measured matrix-product peak (MFU).
    The backend is KERAS_BACKEND's."""
    from zoo.bench import bench_training, format_training

    if peers:
        from zoo.bench_peers import check_model

        check_model(model)  # before minutes of measuring zoo alone
    sizes = {"batch": batch, "size": size, "steps": steps, "windows": windows}
    row = bench_training(model, precision=precision, **sizes)
    text = format_training(row)
    if peers:
        from zoo.bench_peers import bench_peers, format_peers

        compared = bench_peers(model, precision=precision, **sizes)
        row = {**row, "peers": compared["peers"]}
        text += "\n\n" + format_peers(compared)
    if output:
        from pathlib import Path

        from zoo import rundir
        from zoo.errors import ZooError

        try:
            rundir.write_json(Path(output), row)
        except OSError as e:
            raise ZooError(f"cannot write --output {output}: {e.strerror}") from None
    click.echo(json.dumps(row, indent=2) if as_json else text)


@bench.command("data", cls=_Command)
@click.argument("recipe")
@_set_option
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Training batches per timed pass (at most an epoch's).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Timed windows on each side (fed, cached), interleaved; the fastest of each counts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_data_cmd(recipe, overrides, steps, repeats, as_json):
    """RECIPE's input pipeline: images/s on its own (first pass and warm), and training fed by
    it beside training on the same batches held in memory."""
    from zoo.bench import bench_data, format_data
    from zoo.recipes import load_recipe

    row = bench_data(load_recipe(recipe, overrides), steps=steps, repeats=repeats)
    click.echo(json.dumps(row, indent=2) if as_json else format_data(row))


@main.command("train", cls=_Command)
@click.argument("recipe", required=False)
@_set_option
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    help="Run directory (default runs/<recipe>-<timestamp>).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last epoch.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Train data-parallel in N processes on this machine (Keras' distribution API on "
    "JAX); process 0 writes the run directory.",
)
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    help="Join a multi-process job whose process 0 listens at HOST:PORT (with --num-processes "
    "and --process-id; or Keras' KERAS_DISTRIBUTION_* variables).",
)
@click.option("--num-processes", type=click.IntRange(min=1), help="Processes in the job.")
@click.option("--process-id", type=click.IntRange(min=0), help="This process's index (0 first).")
@_debug_option
def train_cmd(recipe, overrides, output, resume, workers, coordinator, num_processes, process_id):
    """Train RECIPE (a shipped recipe name or a .toml path) and write a run directory.

    With --resume and --output DIR, RECIPE may be left out: the recipe saved in DIR is used.
    """
    from zoo import rundir, runtime
    from zoo.errors import ZooError

    if resume and not output:
        raise ZooError("--resume needs --output, the run directory to continue")
    if recipe is None:
        if not resume:
            raise ZooError("give a RECIPE name or .toml path (`zoo list recipes` shows them)")
        recipe = os.path.join(output, rundir.RECIPE)
    joining = (coordinator, num_processes, process_id)
    if workers is not None and any(v is not None for v in joining):
        raise ZooError(
            "--workers starts the processes of a job on this machine; --coordinator, "
            "--num-processes and --process-id join one started elsewhere: use one or the other"
        )
    if (workers or 1) > 1 or any(v is not None for v in joining):
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise ZooError(
                "multi-process training runs on Keras' JAX backend, and JAX is not installed: "
                "pip install 'keras-zoo[jax]'"
            )
    if any(v is not None for v in joining):
        if None in joining:
            raise ZooError("--coordinator, --num-processes and --process-id go together")
        os.environ.update(
            {
                runtime.ADDRESSES: coordinator,
                runtime.PROCESSES: str(num_processes),
                runtime.PROCESS_ID: str(process_id),
            }
        )
    job = runtime.cluster() if workers is None else None
    if job is not None:
        runtime.join(job)  # before the recipe: loading it computes with Keras
    from zoo.recipes import load_recipe
    from zoo.training import default_output, train

    loaded = load_recipe(recipe, overrides)
    output = output or str(default_output(loaded))
    if workers is not None and workers > 1:
        if loaded.runtime.backend not in ("auto", "jax"):
            raise ZooError(
                "--workers trains on Keras' JAX backend, and the recipe sets runtime.backend = "
                f"{loaded.runtime.backend!r}: leave it at 'auto' or set it to 'jax'"
            )
        sys.exit(_launch(workers, recipe, overrides, output, resume))
    backend = runtime.backend_to_start(loaded.runtime) if job is None else None
    if backend is not None:
        # Keras picks its backend once per process: this one starts again on the recipe's.
        # (A joined process started on JAX; zoo.train checks the recipe agrees.)
        args = _train_args(recipe, overrides, output, resume)
        if (click.get_current_context().obj or {}).get("debug"):
            args.append("--debug")
        sys.stdout.flush()
        os.execve(sys.executable, args, dict(os.environ, KERAS_BACKEND=backend))
    try:
        run = train(loaded, output=output, resume=resume)
    except KeyboardInterrupt:
        if job is None or job.primary:
            click.echo(
                f"\nzoo: interrupted; continue with: zoo-train --resume --output {output}",
                err=True,
            )
        sys.exit(130)
    if job is not None and not job.primary:
        return
    metrics = json.loads((run / rundir.METRICS).read_text())
    shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
    click.echo(f"zoo: finished {run}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    from zoo import tasks

    for line in tasks.get(loaded.task).summary(run):
        click.echo(f"zoo: {line}")


def _train_args(recipe: str, overrides, output: str, resume: bool) -> list[str]:
    """The command line of a new zoo-train process training this run."""
    args = [recipe, *(x for o in overrides for x in ("--set", o)), "--output", output]
    if resume:
        args.append("--resume")
    return [sys.executable, "-c", "import zoo_cli; zoo_cli.train_main()", *args]


def _launch(workers: int, recipe: str, overrides, output: str, resume: bool) -> int:
    """Starts `workers` processes of one job on this machine (process 0 prints, every one
    trains) and waits for them; the first to fail stops the others, and its exit status is
    the launcher's."""
    import contextlib
    import socket
    import subprocess
    import tempfile
    import time

    from zoo import runtime

    with socket.socket() as s:  # a free port for process 0's coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    command = _train_args(recipe, overrides, output, resume)
    procs, logs = [], []
    for i in range(workers):
        env = dict(
            os.environ,
            KERAS_BACKEND="jax",
            **{
                runtime.ADDRESSES: f"localhost:{port}",
                runtime.PROCESSES: str(workers),
                runtime.PROCESS_ID: str(i),
            },
        )
        # Process 0 speaks for the job; the others' messages are shown only if they fail.
        log = None if i == 0 else tempfile.TemporaryFile("w+")
        logs.append(log)
        out = None if i == 0 else subprocess.DEVNULL
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=log))
    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                # A failure stops the job: process 0 has usually said why (the same error
                # stops every process), so it gets a moment to finish saying it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[0].wait(timeout=5)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:  # the terminal sent the processes the same interrupt
        for p in procs:
            p.wait()
        return 130
    finally:
        stopped = [p for p in procs if p.poll() is None]
        for p in stopped:
            p.terminate()
        for p in procs:
            p.wait()
    # A process killed by a signal has a negative return code: exit status 1 for it.
    codes = [None if p in stopped else p.returncode if p.returncode >= 0 else 1 for p in procs]
    if codes[0]:
        return codes[0]
    failed = next((i for i, code in enumerate(codes) if code), None)
    if failed is None:
        return 0
    logs[failed].seek(0)
    for line in logs[failed].read().strip().splitlines()[-5:]:
        click.echo(f"zoo: process {failed}: {line}", err=True)
    click.echo(f"zoo: process {failed} of {workers} stopped (exit {codes[failed]})", err=True)
    return codes[failed]


def train_main():
    """The `zoo-train` console script: `zoo train` under its own name."""
    sys.exit(train_cmd.main(prog_name="zoo-train"))
