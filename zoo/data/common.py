"""What the sources share: a split as a dataset of example dicts, class subsets, seeded splits,
decoding image files."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from zoo.errors import ZooError

AUTOTUNE = tf.data.AUTOTUNE
TF_FORMATS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
PIL_FORMATS = {".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp"}
IMAGE_FORMATS = TF_FORMATS | PIL_FORMATS


@dataclass(frozen=True)
class Examples:
    """One split before batching: a dataset of dicts ({"images": uint8 HxWxC, and the target:
    "labels" int64 or "segmentation_masks" uint8 HxWx1}) and its size."""

    dataset: tf.data.Dataset
    count: int


@dataclass(frozen=True)
class Source:
    """What a source gives: both splits, the class names and how the eval split was made;
    `eval_class_names` where the eval split has classes of its own (held-out identities)."""

    train: Examples
    eval: Examples
    class_names: list[str]
    eval_name: str
    eval_class_names: list[str] | None = None
    skipped: tuple[str, ...] = ()  # unreadable files left out (data.skip_corrupt)


def class_indices(classes, names) -> list[int]:
    """Indices in `names` of the `data.classes` subset, or an error naming the unknown ones."""
    missing = [c for c in classes if c not in names]
    if missing:
        raise ZooError(
            f"data.classes names {', '.join(map(repr, missing))}, not in this "
            f"dataset; available: {', '.join(names)}"
        )
    return [names.index(c) for c in classes]


def select(x, y, names, classes, max_per_class, seed):
    """Keeps `classes` (relabelled in that order) and at most `max_per_class` of each."""
    if classes is not None:
        old = class_indices(classes, names)
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


def identity_split(names: list[str], held_out, seed: int) -> tuple[list[str], list[str]]:
    """(training identities, eval identities) of `names`: `held_out` is a list of names, a
    count or a fraction of them (drawn with `seed`). Each side keeps the order of `names`."""
    if isinstance(held_out, list):
        unknown = [n for n in held_out if n not in names]
        if unknown:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ZooError(
                f"data.eval_identities names {', '.join(map(repr, unknown))}, not identities of "
                f"this data (its identity folders: {shown})"
            )
        if len(set(held_out)) != len(held_out):
            raise ZooError(f"data.eval_identities lists an identity twice: {held_out}")
        chosen = set(held_out)
    else:
        count = held_out if isinstance(held_out, int) else max(2, round(held_out * len(names)))
        if count > len(names) - 2:
            raise ZooError(
                f"data.eval_identities holds out {count} of {len(names)} identities; at least "
                f"2 must stay for training: hold out at most {max(len(names) - 2, 0)}"
            )
        rng = np.random.default_rng(seed)
        chosen = {names[i] for i in rng.choice(len(names), count, replace=False)}
    train = [n for n in names if n not in chosen]
    if len(train) < 2:
        raise ZooError(
            f"data.eval_identities leaves {len(train)} identities for training; at least 2 must "
            "stay"
        )
    return train, [n for n in names if n in chosen]


def stratified_split(y, fraction, seed, names=None):
    """Train and eval indices, each class split in proportion (`names`: the class names, for
    messages; a named class with no example counts too)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    counts = np.bincount(y, minlength=len(names) if names is not None else 0)
    if counts.min() < 2:
        rare = [names[k] if names is not None else k for k in np.flatnonzero(counts < 2)]
        raise ZooError(
            f"class {', '.join(repr(str(r)) for r in rare)} has fewer than 2 examples: "
            "data.validation_split holds out a share of every class, so each needs at least 2 "
            "(add examples, raise data.max_per_class, or leave the class out with data.classes)"
        )
    classes = int((counts > 0).sum())
    held = math.ceil(fraction * len(y))
    if min(held, len(y) - held) < classes:
        raise ZooError(
            f"data.validation_split {fraction:g} of {len(y)} examples holds out {held}, leaving "
            f"{len(y) - held}: each side needs at least one example of each of the "
            f"{classes} classes; change validation_split or add examples"
        )
    index = np.arange(len(y))
    try:
        return train_test_split(index, test_size=fraction, stratify=y, random_state=seed)
    except ValueError as e:  # scikit-learn's other refusals
        raise ZooError(f"data.validation_split {fraction:g}: {e}") from None


def validation_name(fraction: float) -> str:
    return f"validation_split {fraction:g} of train"


def labelled_arrays(cfg, train, test, names, seed) -> Source:
    """A source of in-memory (images, labels) arrays: `test` as eval split, or a stratified
    `validation_split` of train."""
    x, y, kept = select(*train, names, cfg.classes, cfg.max_per_class, seed)
    if test is not None and cfg.eval_split == "test":
        ex, ey, _ = select(*test, names, cfg.classes, cfg.max_per_class, seed)
        eval_name = "test"
    else:
        train_idx, eval_idx = stratified_split(y, cfg.validation_split, seed, kept)
        x, y, ex, ey = x[train_idx], y[train_idx], x[eval_idx], y[eval_idx]
        eval_name = validation_name(cfg.validation_split)

    def examples(images, labels):
        ds = tf.data.Dataset.from_tensor_slices({"images": images, "labels": labels})
        return Examples(ds, len(labels))

    return Source(examples(x, y), examples(ex, ey), kept, eval_name)


def image_problem(path: str) -> str | None:
    """Why the image file `path` cannot be used (empty, not an image, cut short), or None.
    JPEG, PNG and GIF files end in a marker, so their header and last bytes tell: cheap enough
    for 100k files. Other formats (PGM and the other netpbm ones, BMP, TIFF, WebP) have none and
    are decoded once here, as training would decode them every epoch."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = os.path.getsize(path)
        if size == 0:
            return "the file is empty"
        with Image.open(path) as image:
            kind = image.format
            if kind not in ("JPEG", "PNG", "GIF"):  # no end marker to read: decode it
                try:
                    image.load()
                except (OSError, ValueError, SyntaxError) as e:
                    return f"an image cut short or damaged ({e})"
                return None
        with open(path, "rb") as f:
            f.seek(max(0, size - 4096))
            tail = f.read()
    except UnidentifiedImageError:
        return "not an image Pillow or TensorFlow can read"
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's header parsers raise these too
        if "truncated" in str(e).lower():
            return "an image cut short (truncated)"
        return f"unreadable ({e})"
    if kind == "JPEG" and b"\xff\xd9" not in tail:
        return "a JPEG cut short (no end-of-image marker)"
    if kind == "PNG" and b"IEND" not in tail:
        return "a PNG cut short (no IEND chunk)"
    if kind == "GIF" and not tail.endswith(b";"):
        return "a GIF cut short (no trailer)"
    return None


def check_images(files: list[str], skip: bool) -> list[int]:
    """Indices of `files` that are readable images. An unreadable one is an error naming it,
    before any training, unless `skip` (data.skip_corrupt) leaves it out."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        problems = list(pool.map(image_problem, files))
    bad = [(f, why) for f, why in zip(files, problems, strict=True) if why]
    if bad and not skip:
        more = f" (and {len(bad) - 1} more: {', '.join(f for f, _ in bad[1:4])}" + (
            ", ...)" if len(bad) > 4 else ")"
        )
        raise ZooError(
            f"{bad[0][0]}: {bad[0][1]}{more if len(bad) > 1 else ''}. Remove or replace it, "
            "or set data.skip_corrupt = true to train on the readable files"
        )
    return [k for k, why in enumerate(problems) if not why]


def pil_image(image, channels: int):
    """A Pillow image as 8-bit greyscale ("L") or RGB: 16- and 32-bit integer images scaled
    to 0-255 (Pillow's own conversion clips them), palettes expanded, alpha dropped."""
    from PIL import Image

    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = max(float(values.max()), 1.0) if values.max() > 1 else 1.0
        else:
            top = 255.0 if values.max() <= 255 else 65535.0
        image = Image.fromarray(np.clip(np.round(values * 255 / top), 0, 255).astype(np.uint8))
    return image.convert("L" if channels == 1 else "RGB")


def decode_with_pil(path: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path.decode()) as im:
        arr = np.asarray(pil_image(im, channels), dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def image_decoder(files, channels: int):
    """A tf function from a file path to a uint8 HxWxC image: TensorFlow's decoders where they
    read every file, else Pillow (PGM, TIFF, ...)."""
    if all(f[f.rfind(".") :].lower() in TF_FORMATS for f in files):
        return lambda path: tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )

    def decode(path):
        image = tf.numpy_function(decode_with_pil, [path, channels], tf.uint8)
        image.set_shape([None, None, channels])
        return image

    return decode
