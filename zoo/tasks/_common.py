"""What the tasks share: the recipe's backbone (with its weights) and registered models."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from zoo import backbones, registry
from zoo.errors import ZooError


def finish(model, data, recipe) -> bool:
    """Nothing to set once training ends (the tasks' default): the model is saved as
    trained."""
    return False


def summary(run) -> list[str]:
    """Nothing for zoo-train to add after a run's metrics (the tasks' default)."""
    return []


def image_input(recipe, data=None):
    """(the model's input, its preprocessing layers, the net's input shape) for image tasks:
    [0, 255] pixels at data.image_size, scaled as data.normalization says. Trained on crops,
    the net takes any size and the model the size of whole images."""
    from zoo.data import preprocessing

    height, width = recipe.data.image_size
    shape = (height, width, recipe.data.channels)
    net_shape = (None, None, recipe.data.channels) if recipe.data.crop_size else shape
    return keras.Input(shape=shape, name="image"), preprocessing(recipe.data), net_shape


def image_serving(model, format: str, input_dtype: str = "float32", any_size: bool = False):
    """(the model to convert, a function from eval images to its inputs, no extra files):
    the trained model behind the input users have, uint8 pixels as decoded, and with
    `any_size` images of any size, resized to the trained size inside the model: bilinear
    without the antialiasing the data pipeline and `zoo predict` use when shrinking
    (TensorFlow's antialiased resize is an op ONNX lacks), so images much larger than the
    trained size give slightly other pixels than training saw."""

    def feed(images):
        return images.astype(input_dtype)

    if input_dtype == "float32" and not any_size:
        return model, feed, {}
    height, width, channels = model.input.shape[1:]
    shape = (None, None, channels) if any_size else (height, width, channels)
    inputs = keras.Input(shape=shape, dtype=input_dtype, name="image")
    x = keras.ops.cast(inputs, "float32") if input_dtype != "float32" else inputs
    if any_size:
        x = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize")(x)
    return keras.Model(inputs, model(x), name=model.name), feed, {}


def model_args(recipe) -> dict:
    """`model.args` for the builder; `classifier_activation` is the model's, set by training."""
    return {k: v for k, v in recipe.model.args.items() if k != "classifier_activation"}


def registered(recipe, shape, classes: int, activation, args: dict) -> keras.Model:
    """The registered `model.name`, built for the data's class count."""
    if args.setdefault("classes", classes) != classes:
        raise ZooError(
            f"recipe {recipe.name}: model.args.classes is {args['classes']} but the "
            f"data has {classes} classes; remove model.args.classes"
        )
    return registry.get(
        recipe.model.name, input_shape=shape, classifier_activation=activation, **args
    )


def features(recipe, shape, args: dict, preprocessing: list) -> keras.Model:
    """`model.backbone` with `model.backbone_weights` ("none", "imagenet", a file or a run)."""
    weights = recipe.model.backbone_weights
    if weights not in ("none", "imagenet") and backbones.is_saved_model(weights):
        weights = backbones.load_source(weights)
        _check_preprocessing(recipe, weights, preprocessing)
    return backbones.backbone(recipe.model.backbone, input_shape=shape, weights=weights, **args)


def _describe(layers) -> list[tuple]:
    """(name, scale, offset) of Rescaling layers, comparable across models."""

    def values(v):
        return tuple(np.round(np.ravel(np.asarray(v, dtype="float64")), 6).tolist())

    return [(layer.name, values(layer.scale), values(layer.offset)) for layer in layers]


def _check_preprocessing(recipe, source: keras.Model, preprocessing: list) -> None:
    """Backbone weights from a zoo run must see inputs preprocessed as in that run."""
    theirs = [
        layer
        for layer in source.layers
        if isinstance(layer, keras.layers.Rescaling) and layer.name in ("rescale", "standardize")
    ]
    if _describe(theirs) != _describe(preprocessing):
        names = [layer.name for layer in theirs] or ["none"]
        raise ZooError(
            f"recipe {recipe.name}: model.backbone_weights {recipe.model.backbone_weights} was "
            f"trained on inputs preprocessed by {', '.join(names)} "
            f"{_describe(theirs)[0][1:] if theirs else ''}, this recipe's data.normalization "
            f"{recipe.data.normalization!r} differs: set data.normalization, data.mean and "
            "data.std as in the recipe.toml of that run"
        )


def differences(reference: np.ndarray, exported: np.ndarray) -> dict:
    """What every parity report starts with: the example count and the largest absolute and
    relative difference of the exported outputs from Keras'."""
    diff = np.abs(reference - exported)
    return {
        "examples": int(len(reference)),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / np.maximum(np.abs(reference), 1e-6)).max()),
    }


def parity_rows(report: dict, agreement: str, agreement_label: str, metric: str, metric_label):
    """`zoo export`'s rows: the agreement against its tolerance, then the eval `metric` of the
    export beside Keras' where the report has it (`export_<metric>`, `keras_<metric>`)."""
    rows = [(agreement_label, f"{report[agreement]:.4f} (tolerance {report['tolerance']})")]
    if f"keras_{metric}" in report:
        exported, keras = report[f"export_{metric}"], report[f"keras_{metric}"]
        rows.append((metric_label, f"{exported:.4f} exported, {keras:.4f} Keras"))
    return rows


def losses(recipe) -> list[tuple[str, str | None]]:
    """(key, loss name) of compile.loss and of each phase that sets its own."""
    return [("compile.loss", recipe.compile.loss)] + [
        (f"phases[{k}].loss", p.loss) for k, p in enumerate(recipe.phases) if p.loss is not None
    ]


def refuse_other_tasks_keys(recipe) -> None:
    """Recipe keys only another task reads: data.eval_identities (faces), data.crop_size
    (segmentation)."""
    if recipe.data.crop_size is not None and recipe.task != "segmentation":
        raise ValueError(
            "data.crop_size is for task 'segmentation' (training on crops of whole images); "
            'for other tasks crop with an [[augment]] layer = "RandomCrop"'
        )
    if recipe.data.eval_identities is not None and recipe.task != "faces":
        raise ValueError(
            f"data.eval_identities is for task 'faces' (identities held out of training); "
            f"the {recipe.task} task splits by data.eval_split or data.validation_split"
        )


def head_config(recipe, cls):
    """`model.head` validated into the task's own head table `cls`."""
    import pydantic

    try:
        return cls.model_validate(recipe.model.head or {})
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(
            f"model.head.{where}: {first['msg']} (the {recipe.task} head takes "
            f"{', '.join(cls.model_fields)})"
        ) from None


def predictions(model, dataset):
    """(inputs, targets, `model.predict_on_batch` of the inputs) of each batch of a tf.data
    `dataset` of (inputs, targets), on any Keras backend (JAX and PyTorch take arrays, not
    TensorFlow tensors). A batch smaller than the first (the last one) is padded to its size
    with copies of its last row, whose predictions are dropped: Keras traces its predict step
    anew for each batch shape (for the five-net faces model, about 4 s a trace)."""
    import tensorflow as tf

    size = None
    for x, y in dataset:
        n = int(x.shape[0])
        size = size or n
        batch = tf.concat([x, tf.repeat(x[-1:], size - n, axis=0)], 0) if n < size else x
        if keras.backend.backend() != "tensorflow":
            batch = batch.numpy()
        yield x, y, keras.ops.convert_to_numpy(model.predict_on_batch(batch))[:n]


def classify(model, data, run, keep_inputs: bool = False):
    """What classifiers of images and texts report on the eval split: Keras' loss and metrics,
    the class report (per-class and macro precision, recall, F1; ROC AUC of two classes) and
    the confusion matrix (in metrics.json, and as confusion.png in `run`). Returns (metrics,
    the eval inputs as strings where `keep_inputs`, the labels, the probabilities)."""
    from zoo import evaluation, rundir

    results = model.evaluate(data.eval, verbose=0, return_dict=True)
    metrics = {k: float(v) for k, v in results.items()}
    inputs, labels, probabilities = [], [], []
    for x, y, p in predictions(model, data.eval):
        probabilities.append(p)
        y = y.numpy()
        labels.append(y.argmax(axis=1) if y.ndim == 2 else y)
        if keep_inputs:
            inputs += [v.decode("utf-8", errors="replace") for v in x.numpy()]
    labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)
    report, matrix = evaluation.class_report(labels, probabilities, data.class_names)
    report.pop("accuracy")  # Keras' accuracy is the one reported
    metrics.update(report)
    metrics["confusion_matrix"] = matrix.tolist()
    if run is not None:
        evaluation.plot_confusion(matrix, data.class_names, Path(run) / rundir.CONFUSION)
    return metrics, inputs, labels, probabilities
