"""Metrics Keras lacks; registered so saved models load in safe mode."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class Dice(keras.metrics.IoU):
    """Dice coefficient (F1) of segmentation masks, averaged over `target_class_ids`.

    Keras' IoU with another result: from the same confusion matrix over every pixel seen,
    Dice = 2 TP / (2 TP + FP + FN) for each target class, then their mean. Takes class-id
    masks and per-pixel probabilities (`sparse_y_pred=False`), as Keras' MeanIoU does.

    Example:

    ```python
    dice = Dice(num_classes=2, target_class_ids=[1], sparse_y_pred=False)
    ```
    """

    def __init__(self, num_classes, target_class_ids, name="dice", **kwargs):
        super().__init__(num_classes, target_class_ids, name=name, **kwargs)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        true_positives = ops.diagonal(cm)
        predicted = ops.sum(cm, axis=0)
        actual = ops.sum(cm, axis=1)
        denominator = predicted + actual
        ids = list(self.target_class_ids)
        tp = ops.take(true_positives, ids)
        denominator = ops.take(denominator, ids)
        present = ops.cast(ops.greater(denominator, 0), "float32")
        dice = ops.divide_no_nan(2 * tp, denominator)
        return ops.divide_no_nan(ops.sum(dice * present), ops.sum(present))
