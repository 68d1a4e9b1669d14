"""TensorFlow's start-up lines kept off the user's terminal.

TensorFlow's C++ runtime prints CUDA probes and CPU-feature notes on stderr while it loads and
when it first looks for GPUs, before its own log level (TF_CPP_MIN_LOG_LEVEL) applies. zoo does
both with stderr (file descriptor 2) pointed at a temporary file, and shows what was written
only if they fail. ZOO_VERBOSE_STARTUP=1 leaves stderr alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


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


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and Keras (whose default backend is TensorFlow) without their start-up
    lines on stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import keras  # noqa: F401
        import tensorflow

        # The first look for GPUs (else at the first op: a cuInit failure on a CPU machine).
        tensorflow.config.list_physical_devices("GPU")


import_tensorflow_quietly()
