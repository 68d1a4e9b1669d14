"""TensorFlow's start-up: its lines kept off the user's terminal, its oneDNN kernels on.

TensorFlow's C++ runtime prints CUDA probes and CPU-feature notes on stderr while it loads and
when it first looks for GPUs, before its own log level (TF_CPP_MIN_LOG_LEVEL) applies. zoo does
both with stderr (file descriptor 2) pointed at a temporary file, and shows what was written
only if they fail. ZOO_VERBOSE_STARTUP=1 leaves stderr alone.

On Linux x86, TensorFlow turns on its oneDNN kernels (TF_ENABLE_ONEDNN_OPTS) by default only
where the CPU has AVX-512 VNNI/BF16, AVX-VNNI or AMX; elsewhere (AVX2 CPUs: AMD EPYC before
Zen 4, older Intel) it trains convolutions with its Eigen kernels. On a 2-core Xeon with its
oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2), resnet18 at 64x64 trained at 23 images/s with
Eigen and 67 with oneDNN (timm: 65), so zoo asks for oneDNN on x86 unless the environment
already says (TF_ENABLE_ONEDNN_OPTS=0 turns it off). It must be set before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile

# The user's own setting (None: unset), for processes that must run as TensorFlow's default.
USER_ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")


def prefer_onednn(machine: str | None = None) -> None:
    """TF_ENABLE_ONEDNN_OPTS=1 on x86 CPUs, unless already set (see the module's notes)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "x86"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextlib.contextmanager
def quiet_stderr():
    """Sends file descriptor 2 to a temporary file for the block; replays it on an error."""
    if os.environ.get("ZOO_VERBOSE_STARTUP"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet_tensorflow_logger():
    """Raises TensorFlow's Python logger to ERROR for the block: its warnings of tf.function
    retracing, which Keras models loaded and predicted one after another in a process (as
    exports are) bring, though each is traced as it should be."""
    import logging

    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def say_onednn_int32_note() -> None:
    """TensorFlow with oneDNN writes "oneDNN supports DT_INT32 only on platforms with AVX-512.
    Falling back to the default Eigen-based implementation if present." (an E-level line,
    on CPUs with AVX-512 too) once per process, the first time it transposes an int32
    tensor: the gradient of nearest-neighbour upsampling (the decoders over backbones) does
    in the first training step. A 1x1 int32 transpose here has it said to a captured stderr.
    Call it after the runtime is set up: an op run before then fixes TensorFlow's devices
    and collective settings."""
    import tensorflow as tf

    with quiet_stderr():
        tf.transpose(tf.zeros((1, 1), tf.int32))


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and Keras (whose default backend is TensorFlow) without their start-up
    lines on stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefer_onednn()
    with quiet_stderr():
        import keras  # noqa: F401
        import tensorflow

        # The first look for GPUs (else at the first op: a cuInit failure on a CPU machine).
        tensorflow.config.list_physical_devices("GPU")


import_tensorflow_quietly()
