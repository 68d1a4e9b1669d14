"""Losses Keras lacks in the form zoo needs; registered so saved models load in safe mode."""

from __future__ import annotations

import keras
from keras import ops

from zoo.schedules import by_phase

TERMS = ("ce", "dice", "focal", "lovasz")


@keras.saving.register_keras_serializable(package="zoo")
class SegmentationLoss(keras.losses.Loss):
    """A sum of per-pixel losses on class-id masks against per-pixel class probabilities.

    Terms: "ce" (cross-entropy, weighted per class by `class_weights`), "dice" (Keras' soft
    Dice loss, `keras.losses.dice`, per image and class over the pixels, averaged over the
    classes) and "focal" (Keras' categorical focal cross-entropy, Lin et al. 2017). Each term is
    averaged over the pixels of an image, so the loss of an image is their sum. "lovasz" is the
    Lovász-softmax loss (Berman et al. 2018), a convex surrogate of 1 − IoU: per image, for each
    class present in it, the pixels' errors |1[class] − p| sorted in decreasing order weighted by
    the steps of the Lovász extension of the Jaccard loss, averaged over the present classes. On
    one-hot predictions it equals 1 − the image's mean IoU over its classes.

    Args:
        classes: number of classes (the last axis of the predictions).
        terms: the terms to add, e.g. ("ce", "dice").
        class_weights: a weight per class for the cross-entropy terms (None: all 1).
        focal_gamma: the focusing parameter of the focal term.

    Example:

    ```python
    loss = SegmentationLoss(2, terms=("ce", "dice"))
    loss(masks, probabilities)  # masks (B, H, W, 1) class ids, probabilities (B, H, W, 2)
    ```
    """

    def __init__(
        self,
        classes: int,
        terms=("ce",),
        class_weights=None,
        focal_gamma: float = 2.0,
        name: str = "segmentation_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        unknown = [t for t in terms if t not in TERMS]
        if unknown or not terms:
            raise ValueError(f"loss terms must be among {', '.join(TERMS)}, received {terms}")
        if class_weights is not None and len(class_weights) != classes:
            raise ValueError(f"class_weights has {len(class_weights)} values for {classes} classes")
        self.classes = int(classes)
        self.terms = tuple(terms)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.focal_gamma = float(focal_gamma)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        ids = ops.cast(y_true, "int32")
        if len(ids.shape) == len(y_pred.shape):
            ids = ops.squeeze(ids, axis=-1)
        one_hot = ops.one_hot(ids, self.classes, dtype="float32")
        weights = (
            ops.take(ops.convert_to_tensor(self.class_weights, "float32"), ids)
            if self.class_weights is not None
            else None
        )
        total = 0.0
        pixels = (1, 2)
        if "ce" in self.terms:
            ce = keras.losses.categorical_crossentropy(one_hot, y_pred)
            total += ops.mean(ce * weights if weights is not None else ce, axis=pixels)
        if "focal" in self.terms:
            focal = keras.losses.categorical_focal_crossentropy(
                one_hot, y_pred, gamma=self.focal_gamma
            )
            total += ops.mean(focal * weights if weights is not None else focal, axis=pixels)
        if "dice" in self.terms:
            total += ops.mean(keras.losses.dice(one_hot, y_pred, axis=pixels), axis=-1)
        if "lovasz" in self.terms:
            total += lovasz_softmax(one_hot, y_pred)
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "classes": self.classes,
            "terms": list(self.terms),
            "class_weights": self.class_weights,
            "focal_gamma": self.focal_gamma,
        }


def lovasz_softmax(one_hot, probabilities):
    """The Lovász-softmax loss (Berman et al. 2018) of each image: `one_hot` and `probabilities`
    are (B, H, W, C); returns (B,), the mean over the classes present in each image of the
    Lovász extension of the Jaccard loss evaluated at the pixels' errors."""
    one_hot = ops.cast(one_hot, "float32")
    probabilities = ops.cast(probabilities, "float32")
    rows = (ops.shape(probabilities)[0], -1, probabilities.shape[-1])
    # (B, C, pixels): one row of errors per image and class.
    truth = ops.transpose(ops.reshape(one_hot, rows), (0, 2, 1))
    p = ops.transpose(ops.reshape(probabilities, rows), (0, 2, 1))
    errors = ops.abs(truth - p)
    order = ops.argsort(-errors, axis=-1)
    errors = ops.take_along_axis(errors, order, axis=-1)
    truth = ops.take_along_axis(truth, order, axis=-1)
    # The Jaccard loss of predicting the first k sorted pixels wrong, for every k; its steps
    # are the gradient of the Lovász extension (they depend on the truth only).
    positives = ops.sum(truth, axis=-1, keepdims=True)
    intersection = positives - ops.cumsum(truth, axis=-1)
    union = positives + ops.cumsum(1.0 - truth, axis=-1)
    jaccard = 1.0 - intersection / union
    steps = ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)
    per_class = ops.sum(errors * ops.stop_gradient(steps), axis=-1)  # (B, C)
    present = ops.cast(positives[..., 0] > 0, "float32")
    return ops.sum(per_class * present, axis=-1) / ops.maximum(ops.sum(present, axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="zoo")
class MarginLoss(keras.losses.Loss):
    """Softmax cross-entropy over scaled cosine logits with an additive angular and cosine
    margin on the true class: insightface's combined margin, s·(cos(m1·θ + m2) − m3).

    ArcFace (Deng et al. 2019) is (1, m, 0), CosFace (Wang et al. 2018) (1, 0, m), the
    normalised softmax without margin (1, 0, 0). Where m1·θ + m2 passes π, cos would rise
    again; the true-class logit is then cos θ − m2·sin(m2) − m3, as ArcFace's reference code
    does. Targets are integer class ids; predictions the cosines of `zoo.layers.CosineLogits`,
    (batch, classes), or an ensemble's (batch, members, classes), whose loss is the mean of the
    members' losses.

    Args:
        scale: s, the inverse temperature of the softmax.
        m1: multiplicative angular margin (SphereFace; 1 for none).
        m2: additive angular margin in radians (ArcFace).
        m3: additive cosine margin (CosFace).

    Example:

    ```python
    loss = MarginLoss(scale=5.0, m2=0.5)  # ArcFace
    loss(labels, cosines)  # labels (B,), cosines (B, classes)
    ```
    """

    def __init__(
        self,
        scale: float,
        m1: float = 1.0,
        m2: float = 0.0,
        m3: float = 0.0,
        name: str = "margin_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if scale <= 0 or m1 < 1 or m2 < 0 or m3 < 0:
            raise ValueError(
                f"margin loss needs scale > 0, m1 >= 1, m2 >= 0, m3 >= 0; received "
                f"scale={scale}, m1={m1}, m2={m2}, m3={m3}"
            )
        self.scale, self.m1, self.m2, self.m3 = float(scale), float(m1), float(m2), float(m3)

    def logits(self, y_true, y_pred):
        """The scaled logits with the margin on each row's true class."""
        import math

        cos = ops.clip(ops.cast(y_pred, "float32"), -1.0 + 1e-6, 1.0 - 1e-6)
        ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        if self.m1 == 1.0 and self.m2 == 0.0:
            target = cos - self.m3
        else:
            angle = self.m1 * ops.arccos(cos) + self.m2
            target = ops.where(
                angle <= math.pi,
                ops.cos(angle) - self.m3,
                cos - self.m2 * math.sin(self.m2) - self.m3,
            )
        one_hot = ops.one_hot(ids, ops.shape(cos)[-1], dtype="float32")
        return self.scale * (one_hot * target + (1.0 - one_hot) * cos)

    def call(self, y_true, y_pred):
        ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        members = y_pred.shape[1] if len(y_pred.shape) == 3 else None
        if members:  # (B, members, classes): one row per member, each with its image's label
            ids = ops.reshape(ops.repeat(ids[:, None], members, axis=1), (-1,))
            y_pred = ops.reshape(y_pred, (-1, y_pred.shape[-1]))
        loss = keras.losses.sparse_categorical_crossentropy(
            ids, self.logits(ids, y_pred), from_logits=True
        )
        return loss if members is None else ops.mean(ops.reshape(loss, (-1, members)), axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "m1": self.m1,
            "m2": self.m2,
            "m3": self.m3,
        }


@keras.saving.register_keras_serializable(package="zoo")
class PhaseLoss(keras.losses.Loss):
    """One loss per training phase: `losses[phase]`, where `phase` is a Keras variable the
    training loop sets (see zoo.schedules.PhaseSchedule). Each loss gives its per-example
    values; the phase picks one, so a phase trains on exactly its loss (the others' gradients
    are zeros)."""

    def __init__(self, losses: list, phase=None, name: str = "phase_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.losses = list(losses)
        self.phase = (
            phase if phase is not None else keras.Variable(0, dtype="int32", trainable=False)
        )

    def call(self, y_true, y_pred):
        # Each loss's values before its reduction: this loss reduces them once.
        return by_phase(self.phase, [loss.call(y_true, y_pred) for loss in self.losses])

    def get_config(self):
        return {
            **super().get_config(),
            "losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        losses = [keras.saving.deserialize_keras_object(c) for c in config.pop("losses")]
        return cls(losses, **config)
