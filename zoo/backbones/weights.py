"""Backbone weights from a zoo run, a .keras file or a loaded model, taken by layer name."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from zoo import rundir
from zoo.errors import ZooError


def is_saved_model(path: str) -> bool:
    """Whether `path` names a zoo run directory or a .keras file (weights taken by name)."""
    return path.endswith(".keras") or os.path.isdir(path)


def load_source(path) -> keras.Model:
    """The model saved in a finished zoo run directory or a `.keras` file."""
    if not Path(path).exists():
        raise ZooError(f"weights file {str(path)!r} does not exist")
    return rundir.load(path, what="backbone weights", compile=False)[0]


def sublayers(model):
    """Every layer of `model` that is not itself a model, nested models' included, in graph
    order (an ensemble's members have layers of the same names); none for a layer that is not
    a model."""
    for layer in getattr(model, "layers", None) or ():
        if isinstance(layer, keras.Model):
            yield from sublayers(layer)
        else:
            yield layer


def leaves(model) -> dict:
    """Every layer that is not itself a model, by name, nested models flattened (outer first):
    the first of `sublayers` of each name."""
    out = {}
    for layer in sublayers(model):
        out.setdefault(layer.name, layer)
    return out


def transfer(target: keras.Model, source, what: str) -> int:
    """Copies every weighted layer of `target` from the layer of the same name in `source` (a
    model, a run directory or a .keras file); layers only the source has (its head) are left.
    Returns the number of layers copied; raises if any target layer is missing or differs."""
    label = source if isinstance(source, str | os.PathLike) else getattr(source, "name", "model")
    if not isinstance(source, keras.Model):
        source = load_source(source)
    have = leaves(source)
    missing, different, copied = [], [], 0
    for name, layer in leaves(target).items():
        if not layer.weights:
            continue
        theirs = have.get(name)
        if theirs is None:
            missing.append(name)
            continue
        mine, given = (
            [tuple(w.shape) for w in layer.weights],
            [tuple(w.shape) for w in theirs.weights],
        )
        if mine != given:
            different.append(f"{name} {given} there, {mine} here")
            continue
        layer.set_weights(theirs.get_weights())
        copied += 1
    if missing or different:
        problems = []
        if missing:
            problems.append(f"{len(missing)} layers missing ({', '.join(missing[:3])}, ...)")
        if different:
            problems.append(f"{len(different)} of other shapes ({different[0]})")
        raise ZooError(
            f"{what}: {label} does not hold its weights: {'; '.join(problems)}. Take weights "
            "from a run of the same architecture and options"
        )
    return copied
