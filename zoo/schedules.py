"""Learning-rate schedules of a recipe, with step counts derived from the dataset size."""

from __future__ import annotations

import keras
from keras import ops

from zoo.recipes.schema import CompileConfig


@keras.saving.register_keras_serializable(package="zoo")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `after(0)` over `warmup_steps`, then `after(step - warmup_steps)`."""

    def __init__(self, after, warmup_steps: int):
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return self.after(step)
        warm = ops.cast(self.after(0), "float32") * (step + 1) / self.warmup_steps
        later = self.after(ops.maximum(step - self.warmup_steps, 0))
        return ops.where(step < self.warmup_steps, warm, later)

    def get_config(self):
        return {
            "after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["after"]), config["warmup_steps"])


@keras.saving.register_keras_serializable(package="zoo")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step):
        return ops.cast(self.value, "float32")

    def get_config(self):
        return {"value": self.value}


def learning_rate(cfg: CompileConfig, steps_per_epoch: int, epochs: int):
    """The schedule object for the optimizer; every boundary is given in epochs in the recipe."""
    s, lr = cfg.schedule, cfg.optimizer.learning_rate
    warmup = round(s.warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch - warmup)
    schedules = keras.optimizers.schedules
    if s.name == "constant":
        after = Constant(lr)
    elif s.name == "cosine":
        after = schedules.CosineDecay(lr, decay_steps=total, alpha=s.alpha)
    elif s.name == "step":
        epochs_at = s.boundaries or [f * epochs for f in s.fractions]
        # PiecewiseConstantDecay changes value after a boundary step: the step before the epoch.
        boundaries = [max(0, round(b * steps_per_epoch) - warmup - 1) for b in epochs_at]
        values = [lr * s.factor**i for i in range(len(boundaries) + 1)]
        after = schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        after = schedules.ExponentialDecay(
            lr,
            decay_steps=max(1, round(s.decay_epochs * steps_per_epoch)),
            decay_rate=s.decay_rate,
        )
    return Warmup(after, warmup) if warmup else after


@keras.saving.register_keras_serializable(package="zoo")
class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One schedule per training phase: `schedules[phase]`, where `phase` is a Keras variable
    the training loop sets (zoo.training: phases that train the same variables share one
    compiled train step, which reads the phase from it). Each schedule is evaluated at the
    optimizer's step; the phase picks one, so a phase's rates are exactly its schedule's."""

    def __init__(self, schedules: list, phase=None):
        self.schedules = list(schedules)
        self.phase = (
            phase if phase is not None else keras.Variable(0, dtype="int32", trainable=False)
        )

    def __call__(self, step):
        return by_phase(self.phase, [ops.cast(s(step), "float32") for s in self.schedules])

    def get_config(self):
        return {"schedules": [keras.saving.serialize_keras_object(s) for s in self.schedules]}

    @classmethod
    def from_config(cls, config):
        return cls([keras.saving.deserialize_keras_object(s) for s in config["schedules"]])


def by_phase(phase, values: list):
    """`values[phase]` for a Keras variable `phase`, in a compiled step: each of `values` is
    computed and the phase picks one, exactly (where it picks, the others get no gradient)."""
    out = values[-1]
    for k in range(len(values) - 2, -1, -1):
        out = ops.where(ops.equal(phase, k), values[k], out)
    return out
