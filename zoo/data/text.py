"""What the text sources share: decoding text files with a clear error, and a split of (texts,
labels) as a dataset of {"texts", "labels"} dicts."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.data.common import Examples, Source, select, stratified_split, validation_name
from zoo.errors import ZooError


def decode(raw: bytes, path, encoding: str) -> str:
    """`raw` as text; undecodable bytes are an error naming the file, line and byte."""
    try:
        return raw.decode(encoding)
    except LookupError:
        raise ZooError(
            f"data.encoding {encoding!r} is not a text encoding Python knows (e.g. utf-8, "
            "latin-1, cp1252)"
        ) from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ZooError(
            f"{path}, line {line}, column {column}: byte 0x{raw[e.start]:02x} is not "
            f"{encoding} text; set data.encoding to the file's encoding (e.g. latin-1 or cp1252)"
        ) from None


def class_ids(labels: list[str], names: list[str], where: str) -> np.ndarray:
    """Class indices of string labels; a label outside `names` is an error."""
    index = {n: k for k, n in enumerate(names)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise ZooError(
            f"{where} has labels {', '.join(map(repr, unknown[:5]))} that are not training "
            f"classes ({', '.join(names)})"
        )
    return np.asarray([index[label] for label in labels], dtype=np.int64)


def examples(texts, labels) -> Examples:
    ds = tf.data.Dataset.from_tensor_slices(
        {"texts": tf.constant(np.asarray(texts, dtype=object), tf.string), "labels": labels}
    )
    return Examples(ds, len(labels))


def source(cfg, train, test, names: list[str], seed: int) -> Source:
    """A Source of (texts, class ids) splits: `test` as the eval split where there is one, else
    a stratified `validation_split` of train (seeded). `data.classes` keeps those classes."""
    texts, labels = np.asarray(train[0], dtype=object), train[1]
    texts, labels, kept = select(texts, labels, names, cfg.classes, cfg.max_per_class, seed)
    if test is not None:
        eval_texts, eval_labels, _ = select(
            np.asarray(test[0], dtype=object), test[1], names, cfg.classes, cfg.max_per_class, seed
        )
        eval_name = cfg.eval_split
    else:
        train_idx, eval_idx = stratified_split(labels, cfg.validation_split, seed, kept)
        eval_texts, eval_labels = texts[eval_idx], labels[eval_idx]
        texts, labels = texts[train_idx], labels[train_idx]
        eval_name = validation_name(cfg.validation_split)
    return Source(examples(texts, labels), examples(eval_texts, eval_labels), kept, eval_name)
