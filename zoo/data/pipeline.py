"""The input pipeline: a source's example dicts to batched, cached, shuffled, augmented tf.data
pipelines of (images, target) for training and evaluation.

Images leave the pipeline as float32 pixel values in [0, 255] at `data.image_size`, resized
bilinearly with antialiasing as Pillow resizes them for `zoo predict` (so a model is given at
prediction the pixels it trained on); masks are resized with nearest neighbours, never
interpolated. Scaling and normalization are layers of the trained model (`preprocessing`), so
a saved or exported model takes raw pixels. The task says which target travels with the
images and how it is encoded; the augmentation layers get Keras' own dicts ({"images",
"labels"} or {"images", "segmentation_masks"}) and move images and targets together. Text
sources give {"texts", "labels"}: the strings pass through unchanged (the model's vectorizer
turns them into tokens).
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
    # The training split read as `eval` is (in order, not augmented, batched; not cached), for
    # what a task sets from the training data once trained (faces' whitening).
    train_unaugmented: tf.data.Dataset | None = None
    skipped: tuple[str, ...] = ()  # unreadable files left out (data.skip_corrupt)
    # The epoch `train` draws its order and augmentation for; set it before each epoch
    # (training's callbacks do).
    epoch: tf.Variable | None = None
    # What fit validates on: `eval`, or in a multi-process run `eval` in whole global batches.
    validation: tf.data.Dataset | None = None
    # Training drops the last, partial batch (a multi-process run, whose processes each take
    # an equal share of every batch).
    drop_remainder: bool = False

    @property
    def steps_per_epoch(self) -> int:
        if self.drop_remainder:
            return self.train_count // self.batch_size
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
                tf.clip_by_value(
                    tf.round(tf.image.resize(x, (height, width), antialias=True)), 0, 255
                ),
                tf.uint8,
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


def _cropper(cfg: DataConfig):
    """A random `data.crop_size` window of an image and the same window of its mask, drawn
    from the example's own seed."""
    height, width = cfg.crop_size
    channels = cfg.channels

    def crop(example, key):
        both = tf.concat([example["images"], example[MASKS]], axis=-1)
        both = tf.image.stateless_random_crop(both, (height, width, channels + 1), seed=key)
        return {**example, "images": both[..., :channels], MASKS: both[..., channels:]}

    return crop


def _fold(key, *data):
    """A stateless seed derived from `key` and the integers `data`."""
    for d in data:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(d, tf.int64))
    return key


# Layers that take images alone (not Keras' dicts): colour changes, targets unchanged.
IMAGES_ONLY = ("RandomGrayscale",)


def _reason(error: Exception) -> str:
    """The message of a Keras layer's error without its call report (the part Keras shows in
    bold), else the first line."""
    text = str(error)
    if "\x1b[1m" in text:
        text = text.split("\x1b[1m", 1)[1].split("\x1b[0m", 1)[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def augmenter(recipe: Recipe):
    """The [[augment]] layers as one function of (batch dict, stateless seed), or None.

    Each layer draws its randomness from a fixed sequence derived from the seed it is given
    (in place of its own stateful SeedGenerator), so a batch's augmentation depends on the
    recipe's seed, the epoch and the batch's position alone: never on which thread of the
    parallel map ran first, nor on whether the process restarted."""
    import keras

    if not recipe.augment:
        return None
    from zoo.data.elastic import layer_class

    layers = [layer_class(a.layer)(**a.args) for a in recipe.augment]

    class Seeds(keras.random.SeedGenerator):
        def __init__(self, key):  # no state variable: the sequence is a function of `key`
            self.key, self.count = key, 0

        def next(self, ordered=True):
            self.count += 1
            return _fold(self.key, self.count)

    def apply(data, key):
        for n, layer in enumerate(layers):
            seeds = Seeds(_fold(key, n))
            # The preprocessing layers' seed hook, and the generator of noise/dropout layers.
            hooks = {"_get_seed_generator": lambda backend=None, s=seeds: s}
            if isinstance(getattr(layer, "seed_generator", None), keras.random.SeedGenerator):
                hooks["seed_generator"] = seeds
            saved = {name: layer.__dict__.get(name) for name in hooks}
            for name, value in hooks.items():
                object.__setattr__(layer, name, value)
            try:
                if type(layer).__name__ in IMAGES_ONLY:
                    data = {**data, "images": layer(data["images"], training=True)}
                else:
                    data = layer(data, training=True)
            except Exception as e:  # noqa: BLE001 - the layer and the batch, not TF's trace
                shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in data.items())
                raise ZooError(
                    f"augment.{n}: {type(layer).__name__} cannot transform this recipe's "
                    f"batches ({shapes}): {_reason(e)}"
                ) from None
            finally:
                for name, value in saved.items():
                    if value is None:
                        layer.__dict__.pop(name, None)
                    else:
                        object.__setattr__(layer, name, value)
        return data

    return apply


def build(
    recipe: Recipe, *, training: bool = True, processes: int = 1, process_id: int = 0
) -> Data:
    """Builds the eval pipeline and, when `training`, the train pipeline of `recipe`. With
    `processes` > 1 (a multi-process run), training and validation are fed whole global
    batches (the last partial one dropped), each drawn exactly as a one-process run draws it,
    of which this process (`process_id`) keeps its equal share."""
    cfg, seed = recipe.data, recipe.runtime.seed
    task = tasks.get(recipe.task)
    if processes > 1 and cfg.batch_size % processes:
        raise ZooError(
            f"recipe {recipe.name}: data.batch_size {cfg.batch_size} is the global batch, and "
            f"each of the {processes} processes takes an equal share of it: choose a multiple "
            f"of {processes}"
        )
    source = load_source(cfg, task.TARGET, seed)
    if source.train.count == 0 or source.eval.count == 0:
        raise ZooError(
            f"recipe {recipe.name}: the data has {source.train.count} training and "
            f"{source.eval.count} evaluation examples; both must be non-empty"
        )
    drop = processes > 1
    if drop and min(source.train.count, source.eval.count) < cfg.batch_size:
        raise ZooError(
            f"recipe {recipe.name}: a multi-process run trains and validates on whole batches, "
            f"and the data has {source.train.count} training and {source.eval.count} evaluation "
            f"examples for data.batch_size {cfg.batch_size}: lower data.batch_size"
        )
    if len(source.class_names) < 2:
        raise ZooError(
            f"recipe {recipe.name}: the data has {len(source.class_names)} class "
            f"({', '.join(map(repr, source.class_names))}); telling classes apart takes at "
            "least 2: check data.path and data.classes"
        )
    encode = task.encode(recipe, len(source.class_names))

    target, inputs = task.TARGET, task.INPUT
    augment = augmenter(recipe)

    def batches(ds, drop_remainder=False):
        ds = ds.batch(cfg.batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
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
        return ds

    def split(b):
        y = b[target]
        return b[inputs], tf.cast(y, tf.int32) if target == MASKS else y

    def finish(ds):
        """(inputs, targets) pairs, prefetched, without autotuning (see `_untuned`)."""
        return _untuned(ds.map(split, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))

    def cached(ex: Examples, cache=True):
        ds = _prepare(ex.dataset, cfg) if task.INPUT == "images" else ex.dataset
        return ds.cache() if cfg.cache and cache else ds

    def share(ds, size):
        """This process's share of each global batch; the batch count stays known."""
        ds = ds.rebatch(cfg.batch_size // processes).shard(processes, process_id)
        return ds.apply(tf.data.experimental.assert_cardinality(size))

    def evaluation(ex: Examples, drop_remainder=False, cache=True):
        ds = batches(cached(ex, cache), drop_remainder)
        if drop_remainder:
            ds = share(ds, ex.count // cfg.batch_size)
        return finish(ds)

    def train_pipeline(ex: Examples, epoch: tf.Variable):
        """Epoch k's order, crops and augmentation are drawn from (seed, k): the same in
        every run with this seed, whether or not the process restarted in between. The epoch
        is read when its iteration starts (fit sets it just before); positions count from 0
        in each epoch, as every epoch iterates the dataset anew."""
        examples = cached(ex)
        size = batches(examples, drop).cardinality()

        def key(*data):
            return _fold(tf.constant([seed, 0], tf.int64), epoch.read_value(), *data)

        ds = examples
        if cfg.shuffle:
            buffer = min(cfg.shuffle_buffer, ex.count)

            def shuffled(order):
                # This function's graph seed only: TensorFlow pairs an op seed with the graph's,
                # and with a graph seed of 0 (runtime.seed = 0) it tests the tensor `order` as a
                # Python bool, which fails.
                tf.random.set_seed(1)
                return examples.shuffle(buffer, seed=order, reshuffle_each_iteration=False)

            ds = tf.data.Dataset.from_tensors(0).map(lambda _: key()[1]).flat_map(shuffled)
        if cfg.crop_size:
            crop = _cropper(cfg)
            ds = ds.enumerate().map(lambda i, e: crop(e, key(1, i)), num_parallel_calls=AUTOTUNE)
        ds = batches(ds, drop)
        if augment is not None:
            # Not converted by AutoGraph (plain Python already), so that an augmentation
            # layer's ZooError reaches the user as it is, not inside a StagingError.
            ds = ds.enumerate().map(
                tf.autograph.experimental.do_not_convert(lambda i, b: augment(b, key(2, i))),
                num_parallel_calls=AUTOTUNE,
            )
        if drop:
            ds = share(ds, size)
        elif size >= 0:
            ds = ds.apply(tf.data.experimental.assert_cardinality(size))
        return finish(ds)

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    evaluated = evaluation(source.eval)
    return Data(
        train=train_pipeline(source.train, epoch) if training else None,
        eval=evaluated,
        validation=evaluation(source.eval, True) if drop else evaluated,
        drop_remainder=drop,
        epoch=epoch,
        class_names=source.class_names,
        train_count=source.train.count,
        eval_count=source.eval.count,
        eval_name=source.eval_name,
        batch_size=cfg.batch_size,
        eval_class_names=source.eval_class_names or source.class_names,
        train_examples=source.train.dataset if training else None,
        # Read once: not cached beside the training pipeline's own cache.
        train_unaugmented=evaluation(source.train, cache=False) if training else None,
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


def _untuned(ds):
    """`ds` without tf.data's model-based autotuning. Keras' fit makes a new iterator each
    epoch, and dropping one that autotunes stalls the process, idle, for 1-5 s in about half the
    epochs here (TensorFlow 2.21, 2 cores: a 20-step toy epoch of 3.5 s waited 1.3-2.4 s at its
    start in 8 of 15 epochs, none without autotuning). Without it the parallel maps run as many
    calls as the machine has cores and prefetch still grows its buffer on its own: the
    examples and their order are the same, training the same to the bit."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
