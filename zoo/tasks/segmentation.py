"""Semantic segmentation: a class for every pixel.

Targets are class-id masks (`segmentation_masks`, H x W x 1), read from mask files or TFDS and
mapped by `data.mask_values`; the augmentation layers move them with the images (nearest
neighbours), colour layers leave them alone, and layers that blend images are refused. The
model is the registered `unet`, or a decoder (`unet`, `fpn`, `deeplabv3plus`) over any backbone;
it gives per-pixel class probabilities at the input's size. The loss is cross-entropy, Dice,
focal, Lovász-softmax or a sum ("ce+dice"); the metrics mean IoU, Dice of the foreground
classes (every class but 0) and pixel accuracy. Evaluation adds the IoU of each class and
`overlays.png`; an export agrees with Keras when its argmax masks match pixel by pixel;
`zoo predict` writes each mask (at the image's size) and an overlay as PNGs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from zoo.tasks import _common

INPUT = "images"
TARGET = "segmentation_masks"
MONITOR = "val_mean_iou"
VALIDATE = True  # fit reports the eval split each epoch
ACTIVATION = "softmax"
OUTPUT_RANK = 4
METRICS = ("mean_iou", "dice", "pixel_accuracy")
AGREEMENT = "pixel_agreement"
# Minimum pixel agreement of an export's argmax masks with the Keras model's.
TOLERANCE = {"none": 0.99, "dynamic": 0.97, "float16": 0.99, "int8": 0.97}
PARITY_EXAMPLES = 64  # masks are large: parity on at most this many eval images
OVERLAYS = "overlays.png"
# Augmentation layers that cannot move masks with images, and why (checked with Keras 3.15).
REFUSED = {
    "MixUp": "it blends two images, so a pixel would have two classes",
    "AugMix": "it blends augmented copies, and blends the masks' class ids with them",
    "CutMix": "Keras gives the pasted masks the image's channel count",
    "RandomGrayscale": "Keras fails on the segmentation_masks entry",
}
# Keras 3.15's Tversky loss swaps its FP and FN terms; it is left out until fixed upstream.
LOSS_TERMS = ("ce", "dice", "focal", "lovasz")


class Head(BaseModel):
    """The decoder over `model.backbone` (see zoo.heads.segmentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    decoder: Literal["unet", "fpn", "deeplabv3plus"] = "unet"
    # unet: channels per stage, coarsest first (segmentation_models' defaults).
    decoder_filters: list[Annotated[int, Field(gt=0)]] = [256, 128, 64, 32, 16]
    # fpn
    pyramid_filters: Annotated[int, Field(gt=0)] = 256
    segmentation_filters: Annotated[int, Field(gt=0)] = 128
    # deeplabv3plus
    filters: Annotated[int, Field(gt=0)] = 256
    atrous_rates: list[Annotated[int, Field(gt=0)]] = [6, 12, 18]
    low_level_filters: Annotated[int, Field(gt=0)] = 48
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None

    def decoder_args(self) -> dict:
        if self.decoder == "unet":
            return {"decoder_filters": tuple(self.decoder_filters)}
        args = {} if self.dropout is None else {"dropout": self.dropout}
        if self.decoder == "fpn":
            return {
                **args,
                "pyramid_filters": self.pyramid_filters,
                "segmentation_filters": self.segmentation_filters,
            }
        return {
            **args,
            "filters": self.filters,
            "atrous_rates": tuple(self.atrous_rates),
            "low_level_filters": self.low_level_filters,
        }


def loss_terms(name: str | None) -> tuple[str, ...]:
    return tuple((name or "ce").split("+"))


def check(recipe) -> None:
    for key, name in _common.losses(recipe):
        terms = loss_terms(name)
        if not all(t in LOSS_TERMS for t in terms) or len(set(terms)) != len(terms):
            raise ValueError(
                f"{key} {name!r} is not a segmentation loss: give terms among "
                f"{', '.join(LOSS_TERMS)} joined by '+', e.g. \"ce+dice\""
            )
    if recipe.compile.label_smoothing:
        raise ValueError("compile.label_smoothing is for classification; leave it out")
    for name in recipe.compile.metrics or ():
        if name not in METRICS:
            raise ValueError(
                f"compile.metrics: {name!r} is not a segmentation metric; "
                f"allowed: {', '.join(METRICS)}"
            )
    for layer in recipe.augment:
        if layer.layer in REFUSED:
            raise ValueError(
                f"augment: {layer.layer} cannot be used for segmentation: {REFUSED[layer.layer]}"
            )
    if recipe.data.max_per_class is not None:
        raise ValueError("data.max_per_class is for classification; leave it out")
    _common.refuse_other_tasks_keys(recipe)
    _check_crop(recipe)
    weights = recipe.compile.class_weights
    if weights is not None and recipe.data.source == "segmentation_folder":
        from zoo.data.segmentation_folder import class_count

        if len(weights) != class_count(recipe.data):
            raise ValueError(
                f"compile.class_weights has {len(weights)} values; data.mask_values maps onto "
                f"{class_count(recipe.data)} classes: give one weight per class"
            )
    if recipe.model.backbone is not None:
        _common.head_config(recipe, Head)


def _check_crop(recipe) -> None:
    crop, size = recipe.data.crop_size, recipe.data.image_size
    if crop is None:
        return
    if recipe.model.name is None:
        raise ValueError(
            "data.crop_size needs a fully convolutional registered model (model.name = "
            '"unet"); the decoders over a backbone train at data.image_size: leave '
            "data.crop_size out, or start from a recipe without it (e.g. unet_membrane_256 "
            "for the ISBI membranes)"
        )
    if crop[0] > size[0] or crop[1] > size[1]:
        raise ValueError(
            f"data.crop_size {crop} is larger than data.image_size {size}: crops are cut out "
            "of the images at data.image_size"
        )
    stride = 2 ** recipe.model.args.get("depth", 4)
    for key, value in (("crop_size", crop), ("image_size", size)):
        if value[0] % stride or value[1] % stride:
            raise ValueError(
                f"data.{key} {value} must be a multiple of {stride} (2**depth of "
                f"{recipe.model.name}) in both dimensions"
            )


model_input = _common.image_input
finish = _common.finish
summary = _common.summary


def serving(model, format: str, input_dtype: str = "float32", any_size: bool = False):
    """The image tasks' serving model; with `any_size` its class probabilities are resized
    back to the input's size, so the exported masks fit the images given."""
    target, feed, files = _common.image_serving(model, format, input_dtype, any_size)
    if not any_size:
        return target, feed, files
    import keras

    from zoo.layers import ResizeLike

    outputs = ResizeLike(name="resize_back")(target.output, target.input)
    return keras.Model(target.input, outputs, name=model.name), feed, files


def net(recipe, shape, classes: int, activation, preprocessing):
    """The registered model (`unet`), or the decoder over the backbone. With
    `data.crop_size`, the net takes any size (None height and width)."""
    from zoo.heads.segmentation import DECODERS

    args = _common.model_args(recipe)
    if recipe.model.backbone is None:
        return _common.registered(recipe, shape, classes, activation, args)
    head = _common.head_config(recipe, Head)
    return DECODERS[head.decoder](
        _common.features(recipe, shape, args, preprocessing),
        classes,
        activation=activation,
        name=recipe.model.backbone,
        **head.decoder_args(),
    )


def trainer(recipe, model, classes: int):
    """The model `fit` trains: the model itself, or with `data.crop_size` its layers (the same
    weights) behind an input of any size: crops in training, whole images in validation."""
    if recipe.data.crop_size is None:
        return model
    import keras

    inputs = keras.Input((None, None, recipe.data.channels), name="image")
    x = inputs
    for layer in model.layers[1:]:  # preprocessing, the fully convolutional net, activation
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_crops")


def encode(recipe, classes: int):
    return None


def loss(recipe, classes: int):
    from zoo.losses import SegmentationLoss

    return SegmentationLoss(
        classes, terms=loss_terms(recipe.compile.loss), class_weights=recipe.compile.class_weights
    )


def metrics(recipe, classes: int) -> list:
    import keras

    from zoo.metrics import Dice

    make = {
        "mean_iou": lambda: keras.metrics.MeanIoU(classes, name="mean_iou", sparse_y_pred=False),
        "dice": lambda: Dice(classes, list(range(1, classes)), sparse_y_pred=False),
        "pixel_accuracy": lambda: keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
    }
    return [make[name]() for name in recipe.compile.metrics or METRICS]


# ---------------------------------------------------------------------------------------------
# Evaluation


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """The classes x classes confusion matrix (rows: true class) of two class-id arrays."""
    index = truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def scores(cm: np.ndarray) -> dict:
    """IoU of each class, mean IoU, Dice of the foreground classes (1..N-1) and pixel accuracy
    from a confusion matrix; a class absent from both truth and prediction counts in no mean."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    dice = np.divide(2 * tp, union + tp, out=np.zeros_like(tp), where=present)
    foreground = present.copy()
    foreground[0] = False
    return {
        "iou": iou,
        "mean_iou": float(iou[present].mean()) if present.any() else 0.0,
        "dice": float(dice[foreground].mean()) if foreground.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1)),
    }


def _key(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_").lower()


def evaluate(model, data, run, recipe) -> dict:
    """Loss, mean IoU, IoU of each class, Dice and pixel accuracy over the eval split, from one
    confusion matrix; writes `overlays.png` (a few eval images, true and predicted masks)."""
    import keras

    classes = len(data.class_names)
    cm = np.zeros((classes, classes), np.int64)
    losses, shown = [], []
    # The recipe's loss (of its last phase that names one): the saved model of a run trained
    # on crops was never compiled itself.
    loss_fn = model.loss if isinstance(model.loss, keras.losses.Loss) else None
    if recipe is not None:
        final = next((p.loss for p in reversed(recipe.phases) if p.loss), recipe.compile.loss)
        loss_fn = loss(
            recipe.model_copy(
                update={"compile": recipe.compile.model_copy(update={"loss": final})}
            ),
            classes,
        )
    for x, y, p in _common.predictions(model, data.eval):
        truth = y.numpy()[..., 0]
        predicted = p.argmax(-1)
        cm += confusion(truth, predicted, classes)
        if loss_fn is not None:
            losses.append((float(loss_fn(y.numpy(), p)), len(p)))
        if len(shown) < 4:
            shown += list(zip(x.numpy(), truth, predicted))[: 4 - len(shown)]
    result = scores(cm)
    metrics = {
        "mean_iou": result["mean_iou"],
        "dice": result["dice"],
        "pixel_accuracy": result["pixel_accuracy"],
        **{f"iou_{_key(n)}": float(v) for n, v in zip(data.class_names, result["iou"])},
    }
    if losses:
        metrics["loss"] = sum(v * n for v, n in losses) / sum(n for _, n in losses)
    if run is not None:
        plot_overlays(shown, data.class_names, Path(run) / OVERLAYS)
    return metrics


def colours(classes: int) -> np.ndarray:
    """A colour per class id (class 0 black), for masks drawn over images."""
    import matplotlib

    table = matplotlib.colormaps["tab10"].resampled(max(classes - 1, 1))
    out = [(0, 0, 0)] + [tuple(int(255 * c) for c in table(i)[:3]) for i in range(classes - 1)]
    return np.asarray(out, np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, classes: int, alpha: float = 0.45):
    """The image (H, W, C) in [0, 255] with the class colours of `mask` (H, W) over it."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    painted = colours(classes)[mask]
    show = (mask > 0)[..., None]
    out = np.where(show, (1 - alpha) * rgb + alpha * painted, rgb)
    return np.clip(out, 0, 255).astype(np.uint8)


def plot_overlays(examples, class_names, out: Path) -> None:
    """Rows of image | true mask | predicted mask for each example."""
    from zoo import rundir

    if not examples:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = len(class_names)
    fig, axes = plt.subplots(len(examples), 3, figsize=(9, 3 * len(examples)), squeeze=False)
    for row, (image, truth, predicted) in zip(axes, examples):
        grey = image[..., 0] if image.shape[-1] == 1 else None
        row[0].imshow(grey if grey is not None else image.astype(np.uint8), cmap="gray")
        row[1].imshow(overlay(image, truth, classes))
        row[2].imshow(overlay(image, predicted, classes))
        for ax, title in zip(row, ("image", "true mask", "predicted mask")):
            ax.set_title(title)
            ax.axis("off")
    fig.suptitle("classes: " + ", ".join(class_names))
    fig.tight_layout()
    with rundir.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Export parity and predict


def parity(reference: np.ndarray, exported: np.ndarray, targets, class_names) -> dict:
    ref_mask, exp_mask = reference.argmax(-1), exported.argmax(-1)
    report = {
        **_common.differences(reference, exported),
        AGREEMENT: float((ref_mask == exp_mask).mean()),
    }
    if targets is not None:
        classes = reference.shape[-1]
        truth = targets[..., 0]
        report["keras_mean_iou"] = scores(confusion(truth, ref_mask, classes))["mean_iou"]
        report["export_mean_iou"] = scores(confusion(truth, exp_mask, classes))["mean_iou"]
    return report


def describe_parity(report: dict) -> list[tuple[str, str]]:
    """The parity report's rows that `zoo export` prints."""
    return _common.parity_rows(report, AGREEMENT, "pixel agreement", "mean_iou", "mean IoU")


def mask_palette(recipe, classes: int) -> np.ndarray | None:
    """The mask value written for each class id: the first value `data.mask_values` maps to it
    (binary masks: 0 and 255), an RGB row per class for colour masks; None without a recipe."""
    if recipe is None or recipe.data.source != "segmentation_folder":
        return None
    from zoo.data.segmentation_folder import is_colour, mask_values

    values = mask_values(recipe.data)
    first: dict[int, str] = {}
    for key, class_id in values.items():
        first.setdefault(class_id, key)
    if len(first) != classes:
        return None
    rows = [first[i] for i in range(classes)]
    if is_colour(values):
        return np.asarray([[int(p) for p in r.split(",")] for r in rows], np.uint8)
    return np.asarray([int(r) for r in rows], np.uint8)


def present(images, outputs, class_names, *, output=None, recipe=None, **_) -> list[dict]:
    """Writes each image's mask (at the image's own size; the mask values of the training data,
    or class ids) and an overlay into `output`; returns their paths and class fractions."""
    import keras
    from PIL import Image

    out_dir = Path(output or "predictions")
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = outputs[0].shape[-1]
    names = class_names or [str(i) for i in range(classes)]
    palette = mask_palette(recipe, classes)
    results = []
    for path, probabilities in zip(images, outputs, strict=True):
        with Image.open(path) as im:
            width, height = im.size
            original = np.asarray(im.convert("RGB"), np.float32)
        # Probabilities back to the image's size (bilinear), then the most likely class.
        full = keras.ops.convert_to_numpy(
            keras.ops.image.resize(probabilities[None], (height, width))
        )[0]
        mask = full.argmax(-1).astype(np.uint8)
        stem = Path(path).stem
        mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
        written = palette[mask] if palette is not None else mask
        Image.fromarray(written).save(mask_path)
        Image.fromarray(overlay(original, mask, classes)).save(overlay_path)
        counts = np.bincount(mask.ravel(), minlength=classes) / mask.size
        results.append(
            {
                "task": "segmentation",
                "image": str(path),
                "mask": str(mask_path),
                "overlay": str(overlay_path),
                "size": [height, width],
                "fractions": {names[i]: float(counts[i]) for i in range(classes)},
            }
        )
    return results


def describe(result: dict) -> list[str]:
    return [
        f"{result['image']}: mask {result['mask']}, overlay {result['overlay']}",
        *(f"  {fraction:.4f}  {name}" for name, fraction in result["fractions"].items()),
    ]
