"""The model registry: one decorator registers a builder under one name.

This module holds the only module-level mutable state of zoo: the table of registered specs.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from zoo.errors import ZooError, suggest

_REGISTRY: dict[str, ModelSpec] = {}
_PARAMETERS: dict[str, int] = {}  # a cache of ModelSpec.parameter_count


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows of a model, without building it."""

    name: str
    builder: Callable = field(repr=False)
    family: str
    tasks: tuple[str, ...]
    input_shape: tuple[int, ...]
    paper: str
    summary: str

    def parameter_count(self) -> int:
        """Trainable parameters of the model built with its default arguments (cached)."""
        if self.name not in _PARAMETERS:
            _PARAMETERS[self.name] = _trainable_count(self.builder())
        return _PARAMETERS[self.name]

    def as_dict(self, with_parameters: bool = True) -> dict:
        out = {
            "name": self.name,
            "family": self.family,
            "tasks": list(self.tasks),
            "input_shape": list(self.input_shape),
            "paper": self.paper,
            "summary": self.summary,
        }
        if with_parameters:
            out["parameters"] = self.parameter_count()
        return out


def _trainable_count(model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def register(
    name: str,
    *,
    family: str,
    tasks: tuple[str, ...] = ("classification",),
    input_shape: tuple[int, ...],
    paper: str,
):
    """Registers a model builder under `name`.

    Example:

    ```python
    @register("lenet5", family="lenet", input_shape=(32, 32, 1), paper="LeCun et al. 1998")
    def lenet5(**kwargs):
        ...
    ```

    Raises:
        ValueError: if `name` is already registered.
    """

    def decorate(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            family=family,
            tasks=tuple(tasks),
            input_shape=tuple(input_shape),
            paper=paper,
            summary=doc.splitlines()[0] if doc else "",
        )
        return builder

    return decorate


def _spec(name: str) -> ModelSpec:
    _load_builtin_models()
    if name not in _REGISTRY:
        raise suggest(name, _REGISTRY, what="model", hint="`zoo list models` shows them all")
    return _REGISTRY[name]


def get(name: str, **kwargs):
    """Builds the registered model `name` with keras.applications-style keyword arguments.

    Example:

    ```python
    model = zoo.get("resnet20", input_shape=(32, 32, 3), classes=10)
    ```
    """
    spec = _spec(name)
    signature = inspect.signature(spec.builder)
    try:
        signature.bind(**kwargs)  # a wrong argument name; a TypeError inside is a bug
    except TypeError as e:
        allowed = list(signature.parameters)
        raise ZooError(f"model {name!r}: {e}; its arguments are {', '.join(allowed)}") from e
    return spec.builder(**kwargs)


def info(name: str) -> dict:
    """Family, tasks, default input shape, trainable parameters (default build) and paper."""
    return _spec(name).as_dict()


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Sorted registered names, filtered by an fnmatch `pattern` and a `task`."""
    _load_builtin_models()
    names = [
        n
        for n, spec in _REGISTRY.items()
        if (pattern is None or fnmatch.fnmatch(n, pattern)) and (task is None or task in spec.tasks)
    ]
    return sorted(names)


def specs() -> list[ModelSpec]:
    _load_builtin_models()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def _load_builtin_models() -> None:
    # The model families register themselves when zoo.models is imported; importing here
    # (not at the top) keeps registry.py free of a cycle with the families that import it.
    import zoo.models  # noqa: F401
