"""Device policy: seeds, precision, XLA and the tf.distribute strategy, decided once per run;
and the processes of a multi-process run (Keras' distribution API on JAX)."""

from __future__ import annotations

import os
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
        text = (
            f"Keras on {keras.backend.backend()}, {device}, precision {self.precision}, "
            f"XLA {self.jit_compile}"
        )
        if _joined is not None:
            import jax

            return (
                f"{text}, data-parallel over {jax.device_count()} device(s) in "
                f"{_joined.processes} processes"
            )
        if keras.backend.backend() != "tensorflow":
            return text
        return (
            f"{text}{onednn_words(onednn())}, strategy {type(self.strategy).__name__} "
            f"({self.strategy.num_replicas_in_sync} replica(s))"
        )


def onednn() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process (None: not TensorFlow's
    to say, or this TensorFlow does not tell). zoo asks for them on x86 (zoo._startup)."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_words(state: bool | None) -> str:
    """ ", oneDNN on" / ", oneDNN off" for a start line or a report; nothing when unknown."""
    return {True: ", oneDNN on", False: ", oneDNN off"}.get(state, "")


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and Keras (and so TensorFlow) from the recipe's one seed."""
    keras.utils.set_random_seed(seed)


def _strategy(name: str, gpus: int) -> tf.distribute.Strategy:
    if name == "mirrored" or (name == "auto" and gpus > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def bfloat16_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX, "amx_bf16" among
    the flags in `cpuinfo`) and TensorFlow's oneDNN kernels, which use it, are on
    (TF_ENABLE_ONEDNN_OPTS)."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("0", "false"):
        return False
    try:
        with open(cpuinfo) as info:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in info)
    except OSError:  # not Linux: no way to tell here, so no
        return False


def policy(cfg: RuntimeConfig) -> Policy:
    """On a GPU: mixed float16 and XLA; on CPU: no XLA (XLA made CPU convolution training about
    10x slower), and float32, or on TensorFlow mixed bfloat16 where the CPU has bfloat16 matrix
    units (see `bfloat16_units`: there the membrane U-Net trained 1.55x faster to the same IoU
    and ResNet-20 on CIFAR 1.47x; tiny nets gain nothing). Several GPUs: MirroredStrategy.
    The recipe can override each."""
    backend = keras.backend.backend()
    gpus = _gpus(backend)
    precision = cfg.precision
    if precision == "auto":
        if gpus:
            precision = "mixed_float16"
        elif backend == "tensorflow" and bfloat16_units():
            precision = "mixed_bfloat16"
        else:
            precision = "float32"
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


def check_backend(cfg: RuntimeConfig) -> None:
    """The recipe's `runtime.backend` must be the one Keras runs in this process."""
    wanted, running = cfg.backend, keras.backend.backend()
    if wanted not in ("auto", running):
        raise ZooError(
            f"the recipe trains on Keras' {wanted} backend (runtime.backend) but this process "
            f"runs Keras on {running}: Keras reads KERAS_BACKEND when it is first imported, so "
            f"set KERAS_BACKEND={wanted} before importing keras (zoo-train does it itself), or "
            "set runtime.backend to 'auto'"
        )


def backend_to_start(cfg: RuntimeConfig) -> str | None:
    """The backend a new process must start Keras on for this recipe (None: this process's
    will do). Refuses a KERAS_BACKEND set to another backend, and a backend not installed."""
    import importlib.util

    wanted, running = cfg.backend, keras.backend.backend()
    if wanted in ("auto", running):
        return None
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen and chosen != wanted:
        raise ZooError(
            f"KERAS_BACKEND={chosen} but the recipe sets runtime.backend = {wanted!r}: unset "
            f"KERAS_BACKEND (or set it to {wanted}), or --set runtime.backend='\"{chosen}\"'"
        )
    # TensorFlow is a dependency; JAX and PyTorch come with the extra of their module's name.
    if importlib.util.find_spec(wanted) is None:
        raise ZooError(
            f"runtime.backend = {wanted!r} needs {wanted}, which is not installed: "
            f"pip install 'keras-zoo[{wanted}]'"
        )
    return wanted


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


# Keras' own names for a multi-process job (keras.distribution.initialize reads them too):
# what `zoo-train --workers` and `--coordinator` set, and what a cluster launcher can.
ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


@dataclass(frozen=True)
class Cluster:
    """The processes of one data-parallel training job: `processes` of them, this one
    `process_id` (0 writes the run directory), joined at `coordinator` (host:port of
    process 0)."""

    coordinator: str | None
    processes: int
    process_id: int

    @property
    def primary(self) -> bool:
        return self.process_id == 0


def cluster() -> Cluster | None:
    """The multi-process job this process belongs to, from the environment; None for a
    single-process run."""
    raw = os.environ.get(PROCESSES)
    if raw in (None, "", "1"):
        return None
    try:
        processes = int(raw)
        process_id = int(os.environ.get(PROCESS_ID, ""))
    except ValueError:
        raise ZooError(
            f"{PROCESSES}={raw!r} and {PROCESS_ID}={os.environ.get(PROCESS_ID)!r} must be whole "
            "numbers: the job's process count and this process's index (0 for the coordinator)"
        ) from None
    if processes < 1 or not 0 <= process_id < processes:
        raise ZooError(
            f"{PROCESS_ID}={process_id} must be from 0 to {PROCESSES}-1 ({processes - 1}), and "
            f"{PROCESSES} at least 1"
        )
    return Cluster(os.environ.get(ADDRESSES) or None, processes, process_id)


_joined: Cluster | None = None
_left = False


def join(job: Cluster) -> None:
    """Joins the job's other processes through JAX's multi-process runtime (before any
    computation: JAX allows it only then). Once per process."""
    global _joined
    backend = keras.backend.backend()
    if backend != "jax":
        raise ZooError(
            f"multi-process training runs on Keras' JAX backend (keras.distribution), and this "
            f"process's backend is {backend}: set KERAS_BACKEND=jax in every process "
            "(zoo-train --workers N sets it)"
        )
    if _joined is not None:
        if _joined == job and not _left:
            return
        raise ZooError(
            "this process already trained in a multi-process job; JAX's runtime joins one job "
            "per process: start each run in new processes"
        )
    if job.coordinator is None:
        raise ZooError(
            f"{PROCESSES}={job.processes} needs the coordinator's address: "
            f"--coordinator HOST:PORT or {ADDRESSES}"
        )
    import jax

    # Collectives between CPU processes (GPU and TPU hosts have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize(job.coordinator, job.processes, job.process_id)
    except Exception as e:  # noqa: BLE001 - JAX raises several kinds; all mean "cannot join"
        reason = " ".join(str(e).split())
        if "must be called before" in reason:
            reason = (
                "Keras already computed something in this process; join first (zoo.train "
                "does, before it loads the recipe: pass it the recipe's name or path)"
            )
        raise ZooError(
            f"process {job.process_id} of {job.processes} could not join the job at "
            f"{job.coordinator}: {reason[:300]}"
        ) from None
    _joined = job


def distribute() -> None:
    """From here on, Keras creates variables on every device of the job and trains
    data-parallel: each process feeds its share of every global batch and the gradients are
    summed across all (through gloo between CPU processes). Every process must then run the
    same computations in the same order; only what follows this (the model, fit) does."""
    import jax

    # zoo's pipeline hands each process its share of every batch (zoo.data.build).
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    )


def leave() -> None:
    """After the last `fit`: no more collectives. Each process goes on (or stops) alone: the
    primary evaluates and saves on its own devices."""
    global _left
    if _joined is None or _left:
        return
    import jax

    _left = True
    keras.distribution.set_distribution(None)
    jax.distributed.shutdown()
