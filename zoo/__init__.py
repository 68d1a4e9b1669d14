"""zoo: a Keras 3 model zoo with a registry of classic CNNs and declarative training recipes.

Example:

```python
import zoo

model = zoo.get("resnet20", input_shape=(32, 32, 3), classes=10)
features = zoo.backbone("mobilenet_v2", input_shape=(160, 160, 3))  # {"P1": ..., "P5": ...}
run = zoo.train("lenet_digits", output="runs/digits")
```
"""

# First: TensorFlow and Keras, imported without TensorFlow's start-up lines on stderr.
import zoo._startup  # noqa: F401, I001

# Custom Keras objects (layers, losses, metrics, learning-rate schedules) register on import,
# so that any saved zoo model loads after `import zoo`, in Keras' safe mode.
import zoo.layers  # noqa: F401
import zoo.losses  # noqa: F401
import zoo.metrics  # noqa: F401
import zoo.schedules  # noqa: F401
from zoo import heads
from zoo.backbones import backbone
from zoo.errors import ZooError

# Imported here, not lazily: a function named like its submodule must be bound after the
# submodule is, or `import zoo.export` would replace the function with the module.
from zoo.export import export
from zoo.predict import predict
from zoo.recipes import list_recipes, load_recipe
from zoo.registry import get, info, list_models, register
from zoo.verification import embed, identify, verify

__all__ = [
    "ZooError",
    "backbone",
    "embed",
    "evaluate",
    "export",
    "get",
    "heads",
    "identify",
    "info",
    "list_models",
    "list_recipes",
    "load_recipe",
    "predict",
    "register",
    "train",
    "verify",
]
__version__ = "0.1.0"


def train(recipe, *, output=None, resume=False, callbacks=(), log=print):
    """Trains a recipe (a name, a path or a `Recipe`); see `zoo.training.train`."""
    from zoo.training import train as _train

    return _train(recipe, output=output, resume=resume, callbacks=callbacks, log=log)


def evaluate(run_dir):
    """Re-evaluates a finished run; see `zoo.training.evaluate_run`."""
    from zoo.training import evaluate_run

    return evaluate_run(run_dir)
