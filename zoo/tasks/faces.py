"""Faces: an embedding per image, trained with a margin softmax over the training identities
and judged by open-set verification on identities it never saw.

The recipe's model is the embedding model (image in, unit vector out): it is what a run saves,
evaluates and exports. Training wraps it in `trainer`: cosine logits against one centre per
training identity (`zoo.layers.CosineLogits`), with ArcFace's, CosFace's or insightface's
combined margin applied by the loss (`zoo.losses.MarginLoss`). The identities in
`data.eval_identities` are held out; the eval split is all their images, scored by pairs
(see zoo.verification), so there is no validation during training.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zoo.errors import ZooError
from zoo.tasks import _common

INPUT = "images"
TARGET = "labels"
MONITOR = "loss"  # the eval identities are not classes of the training model
VALIDATE = False
ACTIVATION = "linear"
# An embedding is a vector like a classifier's scores: the task is known from a recipe only.
OUTPUT_RANK = None
# The mean over the eval images of the cosine similarity of each exported embedding with
# Keras' (the report gives the minimum too), as classifiers are judged by the share of
# agreeing labels. The minimum of an int8 ResNet-20 over 100 AT&T faces is a tail that
# ranged 0.978-0.992 over eight trained nets whose exports kept ROC AUC within 0.002 of
# Keras' (their means 0.992-0.996): a gate on it failed exports that verify as well.
AGREEMENT = "mean_cosine"
PARITY_EXAMPLES = None
# The least mean cosine similarity of the exported embeddings with Keras', by quantization.
TOLERANCE = {"none": 0.999, "dynamic": 0.98, "float16": 0.999, "int8": 0.98}
# compile.loss -> (m1, m2, m3) with the head's `margin` in its place.
LOSSES = ("arcface", "cosface", "combined", "softmax")
DEFAULT_MARGIN = {"arcface": 0.5, "cosface": 0.35}
DEFAULT_MARGINS = (1.0, 0.3, 0.2)  # insightface's combined margin
DEFAULT_SCALE = 16.0
METRICS = ("accuracy",)
REFUSED = {
    "MixUp": "it blends two identities into one image",
    "CutMix": "it pastes one identity into another",
}
SOURCES = ("image_folder", "tfds")


INPUTS = ("pixels", "tan_triggs", "upper", "lower")
# The rows a part net sees, as fractions of the image's height: on faces framed as AT&T's are,
# "upper" is the hair, brows and eyes, "lower" the nose, mouth and chin.
PARTS = {"upper": (0.0, 0.56), "lower": (0.44, 1.0)}


def _part_rows(view: str, height: int) -> tuple[int, int]:
    """(first row, row past the last) of a part net's rows in an image `height` rows high."""
    top, bottom = PARTS[view]
    return round(top * height), round(bottom * height)


class Head(BaseModel):
    """The embedding head over `model.backbone` (zoo.heads.embedding) and the margin softmax
    that trains it: `scale` s (default: see `scale`), `margin` m of ArcFace (radians, default
    0.5) or CosFace (default 0.35), `margins` (m1, m2, m3) of the combined loss; `whitening`
    "within_class" to whiten the embeddings once trained (see `finish`); `ensemble` N > 1 for
    N such nets, each over its own backbone, trained side by side (see `net`), or a list
    naming what each net sees (`INPUTS`): "pixels", the image as the model's preprocessing
    gives it, "tan_triggs", that image normalised for lighting by zoo.layers.TanTriggs with
    `tan_triggs_sigmas` (its band-pass, in pixels of data.image_size), or "upper" or "lower",
    the image's upper or lower part (`PARTS`: rows 0-56% or 44-100%, full width);
    `ensemble_weights`, a weight per input name (default 1; {tan_triggs = 3}: each net on
    "tan_triggs" counts three times): the model's cosine is the nets' cosines' weighted mean."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    embedding_dim: Annotated[int, Field(gt=0)] = 128
    pooling: Literal["avg", "max", "flatten"] = "avg"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    scale: Annotated[float, Field(gt=0)] | None = None
    margin: Annotated[float, Field(ge=0, lt=math.pi / 2)] | None = None
    margins: Annotated[list[float], Field(min_length=3, max_length=3)] | None = None
    whitening: Literal["none", "within_class"] = "none"
    ensemble: int | list[str] = 1
    tan_triggs_sigmas: Annotated[list[float], Field(min_length=2, max_length=2)] = [1.0, 2.0]
    ensemble_weights: dict[str, Annotated[float, Field(gt=0)]] = {}

    @field_validator("ensemble")
    @classmethod
    def _nets(cls, value):
        count = value if isinstance(value, int) else len(value)
        if not 1 <= count <= 16 or (
            isinstance(value, list) and any(v not in INPUTS for v in value)
        ):
            raise ValueError(
                f"give the number of nets (1 to 16) or a list naming each net's input, each "
                f"one of {', '.join(INPUTS)}; got {value!r}"
            )
        return value

    @field_validator("ensemble_weights")
    @classmethod
    def _weighted_inputs(cls, value):
        unknown = [k for k in value if k not in INPUTS]
        if unknown:
            raise ValueError(
                f"weighs inputs by their names, each one of {', '.join(INPUTS)}; got "
                f"{', '.join(map(repr, unknown))}"
            )
        return value

    @property
    def weights(self) -> list[float]:
        """Each net's weight in the model's cosine, one entry per net."""
        return [self.ensemble_weights.get(view, 1.0) for view in self.inputs]

    @property
    def inputs(self) -> list[str]:
        """What each net sees, one entry per net."""
        if isinstance(self.ensemble, int):
            return ["pixels"] * self.ensemble
        return list(self.ensemble)

    @property
    def size(self) -> int:
        """The number of nets."""
        return len(self.inputs)


def check(recipe) -> None:
    if recipe.model.backbone is None:
        raise ValueError(
            "task 'faces' trains an embedding head over model.backbone: set model.backbone "
            '(e.g. "resnet18"), not model.name'
        )
    for key, name in _common.losses(recipe):
        if name not in (None, *LOSSES):
            raise ValueError(f"{key} {name!r} is not a faces loss; allowed: {', '.join(LOSSES)}")
    for name in recipe.compile.metrics or ():
        if name not in METRICS:
            raise ValueError(
                f"compile.metrics: {name!r} is not a faces metric; allowed: {', '.join(METRICS)}"
            )
    if recipe.compile.label_smoothing:
        raise ValueError("compile.label_smoothing is for classification; leave it out")
    if recipe.compile.class_weights is not None:
        raise ValueError("compile.class_weights is for segmentation; leave it out")
    for layer in recipe.augment:
        if layer.layer in REFUSED:
            raise ValueError(
                f"augment: {layer.layer} cannot be used for faces: {REFUSED[layer.layer]}"
            )
    _common.refuse_other_tasks_keys(recipe)
    if recipe.data.source not in SOURCES:
        raise ValueError(
            f"task 'faces' reads one folder of images per identity: data.source "
            f"{' or '.join(map(repr, SOURCES))}, not {recipe.data.source!r}"
        )
    if recipe.data.eval_identities is None:
        raise ValueError(
            "task 'faces' verifies on identities it never trained on: set "
            "data.eval_identities to a list of identity folders, a count (10) or a fraction "
            "(0.25) of the identities"
        )
    head = _common.head_config(recipe, Head)
    inner, outer = head.tan_triggs_sigmas
    if not 0 <= inner < outer:
        raise ValueError(
            f"model.head.tan_triggs_sigmas [inner, outer] needs 0 <= inner < outer; got "
            f"{head.tan_triggs_sigmas}"
        )
    height = recipe.data.image_size[0] if recipe.data.image_size else None
    for view, (top, bottom) in PARTS.items():
        if view not in head.inputs or height is None:
            continue
        first, past = _part_rows(view, height)
        if past - first < 4:
            raise ValueError(
                f'model.head.ensemble: a "{view}" net sees rows {top:.0%}-{bottom:.0%} of the '
                f"image, fewer than 4 of data.image_size's {height}; use a larger image_size"
            )
    if head.inputs != ["pixels"]:  # more than one net, or one that is not plain
        for k, phase in enumerate(recipe.phases):
            if phase.trainable != "all":
                raise ValueError(
                    f"phases[{k}].trainable {phase.trainable!r}: model.head.ensemble "
                    f'{head.ensemble} trains each net whole; leave trainable out ("all") '
                    "or set model.head.ensemble = 1"
                )
    combined = any(name == "combined" for _, name in _common.losses(recipe))
    if head.margins is not None:
        m1, m2, m3 = head.margins
        if not combined:
            raise ValueError('model.head.margins (m1, m2, m3) go with compile.loss = "combined"')
        if m1 < 1 or m2 < 0 or m3 < 0:
            raise ValueError(
                f"model.head.margins needs m1 >= 1, m2 >= 0, m3 >= 0; got {head.margins}"
            )


def scale(head: Head, classes: int) -> float:
    """s: the head's, else 16, or AdaCos' fixed scale √2·ln(C−1) for C training identities
    where that is larger (C above 80,000). On 30 AT&T identities (arcface_att_faces, one
    split) s = 4.8 (AdaCos' value there) reached ROC AUC 0.969, s = 16 0.979, s = 32 0.974;
    insightface's s = 64 is for thousands of identities."""
    if head.scale is not None:
        return head.scale
    return max(math.sqrt(2) * math.log(max(classes - 1, 1)), DEFAULT_SCALE)


def margins(head: Head, loss_name: str) -> tuple[float, float, float]:
    """(m1, m2, m3) of a loss name with the head's margin settings."""
    if loss_name == "arcface":
        return 1.0, head.margin if head.margin is not None else DEFAULT_MARGIN["arcface"], 0.0
    if loss_name == "cosface":
        return 1.0, 0.0, head.margin if head.margin is not None else DEFAULT_MARGIN["cosface"]
    if loss_name == "combined":
        return tuple(head.margins or DEFAULT_MARGINS)
    return 1.0, 0.0, 0.0


model_input = _common.image_input
serving = _common.image_serving


def net(recipe, shape, classes: int, activation, preprocessing):
    """The embedding model: the embedding head over the backbone (`classes` is the training
    model's; see `trainer`).

    With `model.head.ensemble` N > 1 (or a list of N inputs), N of them (`<backbone>_0` ...),
    each from its own random start, in one model whose embedding is theirs joined (layer
    `members`) and normalised: its cosine similarity is the mean of theirs, weighted by
    `ensemble_weights` where they differ (layers `weight_<k>` scale the members). `trainer` gives
    each its own class centres and the loss is the mean of their margin losses, so they learn
    apart on the same batches; the whitening is each member's own. A net whose input (its
    entry in the ensemble's list) is "tan_triggs", "upper" or "lower" is a model of its own:
    the TanTriggs layer or the Cropping2D that keeps its part's rows (`<name>_upper`), then
    the net (`<name>_net`), built for the part's size."""
    import keras

    from zoo import heads
    from zoo.layers import TanTriggs

    head = _common.head_config(recipe, Head)
    nets = []
    for k, view in enumerate(head.inputs):
        name = recipe.model.backbone if head.size == 1 else f"{recipe.model.backbone}_{k}"
        size, before = shape, None  # the net's input size; the layer before it, if any
        if view in PARTS:
            top, bottom = _part_rows(view, shape[0])
            size = (bottom - top, *shape[1:])
            crop = ((top, shape[0] - bottom), (0, 0))
            before = keras.layers.Cropping2D(crop, name=f"{name}_{view}")
        elif view == "tan_triggs":
            inner, outer = head.tan_triggs_sigmas
            before = TanTriggs(sigma_inner=inner, sigma_outer=outer, name=f"{name}_tan_triggs")
        backbone = _common.features(recipe, size, _common.model_args(recipe), preprocessing)
        core = heads.embedding(
            backbone,
            head.embedding_dim,
            pooling=head.pooling,
            dropout=head.dropout,
            name=name if view == "pixels" else f"{name}_net",
        )
        if before is not None:
            x = keras.Input(shape, name=f"{name}_input")
            core = keras.Model(x, core(before(x)), name=name)
        nets.append(core)
    if head.size == 1:
        return nets[0]
    x = keras.Input(shape, name="members_input")
    members = [n(x) for n in nets]
    if len(set(head.weights)) > 1:
        # Each member's unit vector times the root of its weight (the weights scaled to sum
        # to the number of nets): the joined vectors' cosine is the weighted mean of theirs.
        total = sum(head.weights)
        members = [
            keras.layers.Rescaling(
                math.sqrt(w * len(nets) / total), dtype="float32", name=f"weight_{k}"
            )(m)
            for k, (w, m) in enumerate(zip(head.weights, members))
        ]
    # float32 as the members' unit vectors are, under mixed precision too.
    joined = keras.layers.Concatenate(dtype="float32", name="members")(members)
    out = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="embedding")(joined)
    return keras.Model(x, out, name=f"{recipe.model.backbone}_x{head.size}")


def trainer(recipe, model, classes: int):
    """The model `fit` trains: the embedding model's output against `classes` class centres,
    as cosines (the loss adds the margin and the scale); for an ensemble, each member's
    against centres of its own, (batch, members, classes)."""
    import keras

    from zoo.layers import CosineLogits

    before, nets = _heads(model)
    if len(nets) == 1:
        cosines = CosineLogits(classes, name="head_centres")(model.output)
        return keras.Model(model.input, cosines, name=f"{model.name}_training")
    x = model.input
    for layer in before:
        x = layer(x)
    rows = [
        keras.layers.Reshape((1, classes), dtype="float32", name=f"head_row_{k}")(
            CosineLogits(classes, name=f"head_centres_{k}")(n(x))
        )
        for k, n in enumerate(nets)
    ]
    cosines = keras.layers.Concatenate(axis=1, dtype="float32", name="head_members")(rows)
    return keras.Model(model.input, cosines, name=f"{model.name}_training")


def within_class_whitening(vectors: np.ndarray, labels: np.ndarray):
    """(mean, M): the mean of `vectors` and the symmetric matrix M = c·Σ^(-1/2) that whitens
    their within-class covariance Σ (each vector less the mean of its label's vectors;
    Ledoit-Wolf shrinkage, so that a few hundred vectors of a hundred dimensions give a
    well-conditioned Σ): M Σ M = c²·I. The scale c (the root of Σ's mean eigenvalue) keeps the
    whitened vectors, (x - mean) @ M, about as large as the vectors were; cosines ignore it.

    This is WCCN (Hatch et al. 2006, within-class covariance normalisation, as speaker
    verification scores its embeddings), after centring: directions in which one person's
    images vary count less in a cosine."""
    from sklearn.covariance import LedoitWolf

    vectors = np.asarray(vectors, np.float64)
    labels = np.asarray(labels)
    means = {c: vectors[labels == c].mean(0) for c in np.unique(labels)}
    centred = vectors - np.stack([means[c] for c in labels])
    if not np.any(np.abs(centred) > 1e-9):
        raise ZooError(
            'model.head.whitening = "within_class" needs identities with two or more '
            'training images that differ; set it to "none"'
        )
    values, axes = np.linalg.eigh(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    values = np.maximum(values, values.max() * 1e-6)
    return vectors.mean(0), (axes / np.sqrt(values)) @ axes.T * np.sqrt(values.mean())


def _find(model, holds):
    """(the layers before it, the first of `model` and its nested models, at any depth, for
    which `holds`), the layers before it being the input preprocessing of the models that
    hold it (such as a net's TanTriggs); None where none holds."""
    import keras

    if holds(model):
        return (), model
    for k, layer in enumerate(model.layers):
        if isinstance(layer, keras.Model):
            found = _find(layer, holds)
            if found is not None:
                return (*model.layers[1:k], *found[0]), found[1]
    return None


def _head(model):
    """(the layers before the net that holds the embedding head, that net): the model's input
    preprocessing and the net, or () and the model itself where it is the net."""
    found = _find(model, lambda m: any(layer.name == "head_bn" for layer in m.layers))
    if found is None:
        raise ZooError(f"{model.name} has no embedding head (no layer head_bn)")
    return found


def _heads(model):
    """(the layers before the embedding nets, the nets): one net, or an ensemble's members
    (see `net`), whether `model` is the ensemble or holds it after its preprocessing."""
    import keras

    found = _find(model, lambda m: any(layer.name == "members" for layer in m.layers))
    if found is None:
        before, net = _head(model)
        return before, [net]
    before, ensemble = found
    return before, [layer for layer in ensemble.layers if isinstance(layer, keras.Model)]


def head_vectors(model, dataset) -> tuple[list[np.ndarray], np.ndarray]:
    """([each net's embedding head vectors before their normalisation: one array, or one per
    ensemble member], labels) of a dataset of (images, labels) batches, read once."""
    import keras

    before, nets = _heads(model)
    x = model.input
    for layer in before:
        x = layer(x)
    heads = []
    for n in nets:
        inner, core = _head(n)  # a net's own preprocessing (TanTriggs), then the net
        y = x
        for layer in inner:
            y = layer(y)
        heads.append(keras.Model(core.input, core.get_layer("head_bn").output)(y))
    joined = heads[0] if len(heads) == 1 else keras.layers.Concatenate(dtype="float32")(heads)
    vectors, labels = embeddings(keras.Model(model.input, joined), dataset)
    split = np.cumsum([h.shape[-1] for h in heads])[:-1]
    return [v.astype(np.float64) for v in np.split(vectors, split, axis=1)], labels


def fold_whitening(model, mean: np.ndarray, matrix: np.ndarray) -> None:
    """Makes the embedding head give (v - mean) @ matrix in place of v, its vector before the
    last normalisation, by changing the weights of its last Dense (`head_dense`) and
    BatchNormalization (`head_bn`) layers: both are affine, so is their composition with the
    whitening. The model keeps its layers, and an int8 export quantizes one weight matrix
    instead of an extra product whose small directions the whitening would magnify."""
    _, net = _head(model)
    dense, bn = net.get_layer("head_dense"), net.get_layer("head_bn")
    if dense.use_bias or not (bn.scale and bn.center):
        raise ZooError("the embedding head's Dense has a bias or its BatchNorm no scale")
    gamma, beta, moving_mean, moving_var = (np.asarray(w, np.float64) for w in bn.get_weights())
    gain = gamma / np.sqrt(moving_var + bn.epsilon)  # head_bn(h) = h * gain + shift
    shift = beta - moving_mean * gain
    kernel = np.asarray(dense.kernel.numpy(), np.float64)
    dense.kernel.assign(((kernel * gain) @ matrix).astype(np.float32))
    size = matrix.shape[1]
    # head_bn then adds the shift alone: (h - 0) / sqrt(1 + eps) * sqrt(1 + eps) + beta.
    weights = [
        np.full(size, np.sqrt(1.0 + bn.epsilon)),
        (shift - mean) @ matrix,
        np.zeros(size),
        np.ones(size),
    ]
    bn.set_weights([w.astype(np.float32) for w in weights])


def finish(model, data, recipe) -> bool:
    """After training, before the model is saved: with `model.head.whitening =
    "within_class"`, folds `within_class_whitening` of the training identities' vectors
    (their images read as the eval split is: not augmented; the head's vectors before the
    last normalisation) into the head (`fold_whitening`). Returns whether the model changed."""
    if _common.head_config(recipe, Head).whitening == "none":
        return False
    vectors, labels = head_vectors(model, data.train_unaugmented)
    for net, member in zip(_heads(model)[1], vectors, strict=True):
        fold_whitening(net, *within_class_whitening(member, labels))
    return True


def encode(recipe, classes: int):
    return None


def loss(recipe, classes: int):
    from zoo.losses import MarginLoss

    head = _common.head_config(recipe, Head)
    m1, m2, m3 = margins(head, recipe.compile.loss or "arcface")
    return MarginLoss(
        scale(head, classes), m1=m1, m2=m2, m3=m3, name=recipe.compile.loss or "arcface"
    )


def _member_accuracy(y_true, y_pred):
    """Each member's top-1 accuracy on the training identities, averaged over the members:
    (batch, members, classes) cosines against (batch,) labels."""
    from keras import ops

    ids = ops.cast(ops.reshape(y_true, (-1, 1)), "int32")
    hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), ids), "float32")
    return ops.mean(hits, axis=-1)


def metrics(recipe, classes: int) -> list:
    import keras

    if _common.head_config(recipe, Head).size > 1:
        return [keras.metrics.MeanMetricWrapper(_member_accuracy, name="accuracy")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def embeddings(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of a dataset of (images, labels) batches."""

    vectors, labels = [], []
    for _, y, v in _common.predictions(model, dataset):
        vectors.append(v)
        labels.append(np.asarray(y))
    return np.concatenate(vectors), np.concatenate(labels)


def evaluate(model, data, run, recipe) -> dict:
    """Verification on the eval identities (ROC AUC, EER, TAR at FAR, 10-fold accuracy, the
    threshold at eval.target_far) and rank-1 identification; writes roc.png,
    similarities.png, the threshold (verification.json) and each identity's errors at it
    (identities.tsv) into `run`."""
    from pathlib import Path

    from zoo import verification

    vectors, labels = embeddings(model, data.eval)
    result = verification.scores(
        vectors,
        labels,
        target_far=recipe.eval.target_far,
        max_impostors=recipe.eval.impostor_pairs,
        seed=recipe.runtime.seed,
    )
    s, genuine = result.pop("_scores"), result.pop("_genuine")
    first, second = result.pop("_pairs")
    result["eval_identities"] = len(np.unique(labels))
    result["eval_identity_names"] = list(data.eval_class_names or [])
    if run is not None:
        run = Path(run)
        verification.plot(s, genuine, result["threshold"], result["target_far"], run)
        verification.write_threshold(run, result, vectors.shape[-1])
        rows = verification.identity_errors(
            s, genuine, first, second, labels, data.eval_class_names, result["threshold"]
        )
        verification.write_identity_errors(run / verification.IDENTITIES, rows)
    return result


def summary(run) -> list[str]:
    """zoo-train's line after the metrics: the identities with the most errors at the run's
    threshold (from its identities.tsv), where there are errors."""
    from zoo import verification

    hardest = verification.most_errors(run)
    if not hardest:
        return []
    return [f"most errors at the threshold ({verification.IDENTITIES}): " + "; ".join(hardest)]


def parity(reference: np.ndarray, exported: np.ndarray, targets, class_names) -> dict:
    """Cosine similarity of each exported embedding with Keras' (min and mean), and the ROC
    AUC of both on the eval pairs."""
    from zoo import verification

    cos = np.sum(verification.unit(reference) * verification.unit(exported), axis=1)
    report = {
        **_common.differences(reference, exported),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
    }
    if targets is not None and len(np.unique(targets)) > 1:
        from sklearn.metrics import roc_auc_score

        first, second, genuine = verification.pairs(np.asarray(targets), 200_000, 0)
        if genuine.any() and not genuine.all():
            for name, vectors in (("keras", reference), ("export", exported)):
                s = verification.similarities(vectors, first, second)
                report[f"{name}_roc_auc"] = float(roc_auc_score(genuine, s))
    return report


def describe_parity(report: dict) -> list[tuple[str, str]]:
    rows = [
        (
            "cosine",
            f"mean {report['mean_cosine']:.5f} (tolerance {report['tolerance']}), "
            f"min {report['min_cosine']:.5f}",
        )
    ]
    if "keras_roc_auc" in report:
        rows.append(
            (
                "ROC AUC",
                f"{report['export_roc_auc']:.4f} exported, {report['keras_roc_auc']:.4f} Keras",
            )
        )
    return rows


def present(images, outputs, class_names, **_) -> list[dict]:
    """The unit embedding of each image file."""
    from zoo import verification

    vectors = verification.unit(np.stack(outputs))
    return [
        {"task": "faces", "image": str(path), "embedding": [float(v) for v in row]}
        for path, row in zip(images, vectors, strict=True)
    ]


def describe(result: dict) -> list[str]:
    e = result["embedding"]
    head = ", ".join(f"{v:+.3f}" for v in e[:4])
    return [result["image"], f"  embedding of {len(e)} values: [{head}, ...]"]
