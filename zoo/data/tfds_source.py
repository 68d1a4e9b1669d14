"""The `tfds` source: any TFDS image-classification dataset, prepared locally or downloaded."""

from __future__ import annotations

from zoo.errors import ZooError
from zoo.network import online as _can_download


def _offline_error(name: str, data_dir: str) -> ZooError:
    return ZooError(
        f"TFDS dataset {name!r} is not prepared in {data_dir} and cannot be downloaded "
        "(no network). Prepare it on a machine with a network (`tfds build "
        f"{name}` or tfds.load) and copy the folder into data.data_dir, or use a local "
        "source: data.source=idx|image_folder with data.path=<folder>"
    )


def builder(name: str, data_dir: str | None):
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
    for key in ("image", "label"):
        if key not in b.info.features:
            raise ZooError(
                f"TFDS dataset {name!r} has no {key!r} feature; zoo's tfds source "
                "reads image classification datasets (image, label)"
            )
    return b


def split_names(b, train_split: str, eval_split: str | None, validation_split: float):
    """The train and eval split strings, carving a validation slice off train when the dataset
    has no `eval_split` (a builder that does not list its splits gets the one asked for)."""
    if eval_split and (eval_split in b.info.splits or not b.info.splits):
        return train_split, eval_split, eval_split
    keep = round(100 * (1 - validation_split))
    return f"{train_split}[:{keep}%]", f"{train_split}[{keep}%:]", f"last {100 - keep}% of train"
