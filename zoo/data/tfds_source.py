"""The `tfds` source: a TFDS dataset, prepared locally or downloaded: its (image, label) pairs
for classification, its (image, segmentation_mask) pairs for segmentation (the oxford_iiit_pet
trimaps, say, mapped to class ids by `data.mask_values`), its (text, label) pairs for text
datasets without images (imdb_reviews' "text", ag_news_subset's "description", or the Text
feature `data.text_column` names)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.data.common import Examples, Source, class_indices
from zoo.errors import ZooError
from zoo.network import online as _can_download


def _offline_error(name: str, data_dir: str) -> ZooError:
    return ZooError(
        f"TFDS dataset {name!r} is not prepared in {data_dir} and cannot be downloaded "
        "(no network). Prepare it on a machine with a network (`tfds build "
        f"{name}` or tfds.load) and copy the folder into data.data_dir, or use a local "
        "source: data.source=idx|image_folder with data.path=<folder>"
    )


# The TFDS feature holding each target.
FEATURES = {"labels": "label", "segmentation_masks": "segmentation_mask"}


def builder(name: str, data_dir: str | None, target: str = "labels"):
    import tensorflow_datasets as tfds

    try:
        b = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises DatasetNotFoundError and others with their own text
        raise ZooError(f"data.name {name!r} is not a TFDS dataset: {e}".splitlines()[0]) from e
    if not b.is_prepared():
        if not _can_download():
            raise _offline_error(name, b.data_dir)
        try:
            b.download_and_prepare()
        except Exception as e:
            raise ZooError(f"downloading TFDS dataset {name!r} failed: {e}") from e
    inputs = "image" if "image" in b.info.features else "text"
    for key in ("image" if inputs == "image" else None, FEATURES[target]):
        if key is not None and key not in b.info.features:
            raise ZooError(
                f"TFDS dataset {name!r} has no {key!r} feature; for {target} zoo's tfds "
                f"source reads datasets with image (or text) and {FEATURES[target]}"
            )
    return b


def text_feature(b, cfg) -> str:
    """The Text feature a text dataset is classified by: `data.text_column` where it names
    one, else "text" or "description" (ag_news_subset)."""
    import tensorflow_datasets as tfds

    features = b.info.features
    texts = [k for k in features if isinstance(features[k], tfds.features.Text)]
    if isinstance(cfg.text_column, str):
        if cfg.text_column not in texts:
            raise ZooError(
                f"data.text_column {cfg.text_column!r} is not a Text feature of TFDS dataset "
                f"{cfg.name!r}; its Text features: {', '.join(texts) or 'none'}"
            )
        return cfg.text_column
    for key in ("text", "description"):
        if key in texts:
            return key
    raise ZooError(
        f"TFDS dataset {cfg.name!r} has neither images nor a 'text' feature; name its Text "
        f"feature in data.text_column (it has {', '.join(texts) or 'none'})"
    )


def split_names(b, train_split: str, eval_split: str | None, validation_split: float):
    """The train and eval split strings, carving a validation slice off train when the dataset
    has no `eval_split` (a builder that does not list its splits gets the one asked for)."""
    if eval_split and (eval_split in b.info.splits or not b.info.splits):
        return train_split, eval_split, eval_split
    keep = round(100 * (1 - validation_split))
    return f"{train_split}[:{keep}%]", f"{train_split}[{keep}%:]", f"last {100 - keep}% of train"


def load(cfg, target: str, seed: int) -> Source:
    b = builder(cfg.name, cfg.data_dir, target)
    if cfg.eval_identities is not None:
        return _by_identity(b, cfg, seed)
    if target == "labels":
        names = list(b.info.features["label"].names)
    else:
        from zoo.data import segmentation_folder as masks

        names = masks.class_names(cfg)
    train_split, eval_split, eval_name = split_names(
        b, cfg.train_split, cfg.eval_split, cfg.validation_split
    )
    # The feature the model reads, and its key in the example dicts.
    feature = "image" if "image" in b.info.features else text_feature(b, cfg)
    key = "images" if feature == "image" else "texts"
    out = []
    for split in (train_split, eval_split):
        try:
            ds = b.as_dataset(
                split=split, shuffle_files=split == train_split, read_config=_read_config(seed)
            )
            count = b.info.splits[split].num_examples if b.info.splits else _count(ds)
        except (KeyError, ValueError) as e:
            raise ZooError(
                f"TFDS dataset {cfg.name!r} has no split {split!r}; it has "
                f"{', '.join(b.info.splits)}"
            ) from e
        if target == "labels":
            ds = ds.map(lambda ex: {key: ex[feature], "labels": ex["label"]})
            ds, count = _subset(ds, count, names, cfg, seed)
        else:
            ds = ds.map(_mask_mapper(cfg))
        out.append(Examples(ds, count))
    return Source(out[0], out[1], list(cfg.classes or names), eval_name)


def _mask_mapper(cfg):
    """Grey mask values to class ids through `data.mask_values`; an unmapped value stops the
    pipeline with an error naming it."""
    from zoo.data import segmentation_folder as masks

    values = masks.mask_values(cfg)
    if masks.is_colour(values):
        raise ZooError("data.mask_values: TFDS masks are grey values; give keys 0-255")
    table = np.full(256, -1, np.int32)
    for key, class_id in values.items():
        table[int(key)] = class_id
    table = tf.constant(table)

    def fn(ex):
        ids = tf.gather(table, tf.cast(ex["segmentation_mask"], tf.int32))
        check = tf.debugging.assert_non_negative(
            ids, message=f"a mask value is not in data.mask_values ({', '.join(values)})"
        )
        with tf.control_dependencies([check]):
            ids = tf.identity(ids)
        return {"images": ex["image"], "segmentation_masks": tf.cast(ids, tf.uint8)}

    return fn


def _count(ds) -> int:
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda a, _: a + 1))


def _read_config(seed):
    import tensorflow_datasets as tfds

    return tfds.ReadConfig(shuffle_seed=seed)


def _subset(ds, count, names, cfg, seed):
    """`data.classes` and `data.max_per_class` on a streamed TFDS split."""
    if cfg.classes is None and cfg.max_per_class is None:
        return ds, count
    old = class_indices(cfg.classes or names, names)
    relabel = np.full(len(names), -1, dtype=np.int64)
    relabel[old] = np.arange(len(old))
    relabel = tf.constant(relabel)
    ds = ds.map(lambda ex: {**ex, "labels": tf.gather(relabel, ex["labels"])}).filter(
        lambda ex: ex["labels"] >= 0
    )
    if cfg.max_per_class is not None:
        parts = [
            ds.filter(lambda ex, c=c: tf.equal(ex["labels"], c)).take(cfg.max_per_class)
            for c in range(len(old))
        ]
        # Interleaved at random, so that a shuffle buffer smaller than the split still mixes.
        ds = tf.data.Dataset.sample_from_datasets(parts, seed=seed, stop_on_empty_dataset=False)
    return ds, _count(ds)


def _by_identity(b, cfg, seed: int) -> Source:
    """Training identities against held-out ones (`data.eval_identities`), both from
    `data.train_split`: the label is an identity's name (lfw's Text feature) or a ClassLabel.
    The labels are read once, without decoding images, to list the identities and count."""
    import tensorflow_datasets as tfds

    from zoo.data.common import identity_split

    if cfg.max_per_class is not None or cfg.classes is not None:
        raise ZooError(
            "data.max_per_class and data.classes do not apply to a TFDS split by identity; "
            "leave them out"
        )
    feature = b.info.features["label"]
    try:
        labels = b.as_dataset(
            split=cfg.train_split, decoders={"image": tfds.decode.SkipDecoding()}
        ).map(lambda ex: ex["label"])
    except (KeyError, ValueError) as e:
        raise ZooError(
            f"TFDS dataset {cfg.name!r} has no split {cfg.train_split!r}; it has "
            f"{', '.join(b.info.splits)}"
        ) from e
    found = [v.decode() if isinstance(v, bytes) else int(v) for v in labels.as_numpy_iterator()]
    if isinstance(feature, tfds.features.ClassLabel):
        found = [feature.names[v] for v in found]
    names = sorted(set(found))
    train_names, eval_names = identity_split(names, cfg.eval_identities, seed)
    counts = {n: 0 for n in names}
    for n in found:
        counts[n] += 1

    def examples(kept: list[str], shuffle: bool) -> Examples:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(kept), tf.range(len(kept), dtype=tf.int64)
            ),
            default_value=-1,
        )
        class_names = tf.constant(
            feature.names if isinstance(feature, tfds.features.ClassLabel) else []
        )

        def name_of(label):
            return label if label.dtype == tf.string else tf.gather(class_names, label)

        ds = b.as_dataset(
            split=cfg.train_split, shuffle_files=shuffle, read_config=_read_config(seed)
        )
        ds = ds.map(
            lambda ex: {"images": ex["image"], "labels": table.lookup(name_of(ex["label"]))}
        )
        return Examples(ds.filter(lambda ex: ex["labels"] >= 0), sum(counts[n] for n in kept))

    return Source(
        examples(train_names, True),
        examples(eval_names, False),
        train_names,
        f"{len(eval_names)} held-out identities",
        eval_class_names=eval_names,
    )
