"""The input pipeline: a source's example dicts to batched, cached, shuffled, augmented tf.data
pipelines of (images, target) for training and evaluation.

Images leave the pipeline as float32 pixel values in [0, 255] at `data.image_size` (masks
resized with nearest neighbours, never interpolated); scaling and normalization are layers of
the trained model (`preprocessing`), so a saved or exported model takes raw pixels. The task
says which target travels with the images and how it is encoded; the augmentation layers get
Keras' own dicts ({"images", "labels"} or {"images", "segmentation_masks"}) and move images and
targets together. Text sources give {"texts", "labels"}: the strings pass through unchanged
(the model's vectorizer turns them into tokens).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import tensorflow as tf

from zoo import tasks
from zoo.data.common import AUTOTUNE, Examples, Source
from zoo.errors import ZooError
from zoo.recipes.schema import DataConfig, Recipe

# `data.source` -> the module under zoo.data that loads it.
SOURCES = {
    "digits": "digits",
    "idx": "idx",
    "image_folder": "image_folder",
    "segmentation_folder": "segmentation_folder",
    "text_file": "text_file",
    "text_folder": "text_folder",
    "tfds": "tfds_source",
}
MASKS = "segmentation_masks"


@dataclass(frozen=True)
class Data:
    """Pipelines and what they hold. `train` is None when only evaluation was asked for."""

    train: tf.data.Dataset | None
    eval: tf.data.Dataset
    class_names: list[str]
    train_count: int
    eval_count: int
    eval_name: str
    batch_size: int
    eval_class_names: list[str] | None = None  # where the eval split has its own classes
    # The training split's examples as the source gives them (unbatched, not augmented): what
    # preprocessing that learns from data (a text vocabulary) adapts on.
    train_examples: tf.data.Dataset | None = None
    skipped: tuple[str, ...] = ()  # unreadable files left out (data.skip_corrupt)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_count / self.batch_size)


def load_source(cfg: DataConfig, target: str, seed: int) -> Source:
    module = importlib.import_module(f"zoo.data.{SOURCES[cfg.source]}")
    return module.load(cfg, target, seed)


def _prepare(ds, cfg: DataConfig):
    """Decoded images (and masks) at the recipe's size and channel count, still uint8, ready
    to cache."""
    height, width = cfg.image_size

    def resize(x, method):
        shape = tf.shape(x)
        same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
        if method == "nearest":
            resized = lambda: tf.image.resize(x, (height, width), method="nearest")  # noqa: E731
        else:
            resized = lambda: tf.cast(  # noqa: E731
                tf.clip_by_value(tf.round(tf.image.resize(x, (height, width))), 0, 255), tf.uint8
            )
        return tf.cond(same, lambda: x, resized)

    def fix(example):
        image = example["images"]
        channels = image.shape[-1]
        if channels in (2, 4):  # grey or RGB with alpha: the alpha goes
            image, channels = image[..., : channels - 1], channels - 1
        if channels is not None and channels != cfg.channels:
            if cfg.channels == 1:
                image = tf.image.rgb_to_grayscale(image)
            else:
                image = tf.image.grayscale_to_rgb(image)
        out = dict(example)
        out["images"] = tf.ensure_shape(resize(image, "bilinear"), (height, width, cfg.channels))
        if MASKS in example:
            out[MASKS] = tf.ensure_shape(resize(example[MASKS], "nearest"), (height, width, 1))
        return out

    return ds.map(fix, num_parallel_calls=AUTOTUNE)


def _cropper(cfg: DataConfig, seed: int):
    """A random `data.crop_size` window of each image and the same window of its mask: a new
    window each epoch, the sequence fixed by the seed."""
    height, width = cfg.crop_size
    channels = cfg.channels

    def crop(example):
        both = tf.concat([example["images"], example[MASKS]], axis=-1)
        both = tf.image.random_crop(both, (height, width, channels + 1), seed=seed)
        return {**example, "images": both[..., :channels], MASKS: both[..., channels:]}

    return crop


def augmenter(recipe: Recipe):
    """The [[augment]] layers as one function on batch dicts, or None."""
    import keras

    if not recipe.augment:
        return None
    layers = [getattr(keras.layers, a.layer)(**a.args) for a in recipe.augment]

    def apply(data):
        for layer in layers:
            data = layer(data, training=True)
        return data

    return apply


def build(recipe: Recipe, *, training: bool = True) -> Data:
    """Builds the eval pipeline and, when `training`, the train pipeline of `recipe`."""
    cfg, seed = recipe.data, recipe.runtime.seed
    task = tasks.get(recipe.task)
    source = load_source(cfg, task.TARGET, seed)
    if source.train.count == 0 or source.eval.count == 0:
        raise ZooError(
            f"recipe {recipe.name}: the data has {source.train.count} training and "
            f"{source.eval.count} evaluation examples; both must be non-empty"
        )
    encode = task.encode(recipe, len(source.class_names))

    def finish(ex: Examples, is_train: bool):
        ds = _prepare(ex.dataset, cfg) if task.INPUT == "images" else ex.dataset
        if cfg.cache:
            ds = ds.cache()
        if is_train and cfg.shuffle:
            ds = ds.shuffle(
                min(cfg.shuffle_buffer, ex.count), seed=seed, reshuffle_each_iteration=True
            )
        if is_train and cfg.crop_size:
            ds = ds.map(_cropper(cfg, seed), num_parallel_calls=AUTOTUNE)
        ds = ds.batch(cfg.batch_size, num_parallel_calls=AUTOTUNE)
        # Masks go through the augmentation layers as float32 too (their geometric transforms
        # sample with nearest neighbours), and come out as class ids.
        ds = ds.map(
            lambda b: {
                k: tf.cast(v, tf.float32) if k in ("images", MASKS) else v for k, v in b.items()
            },
            num_parallel_calls=AUTOTUNE,
        )
        if encode is not None:
            ds = ds.map(encode, num_parallel_calls=AUTOTUNE)
        augment = augmenter(recipe) if is_train else None
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
        target, inputs = task.TARGET, task.INPUT

        def split(b):
            y = b[target]
            return b[inputs], tf.cast(y, tf.int32) if target == MASKS else y

        return ds.map(split, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    return Data(
        train=finish(source.train, True) if training else None,
        eval=finish(source.eval, False),
        class_names=source.class_names,
        train_count=source.train.count,
        eval_count=source.eval.count,
        eval_name=source.eval_name,
        batch_size=cfg.batch_size,
        eval_class_names=source.eval_class_names or source.class_names,
        train_examples=source.train.dataset if training else None,
        skipped=source.skipped,
    )


def preprocessing(cfg: DataConfig):
    """Keras layers turning [0, 255] pixels into the model's input range (part of the model).

    Standardization is one Rescaling with per-channel constants, (x / 255 - mean) / std, not a
    Normalization layer: its mean and variance are variables, which ONNX conversion turns into
    extra graph inputs.
    """
    import keras

    if cfg.normalization == "none":
        return []
    if cfg.normalization == "scale":
        return [keras.layers.Rescaling(1.0 / 255, name="rescale")]
    scale = [1.0 / (255.0 * s) for s in cfg.std]
    offset = [-m / s for m, s in zip(cfg.mean, cfg.std, strict=True)]
    return [keras.layers.Rescaling(scale, offset=offset, name="standardize")]
