"""zoo's unet_membrane recipe beside a plain Keras U-Net on the same ISBI membrane split.

The peer is the U-Net most Keras tutorials train on this data (zhixuhao/unet's layout, "same"
padding): base 32 filters, 256x256 inputs, batch 4, 15 epochs, a sigmoid output and binary
cross-entropy, no augmentation, Adam at 1e-3 (`--peer-lr`; zhixuhao/unet's 1e-4 leaves it
predicting "cell" everywhere after 15 epochs, mean IoU 0.39). Both train on the same files
(a folder with train/image + train/label, and test/image + test/label as the held-out pairs)
and are scored the same way: mean IoU of the two classes (membrane, cell) on the held-out
pairs, the peer at 256x256 and zoo at its recipe's data.image_size (the 512x512 originals for
unet_membrane, 256x256 for unet_membrane_256). Prints seconds and mean IoU of each and their
ratios.

    python benchmarks/membrane.py DIR [--recipe unet_membrane_256] [--set key=value ...]
        [--peer-lr 1e-3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def plain_unet(base=32, size=256):
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1))
    x, skips = layers.Rescaling(1 / 255)(inputs), []
    for level in range(4):
        f = base * 2**level
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(base * 16, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(base * 16, 3, padding="same", activation="relu")(x)
    for level in reversed(range(4)):
        f = base * 2**level
        x = layers.Conv2DTranspose(f, 2, strides=2)(x)
        x = layers.Concatenate()([skips[level], x])
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def load(folder: Path, size=256):
    from PIL import Image

    images, masks = [], []
    for path in sorted((folder / "image").glob("*.png"), key=lambda p: p.stem):
        image = Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        mask = Image.open(folder / "label" / path.name).convert("L")
        mask = mask.resize((size, size), Image.Resampling.NEAREST)
        images.append(np.asarray(image, np.float32)[..., None])
        masks.append((np.asarray(mask) > 127).astype(np.float32)[..., None])
    return np.stack(images), np.stack(masks)


def mean_iou(truth, predicted) -> float:
    ious = []
    for c in (0, 1):
        inter = np.sum((truth == c) & (predicted == c))
        union = np.sum((truth == c) | (predicted == c))
        ious.append(inter / union)
    return float(np.mean(ious))


def peer(root: Path, seed: int, learning_rate: float = 1e-3) -> dict:
    import keras

    keras.utils.set_random_seed(seed)
    x, y = load(root / "train")
    tx, ty = load(root / "test")
    model = plain_unet()
    model.compile(keras.optimizers.Adam(learning_rate), "binary_crossentropy")
    start = time.perf_counter()
    model.fit(x, y, batch_size=4, epochs=15, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    predicted = (model.predict(tx, verbose=0) > 0.5).astype(np.float32)
    return {"seconds": seconds, "mean_iou": mean_iou(ty, predicted)}


def zoo_recipe(root: Path, name: str, overrides) -> dict:
    import zoo

    recipe = zoo.load_recipe(name, [f"data.path='{root}'", "data.eval_split='test'", *overrides])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run = zoo.train(recipe, output=Path(out) / "run", log=lambda *a, **k: None)
        seconds = time.perf_counter() - start
        metrics = json.loads((run / "metrics.json").read_text())
    return {
        "seconds": seconds,
        "train_seconds": metrics["train_seconds"],
        "mean_iou": metrics["mean_iou"],
        "eval_examples": metrics["eval_examples"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="train/{image,label} and test/{image,label}")
    parser.add_argument("--recipe", default="unet_membrane", help="a segmentation recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--peer-lr", type=float, default=1e-3, help="the plain U-Net's Adam rate")
    args = parser.parse_args()
    ours = zoo_recipe(args.folder, args.recipe, args.overrides)
    theirs = peer(args.folder, args.seed, args.peer_lr)
    print(f"{'':<22}{'seconds':>10}{'mean IoU':>10}")
    print(f"{'plain Keras U-Net':<22}{theirs['seconds']:>10.1f}{theirs['mean_iou']:>10.4f}")
    print(f"{'zoo ' + args.recipe:<22}{ours['seconds']:>10.1f}{ours['mean_iou']:>10.4f}")
    print(
        f"{'zoo / plain':<22}{ours['seconds'] / theirs['seconds']:>10.2f}"
        f"{ours['mean_iou'] - theirs['mean_iou']:>+10.4f}"
    )
    print(json.dumps({"zoo": ours, "plain_keras": theirs}))


if __name__ == "__main__":
    main()
