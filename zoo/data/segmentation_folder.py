"""The `segmentation_folder` source: images and masks paired by file stem.

Layouts, with the sub-folder names `data.images_dir` and `data.masks_dir` (`images`, `masks`):
`path/train/images/` + `path/train/masks/` and, where it holds masks too, `path/test/...` as
the eval split; or `path/images/` + `path/masks/`. Without an eval folder a seeded
`data.validation_split` of the files is held out. Masks are read with Pillow (palette PNGs give
their indices, 16-bit and TIFF masks work) and mapped to class ids by `data.mask_values`
(default: binary masks, 0 -> 0 and 255 or 1 -> 1). Every mask is checked before training: a
value the mapping does not know, or a mask of another size than its image, is an error naming
the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from zoo.data.common import (
    AUTOTUNE,
    IMAGE_FORMATS,
    Examples,
    Source,
    check_images,
    image_decoder,
    validation_name,
)
from zoo.errors import ZooError

BINARY = {"0": 0, "255": 1, "1": 1}


def mask_values(cfg) -> dict[str, int]:
    """`data.mask_values`, or the binary default."""
    return dict(cfg.mask_values) if cfg.mask_values is not None else dict(BINARY)


def class_count(cfg) -> int:
    return max(mask_values(cfg).values()) + 1


def class_names(cfg) -> list[str]:
    """`data.classes` (one name per class id), or names made up from the mapping."""
    count = class_count(cfg)
    if cfg.classes is not None:
        if len(cfg.classes) != count:
            raise ZooError(
                f"data.classes names {len(cfg.classes)} classes but data.mask_values maps onto "
                f"{count} class ids; give one name per class id, background included"
            )
        return list(cfg.classes)
    if cfg.mask_values is None:
        return ["background", "foreground"]
    return [f"class_{i}" for i in range(count)]


def is_colour(values: dict[str, int]) -> bool:
    return any("," in key for key in values)


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def lookup(values: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted mask keys (grey values, or packed R,G,B) and the class id of each."""
    keys = [
        int(k) if "," not in k else int(_pack(np.array([int(p) for p in k.split(",")])))
        for k in values
    ]
    order = np.argsort(keys)
    return np.asarray(keys, np.int64)[order], np.asarray(list(values.values()), np.uint8)[order]


def read_mask(path: str, values: dict[str, int]) -> np.ndarray:
    """The mask file as class ids (H, W, 1) uint8; ZooError for a value `values` lacks."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if is_colour(values):
                raw = _pack(np.asarray(im.convert("RGB")))
            else:
                raw = np.asarray(im.convert("L") if im.mode in ("1", "RGB", "RGBA") else im)
                if raw.ndim == 3:
                    raw = raw[..., 0]
                raw = raw.astype(np.int64)
    except (OSError, UnidentifiedImageError) as e:
        raise ZooError(f"cannot read mask {path}: {e}") from e
    keys, ids = lookup(values)
    where = np.clip(np.searchsorted(keys, raw), 0, len(keys) - 1)
    known = keys[where] == raw
    if not known.all():
        value = raw[~known].flat[0]
        shown = f"{value >> 16},{(value >> 8) & 255},{value & 255}" if is_colour(values) else value
        raise ZooError(
            f"mask {path} has the value {shown}, which data.mask_values does not map "
            f"(it maps {', '.join(values)}); add it, e.g. --set 'data.mask_values="
            f"{{{', '.join(f'{_toml_key(k)} = {v}' for k, v in values.items())}, "
            f"{_toml_key(str(shown).replace(' ', ''))} = <class id>}}'"
        )
    return ids[where][..., None]


def _toml_key(key: str) -> str:
    return key if key.isdigit() else f'"{key}"'


def _stems(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_FORMATS and not p.name.startswith(".")
    }


def pairs(split: Path, images_dir: str, masks_dir: str) -> list[tuple[str, str]]:
    """(image, mask) file pairs of one split folder, matched by file stem."""
    images, masks = _stems(split / images_dir), _stems(split / masks_dir)
    if not images:
        raise ZooError(
            f"{split / images_dir} holds no image files ({', '.join(sorted(IMAGE_FORMATS))})"
        )
    alone = sorted(set(images) ^ set(masks))
    if alone:
        shown = ", ".join(f"{(images.get(s) or masks[s]).relative_to(split)}" for s in alone[:3])
        count = "1 file has" if len(alone) == 1 else f"{len(alone)} files have"
        raise ZooError(
            f"{split}: {count} no partner of the same stem in "
            f"{images_dir}/ and {masks_dir}/ (e.g. {shown}); each image needs one mask"
        )
    return [(str(images[s]), str(masks[s])) for s in sorted(images)]


def layout(cfg) -> tuple[Path, Path | None]:
    """The train split folder and the eval split folder (None: validation_split of train)."""
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise ZooError(
            f"data.path {cfg.path!r} is not a folder; it should hold {cfg.train_split}/"
            f"{cfg.images_dir}/ and {cfg.train_split}/{cfg.masks_dir}/ (or {cfg.images_dir}/ "
            f"and {cfg.masks_dir}/), images and masks paired by file name"
        )

    def holds(folder: Path) -> bool:
        return (folder / cfg.images_dir).is_dir() and (folder / cfg.masks_dir).is_dir()

    train = root / cfg.train_split
    if not holds(train):
        if not holds(root):
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise ZooError(
                f"{root} has neither {cfg.train_split}/{cfg.images_dir}/ with "
                f"{cfg.train_split}/{cfg.masks_dir}/ nor {cfg.images_dir}/ with "
                f"{cfg.masks_dir}/ (it has: {', '.join(found) or 'no folders'}); set "
                "data.images_dir and data.masks_dir to the sub-folder names"
            )
        return root, None
    # An eval folder without masks (the ISBI test images, say) is not an eval split.
    test = root / cfg.eval_split if cfg.eval_split else None
    return train, test if test is not None and holds(test) else None


def check(files: list[tuple[str, str]], values: dict[str, int]) -> None:
    """Reads every mask once: known values, and the size of its image."""
    from PIL import Image

    for image, mask in files:
        with Image.open(image) as a, Image.open(mask) as b:
            if a.size != b.size:
                raise ZooError(
                    f"mask {mask} is {b.size[0]}x{b.size[1]} but its image {image} is "
                    f"{a.size[0]}x{a.size[1]}; a mask must have its image's size"
                )
        read_mask(mask, values)


def _examples(files: list[tuple[str, str]], cfg, values: dict[str, int]) -> Examples:
    decode = image_decoder([image for image, _ in files], cfg.channels)

    def mask(path):
        m = tf.numpy_function(lambda p: read_mask(p.decode(), values), [path], tf.uint8)
        m.set_shape([None, None, 1])
        return m

    ds = tf.data.Dataset.from_tensor_slices(
        ([image for image, _ in files], [m for _, m in files])
    ).map(
        lambda image, m: {"images": decode(image), "segmentation_masks": mask(m)},
        num_parallel_calls=AUTOTUNE,
    )
    return Examples(ds, len(files))


def _readable(files: list[tuple[str, str]], skip: bool, skipped: list[str]):
    """The pairs whose image and mask are both readable (see common.check_images)."""
    ok = set(check_images([path for pair in files for path in pair], skip))
    kept = [k for k in range(len(files)) if 2 * k in ok and 2 * k + 1 in ok]
    skipped.extend(image for k, (image, _) in enumerate(files) if k not in set(kept))
    return [files[k] for k in kept]


def load(cfg, target: str, seed: int) -> Source:
    values = mask_values(cfg)
    names = class_names(cfg)
    train_dir, eval_dir = layout(cfg)
    skipped = []
    files = _readable(pairs(train_dir, cfg.images_dir, cfg.masks_dir), cfg.skip_corrupt, skipped)
    if eval_dir is not None:
        eval_files = _readable(
            pairs(eval_dir, cfg.images_dir, cfg.masks_dir), cfg.skip_corrupt, skipped
        )
        eval_name = cfg.eval_split
    else:
        if len(files) < 2:
            raise ZooError(f"{train_dir}: one image pair cannot be split into train and eval")
        order = np.random.default_rng(seed).permutation(len(files))
        count = min(len(files) - 1, max(1, round(len(files) * cfg.validation_split)))
        eval_files = [files[i] for i in sorted(order[:count])]
        files = [files[i] for i in sorted(order[count:])]
        eval_name = validation_name(cfg.validation_split)
    check(files + eval_files, values)
    return Source(
        _examples(files, cfg, values),
        _examples(eval_files, cfg, values),
        names,
        eval_name,
        skipped=tuple(skipped),
    )
