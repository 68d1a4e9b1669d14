"""Predictions on image files (or texts) with any saved form of a model: a run directory, a
.keras file, a SavedModel directory, a .tflite or an .onnx file. What a prediction is (top-k
classes, a mask written as a PNG) is the task's: the run's recipe says which task, else the
model's input (strings) or output's rank."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from zoo import rundir, tasks
from zoo.errors import ZooError, check_counts


def _kind(path: Path) -> str:
    if path.is_dir():
        if (path / rundir.MODEL).is_file():
            return "run"
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
    elif path.is_file() and path.suffix in (".keras", ".tflite", ".onnx"):
        return path.suffix[1:]
    raise ZooError(
        f"cannot predict with {str(path)!r}: give a run directory, a .keras file, a SavedModel "
        "directory, a .tflite or an .onnx file"
    )


def _labels(path: Path, kind: str) -> list[str] | None:
    if kind == "run":
        classes = rundir.read_json(path / rundir.METRICS).get("classes")
        if classes:
            return list(classes)
    for folder in (path, path.parent) if path.is_dir() else (path.parent,):
        if (folder / "labels.txt").is_file():
            return (folder / "labels.txt").read_text().split("\n")[:-1]
    return None


def _recipe(path: Path, kind: str):
    """The recipe of the run that `path` belongs to (a run, its model, its exports), or None."""
    from zoo.recipes import load_recipe

    folders = (path,) if kind == "run" else (path.parent, path.parent.parent)
    for folder in folders:
        if (folder / rundir.RECIPE).is_file():
            return load_recipe(folder / rundir.RECIPE)
    return None


def _vectorizer(path: Path):
    """The vectorizer.json a text model's token-id export has beside it, or None."""
    found = path.parent / "vectorizer.json"
    return found if found.is_file() else None


# Models loaded by `load`, so that a program that predicts, embeds or verifies image after
# image loads (and traces) each model once, not at every call. Keyed by the model's files as
# they are on disk (path, inode, size, modification time): a model written again (a resumed
# run's) is loaded again. The last few stay loaded.
_LOADED: OrderedDict = OrderedDict()
_KEEP = 4


def _files(path: Path, kind: str) -> list[Path]:
    """The files a model of this kind is read from."""
    if kind == "run":
        return [path / rundir.MODEL]
    if kind == "savedmodel":
        return [path / "saved_model.pb", *sorted((path / "variables").glob("*"))]
    vectorizer = _vectorizer(path) if kind in ("tflite", "onnx") else None
    # A text model's token-id export reads its vectorizer.json too.
    return [path] if vectorizer is None else [path, vectorizer]


def load(path) -> tuple:
    """(predict function on float32 batches, input shape (H, W, C), class names or None,
    the recipe of its run or None). A text model's shape is None: its function takes strings
    (a token-id export's vectorizes them first, as its vectorizer.json says). The model is
    loaded once while its files stay as they are (see `_LOADED`)."""
    path = Path(path)
    kind = _kind(path)
    recipe = _recipe(path, kind)
    # The files follow from the path and the kind: their state on disk is all the key adds.
    stamp = tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in map(Path.stat, _files(path, kind)))
    key = (str(path.resolve()), kind, stamp)
    if key in _LOADED:
        _LOADED.move_to_end(key)
    else:
        _LOADED[key] = _predictor(path, kind)
        while len(_LOADED) > _KEEP:
            _LOADED.popitem(last=False)
    fn, shape = _LOADED[key]
    return fn, shape, _labels(path, kind), recipe


def _predictor(path: Path, kind: str) -> tuple:
    """(predict function, input shape) of `load`, the model read from its files."""
    from zoo.export import runner

    if kind in ("run", "keras"):
        model = rundir.load(path, what="predict")[0]
        shape = None if model.input.dtype == "string" else tuple(model.input.shape[1:])
        return (lambda x: model.predict(x, verbose=0)), shape
    fn = runner(path, kind)
    if kind in ("tflite", "onnx") and _vectorizer(path) is not None:
        from zoo.tasks.text import load_vectorizer

        vectorize = load_vectorizer(_vectorizer(path))
        return (lambda texts: fn(vectorize(texts))), None
    if kind == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_input_details()[0]
        shape = tuple(details["shape_signature"][1:])
    elif kind == "onnx":
        import onnxruntime

        shape = tuple(onnxruntime.InferenceSession(str(path)).get_inputs()[0].shape[1:])
    else:
        import tensorflow as tf

        spec = tf.saved_model.load(str(path)).signatures["serving_default"]
        (tensor,) = spec.structured_input_signature[1].values()
        if tensor.dtype == tf.string:
            return fn, None
        shape = tuple(tensor.shape[1:])
    # Unknown sizes (None, -1 or a symbolic name): the model resizes inside, so images go in
    # at their own size.
    shape = tuple(int(d) if isinstance(d, int | np.integer) and d > 0 else None for d in shape)
    return fn, shape


def read_image(path, shape) -> np.ndarray:
    """An image file as float32 pixels in [0, 255], resized to the model's input size where
    that size is fixed."""
    from PIL import Image, UnidentifiedImageError

    from zoo.data.common import pil_image

    height, width, channels = shape
    try:
        with Image.open(path) as image:
            image = pil_image(image, channels)
            if height and width and image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.float32)
    except (OSError, UnidentifiedImageError) as e:
        raise ZooError(f"cannot read image {str(path)!r}: {e}") from e
    return array[..., None] if channels == 1 else array


def predict(model, inputs, top_k: int = 5, output=None) -> list[dict]:
    """Predictions for each image file (or, for a text model, each text), as the model's task
    gives them: the top-k classes with names and scores, or (segmentation) the mask and an
    overlay written as PNGs into `output` (default "predictions") with the fraction of pixels
    of each class.

    Example:

    ```python
    zoo.predict("runs/digits/export/model_int8.tflite", ["seven.png"], top_k=3)
    zoo.predict("runs/sms", ["free entry to win a prize", "see you at 6"])
    ```
    """
    check_counts(top_k=top_k)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    elif not isinstance(inputs, list | tuple | np.ndarray):
        raise ZooError(
            "inputs must be a file path, a text, or a list of them, received "
            f"{type(inputs).__name__}"
        )
    inputs = list(inputs)
    if not inputs:
        raise ZooError("nothing to predict: give at least one input")
    fn, shape, labels, recipe = load(model)
    if recipe is not None:
        task = tasks.get(recipe.task)
    elif shape is None:
        task = tasks.for_input("texts")
    else:
        task = None
    if shape is None:  # strings in
        outputs = list(np.asarray(fn(np.asarray(inputs, dtype=object))))
        return task.present(inputs, outputs, labels, top_k=top_k, output=output, recipe=recipe)
    pixels = [read_image(p, shape) for p in inputs]
    if None in shape[:2]:  # images of different sizes: one at a time
        outputs = [np.asarray(fn(p[None]))[0] for p in pixels]
    else:
        outputs = list(np.asarray(fn(np.stack(pixels))))
    task = task or tasks.for_output_rank(outputs[0].ndim + 1)
    if task is None:
        raise ZooError(f"cannot tell the task of {model} from its outputs; predict with its run")
    return task.present(
        inputs, outputs, labels, top_k=top_k, output=output, recipe=recipe, pixels=pixels
    )


def describe(result: dict) -> list[str]:
    """The lines `zoo predict` prints for one result."""
    return tasks.get(result["task"]).describe(result)
