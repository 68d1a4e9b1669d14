"""The input pipeline: a source gives (image, label) examples; `build` turns them into batched,
cached, shuffled, augmented tf.data pipelines for training and evaluation.

Images leave the pipeline as float32 pixel values in [0, 255] at `data.image_size`; scaling
and normalization are layers of the trained model (`preprocessing`), so a saved or exported
model takes raw pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from zoo.data import arrays, folders, tfds_source
from zoo.errors import ZooError
from zoo.recipes.schema import DataConfig, Recipe

AUTOTUNE = tf.data.AUTOTUNE


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

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_count / self.batch_size)


@dataclass(frozen=True)
class _Examples:
    """One split before batching: a dataset of (image uint8 HxWxC, label int64) and its size."""

    dataset: tf.data.Dataset
    count: int


def _class_indices(classes, names) -> list[int]:
    """Indices in `names` of the `data.classes` subset, or an error naming the unknown ones."""
    missing = [c for c in classes if c not in names]
    if missing:
        raise ZooError(
            f"data.classes names {', '.join(map(repr, missing))}, not in this "
            f"dataset; available: {', '.join(names)}"
        )
    return [names.index(c) for c in classes]


def _select(x, y, names, classes, max_per_class, seed):
    """Keeps `classes` (relabelled in that order) and at most `max_per_class` of each."""
    if classes is not None:
        old = _class_indices(classes, names)
        keep = np.isin(y, old)
        relabel = np.zeros(len(names), dtype=np.int64)
        relabel[old] = np.arange(len(old))
        x, y = x[keep], relabel[y[keep]]
        names = list(classes)
    if max_per_class is not None:
        rng = np.random.default_rng(seed)
        keep = np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[:max_per_class] for c in range(len(names))]
        )
        keep.sort()
        x, y = x[keep], y[keep]
    return x, y, names


def _stratified_split(y, fraction, seed):
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    return train_test_split(index, test_size=fraction, stratify=y, random_state=seed)


def _from_arrays(cfg: DataConfig, train, test, names, seed):
    x, y, kept = _select(*train, names, cfg.classes, cfg.max_per_class, seed)
    if test is not None and cfg.eval_split == "test":
        ex, ey, _ = _select(*test, names, cfg.classes, cfg.max_per_class, seed)
        eval_name = "test"
    else:
        train_idx, eval_idx = _stratified_split(y, cfg.validation_split, seed)
        x, y, ex, ey = x[train_idx], y[train_idx], x[eval_idx], y[eval_idx]
        eval_name = f"validation_split {cfg.validation_split:g} of train"
    train_ex = _Examples(tf.data.Dataset.from_tensor_slices((x, y)), len(y))
    eval_ex = _Examples(tf.data.Dataset.from_tensor_slices((ex, ey)), len(ey))
    return train_ex, eval_ex, kept, eval_name


def _from_files(files, labels, channels) -> _Examples:
    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    if all(f[f.rfind(".") :].lower() in folders.TF_FORMATS for f in files):

        def decode(path, label):
            image = tf.io.decode_image(
                tf.io.read_file(path), channels=channels, expand_animations=False
            )
            return image, label
    else:

        def decode(path, label):
            image = tf.numpy_function(folders.decode_with_pil, [path, channels], tf.uint8)
            image.set_shape([None, None, channels])
            return image, label

    return _Examples(ds.map(decode, num_parallel_calls=AUTOTUNE), len(files))


def _folder_files(root, names, max_per_class, seed):
    files, labels = folders.list_images(root, names)
    index, labels = _select(np.arange(len(labels)), labels, names, None, max_per_class, seed)[:2]
    if not len(index):
        raise ZooError(
            f"{root} holds no image files of the classes {', '.join(names)} "
            f"({', '.join(sorted(folders.IMAGE_FORMATS))})"
        )
    return [files[i] for i in index], labels


def _image_folder(cfg: DataConfig, seed):
    train_root, eval_root, names = folders.folder_layout(
        cfg.path, cfg.classes, cfg.train_split, cfg.eval_split
    )
    files, labels = _folder_files(train_root, names, cfg.max_per_class, seed)
    if eval_root is not None:
        eval_files, eval_labels = _folder_files(eval_root, names, cfg.max_per_class, seed)
        eval_name = cfg.eval_split
    else:
        train_idx, eval_idx = _stratified_split(labels, cfg.validation_split, seed)
        eval_files, eval_labels = [files[i] for i in eval_idx], labels[eval_idx]
        files, labels = [files[i] for i in train_idx], labels[train_idx]
        eval_name = f"validation_split {cfg.validation_split:g} of train"
    return (
        _from_files(files, labels, cfg.channels),
        _from_files(eval_files, eval_labels, cfg.channels),
        names,
        eval_name,
    )


def _tfds(cfg: DataConfig, seed):
    b = tfds_source.builder(cfg.name, cfg.data_dir)
    names = list(b.info.features["label"].names)
    train_split, eval_split, eval_name = tfds_source.split_names(
        b, cfg.train_split, cfg.eval_split, cfg.validation_split
    )
    out = []
    for split in (train_split, eval_split):
        try:
            ds = b.as_dataset(
                split=split,
                as_supervised=True,
                shuffle_files=split == train_split,
                read_config=_read_config(seed),
            )
            count = b.info.splits[split].num_examples if b.info.splits else _count(ds)
        except (KeyError, ValueError) as e:
            raise ZooError(
                f"TFDS dataset {cfg.name!r} has no split {split!r}; it has "
                f"{', '.join(b.info.splits)}"
            ) from e
        ds, count = _tfds_subset(ds, count, names, cfg, seed)
        out.append(_Examples(ds, count))
    return out[0], out[1], list(cfg.classes or names), eval_name


def _count(ds) -> int:
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda a, _: a + 1))


def _read_config(seed):
    import tensorflow_datasets as tfds

    return tfds.ReadConfig(shuffle_seed=seed)


def _tfds_subset(ds, count, names, cfg: DataConfig, seed):
    """`data.classes` and `data.max_per_class` on a streamed TFDS split."""
    if cfg.classes is None and cfg.max_per_class is None:
        return ds, count
    old = _class_indices(cfg.classes or names, names)
    relabel = np.full(len(names), -1, dtype=np.int64)
    relabel[old] = np.arange(len(old))
    relabel = tf.constant(relabel)
    ds = ds.map(lambda x, y: (x, tf.gather(relabel, y))).filter(lambda x, y: y >= 0)
    if cfg.max_per_class is not None:
        parts = [
            ds.filter(lambda x, y, c=c: tf.equal(y, c)).take(cfg.max_per_class)
            for c in range(len(old))
        ]
        # Interleaved at random, so that a shuffle buffer smaller than the split still mixes.
        ds = tf.data.Dataset.sample_from_datasets(parts, seed=seed, stop_on_empty_dataset=False)
    return ds, _count(ds)


def _source(cfg: DataConfig, seed: int):
    if cfg.source == "digits":
        return _from_arrays(cfg, arrays.load_digits(), None, [str(d) for d in range(10)], seed)
    if cfg.source == "idx":
        train, test = arrays.load_idx(cfg.path)
        count = int(train[1].max()) + 1
        return _from_arrays(cfg, train, test, [str(d) for d in range(count)], seed)
    if cfg.source == "image_folder":
        return _image_folder(cfg, seed)
    return _tfds(cfg, seed)


def _prepare(ds, cfg: DataConfig):
    """Decoded images to the recipe's size and channel count, still uint8, ready to cache."""
    height, width = cfg.image_size

    def fix(image, label):
        channels = image.shape[-1]
        if channels is not None and channels != cfg.channels:
            if cfg.channels == 1:
                image = tf.image.rgb_to_grayscale(image[..., :3])
            else:
                image = tf.image.grayscale_to_rgb(image[..., :1])
        shape = tf.shape(image)
        image = tf.cond(
            tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width)),
            lambda: image,
            lambda: tf.cast(
                tf.clip_by_value(tf.round(tf.image.resize(image, (height, width))), 0, 255),
                tf.uint8,
            ),
        )
        image = tf.ensure_shape(image, (height, width, cfg.channels))
        return image, label

    return ds.map(fix, num_parallel_calls=AUTOTUNE)


def augmenter(recipe: Recipe):
    """The [[augment]] layers as one function on batches, or None."""
    import keras

    if not recipe.augment:
        return None
    layers = [getattr(keras.layers, a.layer)(**a.args) for a in recipe.augment]

    def apply(images, labels):
        data = {"images": images, "labels": labels}
        for layer in layers:
            data = layer(data, training=True)
        return data["images"], data["labels"]

    return apply


def build(recipe: Recipe, *, training: bool = True) -> Data:
    """Builds the eval pipeline and, when `training`, the train pipeline of `recipe`."""
    cfg, seed = recipe.data, recipe.runtime.seed
    train, evaluation, names, eval_name = _source(cfg, seed)
    if train.count == 0 or evaluation.count == 0:
        raise ZooError(
            f"recipe {recipe.name}: the data has {train.count} training and "
            f"{evaluation.count} evaluation examples; both must be non-empty"
        )
    classes = len(names)

    def finish(ex: _Examples, is_train: bool):
        ds = _prepare(ex.dataset, cfg)
        if cfg.cache:
            ds = ds.cache()
        if is_train and cfg.shuffle:
            ds = ds.shuffle(
                min(cfg.shuffle_buffer, ex.count), seed=seed, reshuffle_each_iteration=True
            )
        ds = ds.batch(cfg.batch_size, num_parallel_calls=AUTOTUNE)
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
        if recipe.one_hot_labels:
            ds = ds.map(lambda x, y: (x, tf.one_hot(y, classes)), num_parallel_calls=AUTOTUNE)
        augment = augmenter(recipe) if is_train else None
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    return Data(
        train=finish(train, True) if training else None,
        eval=finish(evaluation, False),
        class_names=names,
        train_count=train.count,
        eval_count=evaluation.count,
        eval_name=eval_name,
        batch_size=cfg.batch_size,
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
