"""The command line: `zoo` (list, info, show, eval) and `zoo-train`. Thin: parse, call, print.

Every error a user can fix (ZooError) becomes one message and exit status 2 here, in one place;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Group(click.Group):
    def invoke(self, ctx):
        return _guarded(ctx, super().invoke)


class _Command(click.Command):
    def invoke(self, ctx):
        return _guarded(ctx, super().invoke)


def _guarded(ctx, invoke):
    from zoo.errors import ZooError

    try:
        return invoke(ctx)
    except ZooError as e:
        if (ctx.obj or {}).get("debug") or ctx.params.get("debug"):
            raise
        click.echo(f"error: {e}", err=True)
        ctx.exit(2)


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
@click.argument("what", type=click.Choice(["models", "recipes"]), default="models")
@click.option("--pattern", help="fnmatch pattern on names, e.g. 'resnet*'.")
@click.option("--task", help="Only models for this task, e.g. classification.")
def list_cmd(what, pattern, task):
    """List registered models (default) or shipped recipes."""
    import fnmatch

    if what == "models":
        from zoo import registry

        for spec in registry.specs():
            if spec.name in registry.list_models(pattern, task):
                click.echo(f"{spec.name:<12} {spec.family:<7} {spec.summary}")
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
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key, e.g. --set data.batch_size=64.",
)
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


@main.command("train", cls=_Command)
@click.argument("recipe", required=False)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key (TOML value), e.g. --set fit.epochs=5.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    help="Run directory (default runs/<recipe>-<timestamp>).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last epoch.")
@_debug_option
def train_cmd(recipe, overrides, output, resume):
    """Train RECIPE (a shipped recipe name or a .toml path) and write a run directory.

    With --resume and --output DIR, RECIPE may be left out: the recipe saved in DIR is used.
    """
    from zoo import rundir
    from zoo.errors import ZooError
    from zoo.recipes import load_recipe
    from zoo.training import default_output, train

    if resume and not output:
        raise ZooError("--resume needs --output, the run directory to continue")
    if recipe is None:
        if not resume:
            raise ZooError("give a RECIPE name or .toml path (`zoo list recipes` shows them)")
        recipe = os.path.join(output, rundir.RECIPE)
    recipe = load_recipe(recipe, overrides)
    output = output or str(default_output(recipe))
    try:
        run = train(recipe, output=output, resume=resume)
    except KeyboardInterrupt:
        click.echo(
            f"\nzoo: interrupted; continue with: zoo-train --resume --output {output}", err=True
        )
        sys.exit(130)
    metrics = json.loads((run / rundir.METRICS).read_text())
    shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
    click.echo(f"zoo: finished {run}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))


def train_main():
    """The `zoo-train` console script: `zoo train` under its own name."""
    sys.exit(train_cmd.main(prog_name="zoo-train"))
