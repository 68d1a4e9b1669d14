"""Device policy: seeds, precision, XLA and the tf.distribute strategy, decided once per run."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from zoo.errors import ZooError
from zoo.recipes.schema import RuntimeConfig


@dataclass(frozen=True)
class Policy:
    strategy: tf.distribute.Strategy
    precision: str
    jit_compile: bool | str
    gpus: int

    def describe(self) -> str:
        device = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        return (
            f"Keras on {keras.backend.backend()}, "
            f"{device}, precision {self.precision}, XLA {self.jit_compile}, "
            f"strategy {type(self.strategy).__name__} ({self.strategy.num_replicas_in_sync} "
            "replica(s))"
        )


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and Keras (and so TensorFlow) from the recipe's one seed."""
    keras.utils.set_random_seed(seed)


def _strategy(name: str, gpus: int) -> tf.distribute.Strategy:
    if name == "mirrored" or (name == "auto" and gpus > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def policy(cfg: RuntimeConfig) -> Policy:
    """On a GPU: mixed float16 and XLA; on CPU: float32 and no XLA (XLA made CPU convolution
    training about 10x slower). Several GPUs: MirroredStrategy. The recipe can override each."""
    backend = keras.backend.backend()
    gpus = _gpus(backend)
    precision = (
        cfg.precision if cfg.precision != "auto" else ("mixed_float16" if gpus else "float32")
    )
    if backend == "tensorflow":
        jit = cfg.jit_compile if cfg.jit_compile != "auto" else bool(gpus)
        return Policy(_strategy(cfg.strategy, gpus), precision, jit, gpus)
    if cfg.strategy == "mirrored":
        raise ZooError(
            f"runtime.strategy {cfg.strategy!r} is TensorFlow's, and this run's Keras backend is "
            f"{backend} (KERAS_BACKEND): leave runtime.strategy at 'auto', or train on tensorflow"
        )
    # JAX runs compiled or op by op (tens of times slower): compiled, unless the recipe says.
    jit = cfg.jit_compile if cfg.jit_compile != "auto" else backend == "jax"
    return Policy(tf.distribute.get_strategy(), precision, jit, gpus)


def _gpus(backend: str) -> int:
    from zoo._startup import quiet_stderr

    if backend == "jax":
        import jax

        return sum(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    with quiet_stderr():  # the CUDA probe's lines on a machine without a GPU
        return len(tf.config.list_physical_devices("GPU"))
