"""Tasks: one module each, chosen by a recipe's `task`.

A task module is the only place that knows what its targets and outputs mean. training.py,
data/, export.py, predict.py and the CLI ask it; none of them tests which task it is. Each
module provides (see classification.py, the reference):

- `INPUT`: the key of the model's input in the example dicts ("images", "texts");
- `TARGET`: the key of the target in the example dicts ("labels", "segmentation_masks"), the
  Keras preprocessing layers' own key, so `[[augment]]` layers transform images and targets
  together; `MONITOR`: the default `fit.monitor`; `VALIDATE`: whether `fit` scores the eval
  split each epoch; `ACTIVATION`: the model's last activation;
- `model_input(recipe, data)`: (the model's `keras.Input`, its preprocessing layers, the
  net's input shape); `data`, where given, is what preprocessing adapts on (a vocabulary);
- `check(recipe)`: the task's recipe rules (head keys, losses, metrics, augmentation layers),
  raising ValueError with what is wrong and how to fix it;
- `net(recipe, shape, classes, activation, preprocessing)`: the network (its head over the
  backbone, or the registered model), `activation` None for logits;
- `trainer(recipe, model, classes)`: the model `fit` trains (the model itself, or a training
  graph sharing its weights: faces' margin softmax, segmentation's crops); the run saves and
  exports `model`;
- `encode(recipe, classes)`: a function on batch dicts before augmentation, or None;
- `loss(recipe, classes)` and `metrics(recipe, classes)`: what `compile` gets;
- `finish(model, data, recipe)`: what the task sets in `model` from the training data once
  training ends, before the run saves it (faces' within-class whitening); returns whether it
  changed the model (`_common.finish`, the default, changes nothing);
- `evaluate(model, data, run, recipe)`: flat metrics for metrics.json (the task's plots go
  into `run`); `summary(run)`: lines `zoo-train` prints after the run's metrics
  (`_common.summary`, the default: none);
- `serving(model, format, input_dtype, any_size)`: (the model an export converts, a function
  from eval inputs to its inputs, {file name: text} written beside the export);
- `AGREEMENT`, `TOLERANCE`, `PARITY_EXAMPLES`, `parity(reference, exported, targets,
  class_names)` and `describe_parity(report)`: how an export is compared with Keras;
- `OUTPUT_RANK` (None where the output's rank does not tell the task), `present(images,
  outputs, class_names, ...)` and `describe(result)`: what `zoo predict` returns and prints
  (for each image file, or text).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from zoo.errors import suggest


def names() -> list[str]:
    """Every task: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The task module `name`."""
    if name not in names():
        raise suggest(name, names(), what="task")
    return importlib.import_module(f"zoo.tasks.{name}")


def logged(recipe) -> list[str]:
    """What `fit` logs for `recipe` each epoch: the loss and the task's metrics, and their
    `val_` values where the task validates: the names `fit.monitor` may take."""
    task = get(recipe.task)
    names = ["loss", *(m.name for m in task.metrics(recipe, 2))]
    return names + [f"val_{n}" for n in names] if task.VALIDATE else names


def for_input(kind: str) -> ModuleType | None:
    """The one task whose models take `kind` ("texts"), for exported files without a recipe."""
    found = [get(n) for n in names() if get(n).INPUT == kind]
    return found[0] if len(found) == 1 else None


def for_output_rank(rank: int) -> ModuleType | None:
    """The task whose models give outputs of `rank` (for exported files without a recipe)."""
    found = [get(n) for n in names() if get(n).OUTPUT_RANK == rank]  # None never equals
    return found[0] if len(found) == 1 else None
