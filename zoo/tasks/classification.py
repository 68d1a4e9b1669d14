"""Image classification: one class per image.

Targets are integer `labels` (one-hot where label smoothing or a mixing augmentation needs them);
the head pools the backbone's coarsest feature map into a softmax classifier; the loss is
cross-entropy and the metrics accuracy (and top-5); an export agrees with Keras when the top-1
classes match; `zoo predict` gives the top-k classes.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from zoo.tasks import _common

INPUT = "images"
TARGET = "labels"
MONITOR = "val_accuracy"
VALIDATE = True  # fit reports the eval split each epoch
ACTIVATION = "softmax"
OUTPUT_RANK = 2
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")
METRICS = ("accuracy", "top5_accuracy")
# Keras preprocessing layers that mix pairs of examples, and so need one-hot labels.
MIXING_LAYERS = ("CutMix", "MixUp")
AGREEMENT = "top1_agreement"
PARITY_EXAMPLES = None  # the whole eval split
# Minimum top-1 agreement of an export with the Keras model, by quantization.
TOLERANCE = {"none": 0.99, "dynamic": 0.98, "float16": 0.99, "int8": 0.98}


class Head(BaseModel):
    """The classification head over `model.backbone` (see zoo.heads.classification)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    pooling: Literal["avg", "max"] = "avg"
    hidden: list[Annotated[int, Field(gt=0)]] = []
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


def check(recipe) -> None:
    for key, name in _common.losses(recipe):
        if name not in (None, *LOSSES):
            raise ValueError(
                f"{key} {name!r} is not a classification loss; allowed: {', '.join(LOSSES)}"
            )
    for name in recipe.compile.metrics or ():
        if name not in METRICS:
            raise ValueError(
                f"compile.metrics: {name!r} is not a classification metric; "
                f"allowed: {', '.join(METRICS)}"
            )
    if recipe.compile.class_weights is not None:
        raise ValueError("compile.class_weights is for segmentation; leave it out")
    _common.refuse_other_tasks_keys(recipe)
    _common.head_config(recipe, Head)


def one_hot(recipe) -> bool:
    """Label smoothing and mixing augmentations need one-hot labels."""
    return (
        recipe.compile.loss == "categorical_crossentropy"
        or recipe.compile.label_smoothing > 0
        or any(a.layer in MIXING_LAYERS for a in recipe.augment)
    )


model_input = _common.image_input
serving = _common.image_serving
finish = _common.finish
summary = _common.summary


def net(recipe, shape, classes: int, activation, preprocessing):
    """The registered model, or the classification head over the backbone."""
    from zoo import heads

    args = _common.model_args(recipe)
    if recipe.model.backbone is None:
        return _common.registered(recipe, shape, classes, activation, args)
    head = _common.head_config(recipe, Head)
    return heads.classification(
        _common.features(recipe, shape, args, preprocessing),
        classes,
        pooling=head.pooling,
        hidden=tuple(head.hidden),
        dropout=head.dropout,
        activation=activation,
        name=recipe.model.backbone,
    )


def trainer(recipe, model, classes: int):
    """The model `fit` trains: the model itself."""
    return model


def encode(recipe, classes: int):
    """One-hot labels where the recipe needs them (before the mixing augmentations)."""
    if not one_hot(recipe):
        return None
    import tensorflow as tf

    return lambda batch: {**batch, "labels": tf.one_hot(batch["labels"], classes)}


def loss(recipe, classes: int):
    import keras

    if one_hot(recipe):
        return keras.losses.CategoricalCrossentropy(label_smoothing=recipe.compile.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def metrics(recipe, classes: int) -> list:
    import keras

    dense = one_hot(recipe)
    out = []
    for name in recipe.compile.metrics or ["accuracy"]:
        if name == "accuracy":
            cls = (
                keras.metrics.CategoricalAccuracy
                if dense
                else keras.metrics.SparseCategoricalAccuracy
            )
            out.append(cls(name="accuracy"))
        else:
            cls = (
                keras.metrics.TopKCategoricalAccuracy
                if dense
                else keras.metrics.SparseTopKCategoricalAccuracy
            )
            out.append(cls(k=5, name="top5_accuracy"))
    return out


def evaluate(model, data, run, recipe) -> dict:
    """Keras metrics of `model` on `data.eval` (`loss`, `accuracy`, ...), per-class and macro
    precision, recall and F1 (ROC AUC for two classes), and `confusion.png`."""
    return _common.classify(model, data, run)[0]


def _labels(targets):
    if targets is None:
        return None
    return targets.argmax(axis=1) if targets.ndim == 2 else targets


def parity(reference: np.ndarray, exported: np.ndarray, targets, class_names) -> dict:
    report = {
        **_common.differences(reference, exported),
        AGREEMENT: float((reference.argmax(1) == exported.argmax(1)).mean()),
    }
    labels = _labels(targets)
    if labels is not None:
        report["keras_accuracy"] = float((reference.argmax(1) == labels).mean())
        report["export_accuracy"] = float((exported.argmax(1) == labels).mean())
    return report


def describe_parity(report: dict) -> list[tuple[str, str]]:
    """The parity report's rows that `zoo export` prints."""
    return _common.parity_rows(report, AGREEMENT, "top-1 agreement", "accuracy", "accuracy")


def present(images, scores, class_names, *, top_k: int = 5, **_) -> list[dict]:
    """Top-k classes with names and scores for each image file."""
    out = []
    for path, row in zip(images, np.asarray(scores, dtype=np.float64), strict=True):
        best = np.argsort(-row)[:top_k]
        out.append(
            {
                "task": "classification",
                "image": str(path),
                "top": [
                    {
                        "class": int(i),
                        "name": class_names[i] if class_names else str(i),
                        "score": float(row[i]),
                    }
                    for i in best
                ],
            }
        )
    return out


def describe(result: dict) -> list[str]:
    return [result["image"]] + [f"  {e['score']:.4f}  {e['name']}" for e in result["top"]]
