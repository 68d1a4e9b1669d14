"""`zoo bench train MODEL --peers`: zoo's ResNet beside the same architecture in plain Keras,
in keras-hub and in timm (PyTorch), each trained as its users run it by default, measured in
one run with their timed windows interleaved (so a machine that slows down mid-run slows every
peer alike).

Each peer trains in its own process (this file run as a script with PEER MODEL BATCH SIZE;
the timm peer never imports zoo, whose TensorFlow and PyTorch crash in one process): it
builds its model, warms up, prints `ready`, then runs a window of N training steps for each
line `N` it reads and prints the window's seconds. Idle peers wait on their input, so only one
trains at a time. A peer whose library is not installed is reported, not fatal: keras-hub and
timm come with `pip install keras-zoo[bench]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

PEERS = ("zoo", "keras", "keras-hub", "timm")
# block type and blocks per stage of the ResNets every peer has.
RESNETS = {
    "resnet18": ("basic_block", [2, 2, 2, 2]),
    "resnet34": ("basic_block", [3, 4, 6, 3]),
    "resnet50": ("bottleneck_block", [3, 4, 6, 3]),
}
CLASSES = 10
WARMUP = 3


def check_model(name: str) -> None:
    """Refuses a model the peers do not all have (before minutes of measuring)."""
    from zoo.errors import ZooError

    if name not in RESNETS:
        raise ZooError(
            f"--peers compares ResNets, which plain Keras, keras-hub and timm all have: "
            f"{', '.join(RESNETS)} (received {name!r})"
        )


def plain_keras_resnet(name: str, size: int, classes: int = CLASSES):
    """ResNet (He et al. 2015) written the way a Keras user writes it from the paper:
    functional API, convolutions without bias, batch norm, ReLU, global average pooling."""
    import keras
    from keras import layers

    block, blocks = RESNETS[name]

    def conv_bn(x, filters, kernel, stride=1, relu=True):
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x) if relu else x

    inputs = keras.Input((size, size, 3))
    x = conv_bn(inputs, 64, 7, 2)
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for stage, (filters, count) in enumerate(zip([64, 128, 256, 512], blocks, strict=True)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            out = filters * (4 if block == "bottleneck_block" else 1)
            shortcut = x
            if stride != 1 or x.shape[-1] != out:
                shortcut = conv_bn(x, out, 1, stride, relu=False)
            if block == "basic_block":
                y = conv_bn(x, filters, 3, stride)
                y = conv_bn(y, filters, 3, relu=False)
            else:
                y = conv_bn(x, filters, 1)
                y = conv_bn(y, filters, 3, stride)
                y = conv_bn(y, out, 1, relu=False)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(x))


def keras_hub_resnet(name: str, size: int, classes: int = CLASSES):
    """keras-hub's ResNetBackbone in the ResNet-18/34/50 configuration (its presets' settings,
    random weights), with a pooled softmax head."""
    import keras
    import keras_hub

    block, blocks = RESNETS[name]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=blocks,
        stackwise_num_strides=[1, 2, 2, 2],
        block_type=block,
        image_shape=(size, size, 3),
    )
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def _keras_step(peer: str, name: str, batch: int, size: int, precision: str = "auto"):
    """One synchronous training step of a Keras peer: SGD with momentum and sparse
    cross-entropy; zoo's compiled as zoo-train compiles (its precision and XLA policy on this
    device, or `precision`)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if peer == "zoo":
        from zoo.bench import compiled_for_training

        model = compiled_for_training(name, size, CLASSES, precision)[0]
    else:  # as their users run them: Keras' defaults (float32, jit_compile="auto")
        model = (plain_keras_resnet if peer == "keras" else keras_hub_resnet)(name, size)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss="sparse_categorical_crossentropy",
            jit_compile="auto",
        )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, CLASSES, batch)
    return lambda: model.train_on_batch(x, y)


def _timm_step(name: str, batch: int, size: int):
    """One synchronous training step of timm's model on PyTorch, as its training loop runs
    it: NCHW float32, SGD with momentum, cross-entropy."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=CLASSES)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, CLASSES, (batch,))

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _serve(peer: str, name: str, batch: int, size: int, precision: str) -> None:
    if peer == "timm":
        step = _timm_step(name, batch, size)
    else:
        step = _keras_step(peer, name, batch, size, precision)
    for _ in range(WARMUP):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        count = int(line)
        start = time.perf_counter()
        for _ in range(count):
            step()
        print(time.perf_counter() - start, flush=True)


# Runs this file as a script without importing the zoo package (and so TensorFlow).
_RUN = (
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _backend(peer: str) -> str:
    if peer == "timm":
        return "torch (PyTorch)"
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def peer_environment(peer: str) -> dict[str, str]:
    """The environment a peer trains in: zoo's as zoo sets it up; the others' as their users'
    (TensorFlow's own oneDNN default where the user did not choose, not zoo's)."""
    from zoo._startup import USER_ONEDNN

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if peer != "zoo":
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
        if USER_ONEDNN is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = USER_ONEDNN
    return env


def bench_peers(
    name: str,
    *,
    batch: int = 32,
    size: int = 64,
    steps: int = 10,
    windows: int = 5,
    precision: str = "auto",
) -> dict:
    """Training images/s of zoo's `name` and of its peers, measured together: every peer's
    process starts and warms up, then round after round each runs one window of `steps`
    steps in turn. The median window of each gives its images/s; `vs_zoo` is zoo's images/s
    over the peer's. `precision` is zoo's (the peers run as their users run them)."""
    from zoo.errors import ZooError

    check_model(name)
    procs, rows = {}, {}
    for peer in PEERS:
        procs[peer] = subprocess.Popen(
            [sys.executable, "-c", _RUN, __file__, peer, name, str(batch), str(size), precision],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=peer_environment(peer),
        )
        rows[peer] = {"peer": peer, "backend": _backend(peer), "seconds": []}
    try:
        for peer, proc in list(procs.items()):
            if proc.stdout.readline().strip() != "ready":
                proc.wait()
                lines = proc.stderr.read().strip().splitlines() or ["exited"]
                reason = lines[-1]
                if "No module named" in reason:
                    reason += " (pip install 'keras-zoo[bench]')"
                rows[peer]["error"] = reason
                del procs[peer]
        if "zoo" not in procs:
            raise ZooError(f"zoo's {name} did not train: {rows['zoo']['error']}")
        for _ in range(windows):
            for peer, proc in procs.items():
                proc.stdin.write(f"{steps}\n")
                proc.stdin.flush()
                rows[peer]["seconds"].append(float(proc.stdout.readline()))
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    zoo_rate = batch * steps / statistics.median(rows["zoo"]["seconds"])
    for row in rows.values():
        if row["seconds"]:
            rate = batch * steps / statistics.median(row["seconds"])
            row["images_per_second"] = rate
            row["vs_zoo"] = zoo_rate / rate
    return {
        "model": name,
        "batch": batch,
        "size": size,
        "steps": steps,
        "peers": list(rows.values()),
    }


def format_peers(result: dict) -> str:
    lines = [
        f"{result['model']} training, batch {result['batch']}, {result['size']}x{result['size']}, "
        f"median of {result['steps']}-step windows, interleaved",
        f"{'peer':<11}{'backend':<18}{'images/s':>10}{'zoo / peer':>12}",
    ]
    for row in result["peers"]:
        if "error" in row:
            lines.append(f"{row['peer']:<11}{row['backend']:<18}  not measured: {row['error']}")
        else:
            lines.append(
                f"{row['peer']:<11}{row['backend']:<18}{row['images_per_second']:>10.1f}"
                f"{row['vs_zoo']:>11.2f}x"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
